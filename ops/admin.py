"""The audit log in the admin: read-only (an entry records what happened; nobody edits it)."""

from django.contrib import admin

from ops.models import AuditEntry
from realtime.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_username", "action", "target_type", "target_id", "session_id"]
    list_filter = ["action", "target_type", "created_at"]
    search_fields = ["actor_username", "target_id", "session_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
