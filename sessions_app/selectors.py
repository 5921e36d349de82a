"""Reads about sessions, members and messages, with the role rules of CONTRACT §2."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from realtime.sql import cached_sql, column, db_value, fetch_one, table
from sessions_app.models import CollabSession, Membership, Message, Role


class SessionNotFound(Exception):
    """The session does not exist, or the user may not know that it does."""


def parse_session_id(raw: str | UUID) -> UUID:
    try:
        return UUID(str(raw))
    except ValueError as exc:
        raise SessionNotFound(str(raw)) from exc


def session_role(*, session_id: UUID | str, user: AbstractBaseUser) -> str | None:
    return Membership.objects.filter(session_id=session_id, user=user).values_list("role", flat=True).first()


def session_get_for_user(*, session_id: UUID | str, user: AbstractBaseUser) -> tuple[CollabSession, str | None]:
    """The session and the user's role in it (None for staff who are not members).
    Raises SessionNotFound for non-members, so existence is never revealed."""
    session_uuid = parse_session_id(session_id)
    # This runs at the start of every request about a session: members (the usual case)
    # cost one plain join, which the ORM compiles faster than a subquery annotation.
    membership = next(
        iter(
            Membership.objects.select_related("session__owner")
            .filter(session_id=session_uuid, user=user)
            .order_by()[:1]
        ),
        None,
    )
    if membership is not None:
        return membership.session, membership.role
    session = CollabSession.objects.select_related("owner").filter(pk=session_uuid).first() if user.is_staff else None
    if session is None:
        raise SessionNotFound(str(session_uuid))
    role = None
    return session, role


def sessions_for_user(*, user: AbstractBaseUser) -> QuerySet[CollabSession]:
    return (
        CollabSession.objects.filter(memberships__user=user)
        .select_related("owner")
        .prefetch_related("memberships__user")
        .order_by("-created_at", "id")
    )


def session_members(*, session: CollabSession) -> list[Membership]:
    return list(session.memberships.select_related("user").order_by("created_at", "id"))


def session_last_event_id(*, session_id: UUID | str) -> int:
    return CollabSession.objects.filter(pk=session_id).values_list("last_event_id", flat=True).get()


def messages_for_session(*, session: CollabSession) -> QuerySet[Message]:
    return (
        Message.objects.filter(session=session, deleted_at__isnull=True)
        .select_related("author")
        .order_by("created_at", "id")
    )


def stream_access(*, user_id: int, is_staff: bool, session_id: UUID | str) -> bool:
    """realtime's access rule (settings.CHORUS_STREAM_ACCESS_RULE): members and staff."""
    if is_staff:
        return True
    # Hand-written: it runs for every stream opened (realtime.sql says why).
    params = [db_value(Membership, "session", UUID(str(session_id))), user_id]
    return fetch_one(_membership_sql(), params) is not None


@cached_sql
def _membership_sql() -> str:
    return (
        f"SELECT 1 FROM {table(Membership)}"
        f" WHERE {column(Membership, 'session')} = %s AND {column(Membership, 'user')} = %s"
    )


def is_writer(role: str | None) -> bool:
    return role in (Role.OWNER, Role.EDITOR)


class MessageNotFound(SessionNotFound):
    """No visible message with that id in the session (404)."""


def message_get(*, session: CollabSession, message_id: UUID | str) -> Message:
    """A visible (not deleted) message of the session; raises MessageNotFound."""
    try:
        message_uuid = UUID(str(message_id))
    except ValueError as exc:
        raise MessageNotFound(str(message_id)) from exc
    message = (
        Message.objects.select_related("author")
        .filter(pk=message_uuid, session=session, deleted_at__isnull=True)
        .first()
    )
    if message is None:
        raise MessageNotFound(str(message_uuid))
    return message
