"""Who may open a stream, and whether an open stream still may exist.

Opening: authentication of the request, then the configured access rule. Afterwards each
process re-checks its open streams in one batched query (`grants_refused`): a revoked or
expired token, a deactivated user, a lost membership or staff status ends them
(CONTRACT §2).

realtime does not know what a session member is; settings.CHORUS_STREAM_ACCESS_RULE names
a function `(*, user: str, session: str) -> str`, supplied by the app that owns sessions,
that returns the rule as an SQL condition on the user row and the session row (their
aliases in the query below). A condition rather than a Python check, so that a stream
opening asks the database one question, not two: in a reconnect storm every round trip
costs CPU in the server and in PostgreSQL (measured: 0.2 ms of PostgreSQL CPU each).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from hmac import compare_digest
from importlib import import_module
from uuid import UUID

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db.models import Model
from django.utils import timezone
from django.utils.module_loading import import_string
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS

from realtime.replay import replay_rows
from realtime.sql import cached_sql, column, db_value, fetch_all, fetch_one, table
from realtime.tickets import TicketInvalid, ticket_read


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
    login_session: str | None = None  # the cookie's session key, with user_id
    login_hash: str | None = None  # the session's auth hash (Django's, of the password)

    @property
    def present(self) -> bool:
        return bool(self.user_id or self.token or self.ticket)


@dataclass(frozen=True, slots=True)
class Grant:
    """What an open stream's right to exist rests on: its user (the cookie's, the ticket's
    or the token's) reading its session; for a token stream, or a ticket asked for with a
    token, that token (its digest); for a cookie stream, the login session (its key) and
    the password it was signed in with (the session's auth hash, which Django derives from
    the password hash: a password change ends the user's other logins); for a ticket asked
    for with the cookie, that password too."""

    user_id: int
    session_key: str
    token_digest: str | None = None
    login_session: str | None = None
    auth_hash: str | None = None


def _login_session_model() -> type[Model] | None:
    """The model of login sessions when they are database rows, which a query can check
    (Django's `db` and `cached_db` engines and their subclasses); None otherwise."""
    return _session_model_of(settings.SESSION_ENGINE)


@cache
def _session_model_of(engine: str) -> type[Model] | None:
    store = import_module(engine).SessionStore
    return store.get_model_class() if issubclass(store, DatabaseSessionStore) else None


@dataclass(frozen=True, slots=True)
class StreamStart:
    grant: Grant
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
def _opening_sql(by_token: bool, ticket_token: bool = False, password: bool = False) -> str:
    """The stream user's columns, looked up by token (its key prefix, unexpired; the
    token's digest comes last, to compare) or by primary key (active only; with
    `ticket_token`, only while the token a ticket was asked for holds; with `password`,
    the password hash last, to check a session auth hash against), whether the access
    rule lets them read the session, and the session's newest event id (NULL if there is
    no such session)."""
    User = get_user_model()
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    pk, username, is_staff, is_active = (
        column(User, name) for name in (User._meta.pk.name, "username", "is_staff", "is_active")
    )
    may_read = import_string(settings.CHORUS_STREAM_ACCESS_RULE)(user="u", session="s")
    select = f"SELECT u.{pk}, u.{username}, u.{is_staff}, s.{column(source, 'last_event_id')}, ({may_read})"
    if by_token:
        select += f", t.{column(AuthToken, 'digest')}"
    elif password:
        select += f", u.{column(User, 'password')}"
    select += f" FROM {table(User)} u LEFT JOIN {table(source)} s ON s.{column(source, source._meta.pk.name)} = %s"
    if by_token:
        expiry = column(AuthToken, "expiry")
        select += (
            f" JOIN {table(AuthToken)} t ON t.{column(AuthToken, 'user')} = u.{pk}"
            f" WHERE t.{column(AuthToken, 'token_key')} = %s AND (t.{expiry} IS NULL OR t.{expiry} > %s)"
        )
    else:
        select += f" WHERE u.{pk} = %s"
    if ticket_token:  # a ticket asked for with a token: that token must still hold
        expiry = column(AuthToken, "expiry")
        select += (
            f" AND EXISTS (SELECT 1 FROM {table(AuthToken)} t WHERE t.{column(AuthToken, 'digest')} = %s"
            f" AND t.{column(AuthToken, 'user')} = u.{pk} AND (t.{expiry} IS NULL OR t.{expiry} > %s))"
        )
    return select + f" AND u.{is_active} = %s"


def _token_row(session_param, token: str) -> tuple | None:
    """The opening row of the unexpired token `token` (knox: key prefix, then the SHA-512
    digest compared in constant time), or None."""
    if len(token) <= CONSTANTS.TOKEN_KEY_LENGTH:
        return None
    now = db_value(AuthToken, "expiry", timezone.now())
    rows = fetch_all(_opening_sql(True), [session_param, token[: CONSTANTS.TOKEN_KEY_LENGTH], now, True])
    digest = hash_token(token)
    for row in rows:
        if compare_digest(digest, row[-1]):
            return row
    return None


def authenticate(*, credentials: Credentials, session_id: UUID) -> tuple[StreamUser, bool, int | None, Grant]:
    """The user, whether they may read the session, its newest event id (None: no such
    session), and the grant to re-check later. One query at most (none for a bad ticket),
    hand-written (realtime.sql)."""
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    session_param = db_value(source, source._meta.pk.name, session_id)
    token_digest = login_session = auth_hash = None
    if credentials.user_id:
        row = fetch_one(_opening_sql(False, password=True), [session_param, credentials.user_id, True])
        login_session = credentials.login_session if _login_session_model() is not None else None
        auth_hash = credentials.login_hash
        # Channels' auth middleware has just compared the two; a password changed since
        # (a millisecond's window) must not leave this stream resting on the new one.
        if row is not None and not _SessionHashes().signs(row[-1], auth_hash):
            row = None
    elif credentials.token:
        row = _token_row(session_param, credentials.token)
        token_digest = row[-1] if row is not None else None
    else:
        try:
            claims = ticket_read(ticket=credentials.ticket or "", session_id=session_id)
        except TicketInvalid as exc:
            raise StreamRefused(401, f"Invalid stream ticket: {exc}.") from exc
        token_digest, auth_hash = claims.token_digest, claims.auth_hash
        if token_digest is None:
            row = fetch_one(_opening_sql(False, password=True), [session_param, claims.user_id, True])
            if row is not None and auth_hash is not None and not _SessionHashes().signs(row[-1], auth_hash):
                row = None  # asked for with the cookie of a login a password change ended
        else:
            now = db_value(AuthToken, "expiry", timezone.now())
            row = fetch_one(_opening_sql(False, True), [session_param, claims.user_id, token_digest, now, True])
    if row is None:
        raise StreamRefused(401, "Invalid credentials.")
    user = StreamUser(pk=row[0], username=row[1], is_staff=bool(row[2]))
    grant = Grant(
        user_id=user.pk,
        session_key=str(session_id),
        token_digest=token_digest,
        login_session=login_session,
        auth_hash=auth_hash,
    )
    return user, bool(row[4]), row[3], grant


class _SessionHashes:
    """Whether a session auth hash (a login's, Django's HASH_SESSION_KEY) was derived from
    a password hash: Django's own check (django.contrib.auth.get_user), with the User
    model's get_session_auth_hash on one bare instance, and once per password hash (a new
    instance per grant cost more than the HMAC itself)."""

    def __init__(self) -> None:
        self._user = get_user_model()()
        self._known: dict[str, str] = {}

    def signs(self, password: str, auth_hash: str | None) -> bool:
        if auth_hash is None:
            return False
        expected = self._known.get(password)
        if expected is None:
            self._user.password = password
            expected = self._known[password] = self._user.get_session_auth_hash()
        return compare_digest(auth_hash, expected)


def stream_open(*, credentials: Credentials, session_id: UUID, after: int | None, page_size: int) -> StreamStart:
    """Authenticate, authorize, and read the session's newest id and, when resuming, the
    first page of replay: one short query, or two. Raises StreamRefused."""
    user, may_read, newest, grant = authenticate(credentials=credentials, session_id=session_id)
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
        grant=grant,
        user_id=user.pk,
        username=user.username,
        newest=newest,
        oldest=oldest,
        after=after,
        rows=rows,
    )


# Grants per statement: padded up to one of these sizes, so that a handful of statements
# (each prepared once on PostgreSQL) serve every batch; 6 parameters each stays far below
# SQLite's limit on parameters.
_BATCH_SIZES = (8, 50, 200)


@cached_sql
def _grants_sql(size: int, login_model: type[Model] | None) -> str:
    """The indexes of the grants (idx, user id, session id, token digest or NULL, login
    session key or NULL, session auth hash or NULL) that still hold: active user, the
    access rule, the token (if any) still stored, unexpired and the user's, and the login
    session (if any, and if there is a `login_model`: they are database rows) still there
    and unexpired; each with the user's password hash where the grant has an auth hash,
    for grants_refused to compare (an HMAC: not something SQL can compute)."""
    User = get_user_model()
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    may_read = import_string(settings.CHORUS_STREAM_ACCESS_RULE)(user="u", session="s")
    expiry = column(AuthToken, "expiry")
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * size)
    login_join = login_check = ""
    if login_model is not None:
        key, expire = column(login_model, "session_key"), column(login_model, "expire_date")
        login_join = f" LEFT JOIN {table(login_model)} ls ON ls.{key} = g.ls"
        login_check = f" AND (g.ls IS NULL OR (ls.{key} IS NOT NULL AND ls.{expire} > %s))"
    return (
        f"WITH g (idx, uid, sid, dig, ls, ah) AS (VALUES {values})"
        f" SELECT g.idx, CASE WHEN g.ah IS NULL THEN NULL ELSE u.{column(User, 'password')} END FROM g"
        f" JOIN {table(User)} u ON u.{column(User, User._meta.pk.name)} = g.uid"
        f" JOIN {table(source)} s ON s.{column(source, source._meta.pk.name)} = g.sid"
        f" LEFT JOIN {table(AuthToken)} t ON t.{column(AuthToken, 'digest')} = g.dig"
        f" AND t.{column(AuthToken, 'user')} = g.uid"
        f"{login_join}"
        f" WHERE u.{column(User, 'is_active')} = %s AND ({may_read})"
        f" AND (g.dig IS NULL OR (t.{column(AuthToken, 'digest')} IS NOT NULL"
        f" AND (t.{expiry} IS NULL OR t.{expiry} > %s))){login_check}"
    )


