"""Who may open a stream: authentication of the request, then the configured access rule.

realtime does not know what a session member is; settings.CHORUS_STREAM_ACCESS_RULE names
a function `(*, user: str, session: str) -> str`, supplied by the app that owns sessions,
that returns the rule as an SQL condition on the user row and the session row (their
aliases in the query below). A condition rather than a Python check, so that a stream
opening asks the database one question, not two: in a reconnect storm every round trip
costs CPU in the server and in PostgreSQL (measured: 0.2 ms of PostgreSQL CPU each).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.module_loading import import_string
from rest_framework.authtoken.models import Token

from realtime.replay import replay_rows
from realtime.sql import cached_sql, column, db_value, fetch_one, table
from realtime.tickets import TicketInvalid, ticket_verify


class StreamRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: int | None  # from the session cookie (Channels' auth middleware)
    token: str | None
    ticket: str | None

    @property
    def present(self) -> bool:
        return bool(self.user_id or self.token or self.ticket)


@dataclass(frozen=True, slots=True)
class StreamStart:
    user_id: int
    username: str
    newest: int
    oldest: int
    after: int | None  # the resume point, capped at `newest`
    rows: list[tuple[int, str, str]]  # the first replay page, when resuming


@dataclass(frozen=True, slots=True)
class StreamUser:
    pk: int
    username: str
    is_staff: bool


@cached_sql
def _opening_sql(by_token: bool) -> str:
    """The stream user's columns, looked up by token key or by primary key (active only),
    whether the access rule lets them read the session, and the session's newest event
    id (NULL if there is no such session)."""
    User = get_user_model()
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    pk, username, is_staff, is_active = (
        column(User, name) for name in (User._meta.pk.name, "username", "is_staff", "is_active")
    )
    may_read = import_string(settings.CHORUS_STREAM_ACCESS_RULE)(user="u", session="s")
    select = (
        f"SELECT u.{pk}, u.{username}, u.{is_staff}, s.{column(source, 'last_event_id')}, ({may_read})"
        f" FROM {table(User)} u"
        f" LEFT JOIN {table(source)} s ON s.{column(source, source._meta.pk.name)} = %s"
    )
    if by_token:
        select += f" JOIN {table(Token)} t ON t.{column(Token, 'user')} = u.{pk} WHERE t.{column(Token, 'key')} = %s"
    else:
        select += f" WHERE u.{pk} = %s"
    return select + f" AND u.{is_active} = %s"


def authenticate(*, credentials: Credentials, session_id: UUID) -> tuple[StreamUser, bool, int | None]:
    """The user, whether they may read the session, and its newest event id (None: no such
    session). One query at most (none for a bad ticket), hand-written (realtime.sql)."""
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    session_param = db_value(source, source._meta.pk.name, session_id)
    if credentials.user_id:
        row = fetch_one(_opening_sql(False), [session_param, credentials.user_id, True])
    elif credentials.token:
        row = fetch_one(_opening_sql(True), [session_param, credentials.token, True])
    else:
        try:
            user_id = ticket_verify(ticket=credentials.ticket or "", session_id=session_id)
        except TicketInvalid as exc:
            raise StreamRefused(401, f"Invalid stream ticket: {exc}.") from exc
        row = fetch_one(_opening_sql(False), [session_param, user_id, True])
    if row is None:
        raise StreamRefused(401, "Invalid credentials.")
    user = StreamUser(pk=row[0], username=row[1], is_staff=bool(row[2]))
    return user, bool(row[4]), row[3]


def stream_open(*, credentials: Credentials, session_id: UUID, after: int | None, page_size: int) -> StreamStart:
    """Authenticate, authorize, and read the session's newest id and, when resuming, the
    first page of replay: one short query, or two. Raises StreamRefused."""
    user, may_read, newest = authenticate(credentials=credentials, session_id=session_id)
    if not may_read or newest is None:
        raise StreamRefused(404, "Not found.")
    rows: list[tuple[int, str, str]] = []
    oldest = 1  # only meaningful when resuming
    if after is not None:
        after = min(after, newest)  # an id above the newest means "the newest"
        if after < newest:
            rows = replay_rows(session_id=session_id, after=after, limit=page_size)
            # The first page says whether history was pruned past the resume point: it
            # starts right after it, or later (or is empty: nothing left at all).
            oldest = rows[0][0] if rows else newest + 1
    return StreamStart(
        user_id=user.pk,
        username=user.username,
        newest=newest,
        oldest=oldest,
        after=after,
        rows=rows,
    )
