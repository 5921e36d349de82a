"""Django admin for the event log (CONTRACT §6): read-only, searchable, filterable.

The log is append-only through `realtime.publish.event_publish`, which numbers events
gaplessly; an edit or a deletion here would break what streams replay, so the admin only
shows it (`prune_events` is the way to trim it).
"""

from django.contrib import admin

from realtime.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["session", "seq", "type", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["=session__id", "type", "envelope"]
    ordering = ["-created_at", "-seq"]
    list_select_related = ["session"]
    readonly_fields = ["session", "seq", "type", "data", "envelope", "created_at"]
    show_full_result_count = False  # a count over the whole log on every page is slow

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
