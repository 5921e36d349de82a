"""Apply the retention settings to every session's event log."""

from django.core.management.base import BaseCommand

from realtime.retention import events_prune


class Command(BaseCommand):
    help = "Delete events older than CHORUS_EVENT_TTL_SECONDS and beyond CHORUS_HISTORY_MAX_EVENTS per session."

    def handle(self, *args, **options) -> None:
        result = events_prune()
        self.stdout.write(f"Deleted {result.by_age} event(s) by age and {result.by_count} beyond the per-session cap.")
