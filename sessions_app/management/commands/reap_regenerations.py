"""`python manage.py reap_regenerations`: fail the regenerations whose process died now.

Every server process already does this periodically (sessions_app.regenerations.runner);
the command is for operators and for tests that kill a server and do not want to wait.
"""

from django.core.management.base import BaseCommand

from sessions_app.regenerations.services import regenerations_reap_stale


class Command(BaseCommand):
    help = "Mark failed (with regeneration_error) every regeneration whose lease has expired."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--lease-seconds",
            type=float,
            default=None,
            help="Treat leases older than this as expired (default: CHORUS_REGENERATION_LEASE_SECONDS).",
        )

    def handle(self, *args, lease_seconds: float | None = None, **options) -> None:
        reaped = regenerations_reap_stale(lease_seconds=lease_seconds)
        for regeneration_id in reaped:
            self.stdout.write(str(regeneration_id))
        self.stderr.write(f"{len(reaped)} regeneration(s) marked failed")
