"""Django admin for the event log (CONTRACT §6) and the worker registry: read-only,
searchable, filterable.

The log is append-only through `realtime.publish.event_publish`, which numbers events
gaplessly; an edit or a deletion here would break what streams replay, so the admin only
shows it (`prune_events` is the way to trim it).
"""

import datetime as dt

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from realtime.models import Event, Worker


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that shows rows and never adds, changes or deletes them (logs and
    registries written by their own services)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["session", "seq", "type", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["=session__id", "type", "envelope"]
    ordering = ["-created_at", "-seq"]
    list_select_related = ["session"]
    readonly_fields = ["session", "seq", "type", "data", "envelope", "created_at"]
    show_full_result_count = False  # a count over the whole log on every page is slow


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    """The worker registry, read-only: rows are written by each process's heartbeat."""

    list_display = ["id", "host", "pid", "connections", "rss_mb", "started_at", "last_seen", "alive"]
    list_filter = ["host"]
    search_fields = ["id", "host"]
    readonly_fields = ["id", "host", "pid", "started_at", "last_seen", "connections", "rss_mb", "sessions"]

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: Worker) -> bool:
        stale_before = timezone.now() - dt.timedelta(seconds=settings.CHORUS_WORKER_STALE_SECONDS)
        return obj.last_seen >= stale_before