def grants_refused(*, grants: list[Grant]) -> set[Grant]:
    """The grants that no longer hold: the user is gone or inactive, the access rule
    refuses them the session (removed, no longer staff, session deleted), their token was
    revoked or has expired, their login session ended (logged out, expired), or the
    password they were signed in with was changed. One query per 200 grants."""
    source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    unique = list(dict.fromkeys(grants))
    now = db_value(AuthToken, "expiry", timezone.now())
    login_model = _login_session_model()
    extra = [True, now, *([db_value(login_model, "expire_date", timezone.now())] if login_model else [])]
    holding: set[int] = set()
    hashes = _SessionHashes()
    largest = _BATCH_SIZES[-1]
    for start in range(0, len(unique), largest):
        chunk = unique[start : start + largest]
        size = next(n for n in _BATCH_SIZES if n >= len(chunk))
        params: list = []
        for offset in range(size):
            index = start + min(offset, len(chunk) - 1)  # pad with the last grant
            grant = unique[index]
            session_param = db_value(source, source._meta.pk.name, UUID(grant.session_key))
            params += [index, grant.user_id, session_param, grant.token_digest, grant.login_session, grant.auth_hash]
        for index, password in fetch_all(_grants_sql(size, login_model), [*params, *extra]):
            if password is None or hashes.signs(password, unique[index].auth_hash):
                holding.add(index)
    return {grant for index, grant in enumerate(unique) if index not in holding}
