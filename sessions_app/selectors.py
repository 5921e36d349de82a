"""Reads about sessions, members and messages, with the role rules of CONTRACT §2."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from realtime.sql import RowLoader, cached_sql, column, db_value, fetch_one, table
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
    # Hand-written: it runs at the start of every request about a session, publishing
    # included, where the ORM's compile cost more than the query (realtime.sql says why).
    sql, sessions = _session_with_role()
    row = fetch_one(sql, [user.pk, db_value(CollabSession, "id", session_uuid)])
    if row is None or (row[-1] is None and not user.is_staff):
        raise SessionNotFound(str(session_uuid))
    return sessions.load(row[:-1]), row[-1]


@cached_sql
def _session_with_role() -> tuple[str, RowLoader]:
    sessions = RowLoader(CollabSession, "s")
    sql = (
        f"SELECT {sessions.columns}, m.{column(Membership, 'role')} FROM {table(CollabSession)} s"
        f" LEFT JOIN {table(Membership)} m"
        f" ON m.{column(Membership, 'session')} = s.{column(CollabSession, 'id')}"
        f" AND m.{column(Membership, 'user')} = %s"
        f" WHERE s.{column(CollabSession, 'id')} = %s"
    )
    return sql, sessions


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


def stream_access(*, user: str, session: str) -> str:
    """realtime's access rule (settings.CHORUS_STREAM_ACCESS_RULE), as an SQL condition on
    the user row `user` and the session row `session`: members and staff may read. (No
    session row, a NULL id, makes the membership test false; realtime answers 404.)"""
    User = get_user_model()
    return (
        f"{user}.{column(User, 'is_staff')} OR EXISTS (SELECT 1 FROM {table(Membership)} m"
        f" WHERE m.{column(Membership, 'session')} = {session}.{column(CollabSession, 'id')}"
        f" AND m.{column(Membership, 'user')} = {user}.{column(User, User._meta.pk.name)})"
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
