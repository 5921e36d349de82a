"""Django admin for sessions (members inline), messages and regenerations (CONTRACT §6).

Writes that have events go through the services, so the admin's cancel action publishes
`regeneration_cancelled` and stops the run in whichever process has it.
"""

from django.contrib import admin, messages

from sessions_app.models import CollabSession, Membership, Message, Regeneration
from sessions_app.regenerations.services import RegenerationConflict, regeneration_cancel


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(CollabSession)
class CollabSessionAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "created_at", "last_event_id"]
    search_fields = ["title", "owner__username", "id"]
    list_filter = ["created_at"]
    readonly_fields = ["id", "last_event_id", "created_at", "updated_at"]
    inlines = [MembershipInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "role", "author", "short_content", "created_at", "edited_at", "deleted_at"]
    list_filter = ["role", "created_at", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["content", "author__username", "session__title", "id"]
    raw_id_fields = ["session", "author", "original_message"]

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]


@admin.register(Regeneration)
class RegenerationAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "status", "progress", "provider", "model", "worker", "created_at", "finished_at"]
    list_filter = ["status", "provider", "created_at"]
    search_fields = ["id", "session__title", "requested_by__username", "worker", "error"]
    raw_id_fields = ["session", "message", "source_message", "requested_by"]
    readonly_fields = [f.name for f in Regeneration._meta.fields]
    actions = ["cancel_selected"]

    def has_add_permission(self, request) -> bool:
        return False  # regenerations start from the API, which also runs them

    @admin.action(description="Cancel the selected regenerations")
    def cancel_selected(self, request, queryset) -> None:
        cancelled = 0
        for regeneration in queryset:
            try:
                regeneration_cancel(regeneration=regeneration)
                cancelled += 1
            except RegenerationConflict as exc:
                self.message_user(request, f"{regeneration.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"{cancelled} regeneration(s) cancelled.", messages.SUCCESS)
