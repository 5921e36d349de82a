"""The generation log in the admin: read-only, filterable by status, model and user."""

from django.contrib import admin

from completions.models import GenerationLog
from realtime.admin import ReadOnlyAdmin


@admin.register(GenerationLog)
class GenerationLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "user",
        "model",
        "status",
        "http_status",
        "stream",
        "message_count",
        "prompt_tokens",
        "completion_tokens",
        "first_token_seconds",
        "duration_seconds",
        "session",
    ]
    list_filter = ["status", "model", "stream", ("user", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["user__username", "model", "error", "session__id", "session__title"]
    list_select_related = ["user", "session"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in GenerationLog._meta.fields]
