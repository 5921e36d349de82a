"""Django admin for sessions (members inline), messages and regenerations (CONTRACT §6).

Writes that have events go through the services, so the admin's cancel action publishes
`regeneration_cancelled` and stops the run in whichever process has it. List pages join
what their columns show (`list_select_related`, annotations): a constant number of
queries, however many rows. Saving a session never writes `last_event_id`
(CollabSession.save), so an edit made while events are published cannot roll it back.
"""

from django.contrib import admin, messages
from django.db.models import Count
from django.utils import timezone
from knox.models import AuthToken

from sessions_app import tokens
from sessions_app.models import CollabSession, Membership, Message, Regeneration
from sessions_app.regenerations.services import RegenerationConflict, regeneration_cancel


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


@admin.register(CollabSession)
class CollabSessionAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "member_count", "created_at", "last_event_id"]
    search_fields = ["title", "owner__username", "id"]
    list_filter = ["created_at"]
    list_select_related = ["owner"]
    readonly_fields = ["id", "last_event_id", "created_at", "updated_at"]
    raw_id_fields = ["owner"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: CollabSession) -> int:
        return obj.member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["session", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["session__title", "user__username", "session__id"]
    list_select_related = ["session", "user"]
    raw_id_fields = ["session", "user"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "role", "author", "short_content", "created_at", "edited_at", "deleted_at"]
    list_filter = ["role", "created_at", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["content", "author__username", "session__title", "id"]
    list_select_related = ["session", "author"]
    raw_id_fields = ["session", "author", "original_message"]
    show_full_result_count = False

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80]


@admin.register(Regeneration)
class RegenerationAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "status", "progress", "provider", "model", "worker", "created_at", "finished_at"]
    list_filter = ["status", "provider", "created_at"]
    search_fields = ["id", "session__title", "requested_by__username", "worker", "error"]
    list_select_related = ["session"]
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


# --- API tokens: listed without their secret, revoked through the service ----------------
admin.site.unregister(AuthToken)  # knox's admin lists digests and makes tokens by hand


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    """Who holds tokens and until when. Neither the token nor its lookup prefix is shown
    (the prefix is a quarter of the secret); a short digest fingerprint tells rows apart.
    Tokens are made by signing in (POST /api/v1/auth/token/), not here."""

    list_display = ["fingerprint", "user", "created", "expiry", "expired"]
    list_filter = ["created", "expiry"]
    search_fields = ["user__username"]
    fields = ["fingerprint", "user", "created", "expiry"]
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(description="token")
    def fingerprint(self, token: AuthToken) -> str:
        return f"…{token.digest[:12]}"

    @admin.display(boolean=True)
    def expired(self, token: AuthToken) -> bool:
        return token.expiry is not None and token.expiry <= timezone.now()

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # revoke instead: it also ends their streams
        return actions

    @admin.action(description="Revoke the selected tokens (their streams end)", permissions=["delete"])
    def revoke(self, request, queryset) -> None:
        count = tokens.tokens_revoke(tokens=queryset)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def delete_model(self, request, obj: AuthToken) -> None:
        tokens.token_revoke(token=obj)
