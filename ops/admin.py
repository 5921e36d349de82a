"""The audit log in the admin: read-only (an entry records what happened; nobody edits it)."""

from django.contrib import admin

from ops.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_username", "action", "target_type", "target_id", "session_id"]
    list_filter = ["action", "target_type", "created_at"]
    search_fields = ["actor_username", "target_id", "session_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
