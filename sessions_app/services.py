"""Writes: every change to sessions, members and messages, each with its event.

Each service runs in one transaction; its events are published inside it and reach the
streams only after commit (realtime.publish).

Lock order
----------
Every writer of a session's rows takes its locks in one order, so that no two of them can
wait for each other in a cycle (PostgreSQL; SQLite's IMMEDIATE transactions serialize
writers anyway):

1. **the session row first**: `SELECT … FOR NO KEY UPDATE` (`session_lock`), or
   `event_publish`'s counter update, which takes the same lock, as the first statement;
   `session_delete` takes `FOR UPDATE`, which also waits for the foreign-key checks of
   rows being inserted into the session (and makes them wait);
2. then the session's rows, messages before regenerations, each set in primary-key order;
3. events are inserted last (they are new rows: nobody else can hold them).

Since every writer of a session holds its row lock first, writers of one session run one
after the other, and every "may they still?" question (role, message not deleted,
regeneration still running) is asked again under that lock, where the answer cannot
change before commit. The only writers that skip step 1 are single statements that lock
one kind of row and then wait for nothing else (`regeneration_claim`, lease renewal): they
cannot close a cycle.
"""

from __future__ import annotations

from functools import cache
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from rest_framework.exceptions import PermissionDenied

from realtime import events
from realtime.publish import (
    event_insert_params,
    event_insert_sql,
    event_prepare,
    event_publish,
    event_stored,
    session_close_streams,
)
from realtime.sql import cached_sql, column, db_value, fetch_one, insert, insert_select, table
from sessions_app.models import WRITER_ROLES, CollabSession, Membership, Message, MessageRole, Role
from sessions_app.selectors import MessageNotFound, SessionNotFound, is_writer


class ServiceError(Exception):
    """Input that is well-formed but not allowed; the API answers 400 with the message."""


class MemberNotFound(Exception):
    pass


class WriteNotAllowed(PermissionDenied):
    """The user is still a member but (no longer) may do this (403)."""


# --- the lock order, step 1 -----------------------------------------------------------------
def session_lock(
    *, session_id: UUID | str, user: AbstractBaseUser | None = None, exclusive: bool = False
) -> str | None:
    """Lock the session row until commit (step 1 of the lock order) and return `user`'s
    role in the session, read under that lock (None: not a member, or no `user`).
    `exclusive` takes FOR UPDATE (deleting the session) instead of FOR NO KEY UPDATE.
    Must run inside the caller's transaction. Raises SessionNotFound if the session is
    gone (deleted by a writer we waited for)."""
    rows = CollabSession.objects.select_for_update(no_key=not exclusive).filter(pk=session_id)
    if user is None:
        found = rows.values_list("pk", flat=True).first()
        if found is None:
            raise SessionNotFound(str(session_id))
        return None
    role = Membership.objects.filter(session=OuterRef("pk"), user=user).values("role")[:1]
    found = rows.annotate(role=Subquery(role)).values_list("pk", "role").first()
    if found is None:
        raise SessionNotFound(str(session_id))
    return found[1]


def require_writer(role: str | None, *, session_id: UUID | str) -> None:
    """A role read under the session lock: a non-member gets SessionNotFound (404, as
    CONTRACT §2 wants for non-members), a viewer WriteNotAllowed (403)."""
    if role is None:
        raise SessionNotFound(str(session_id))
    if not is_writer(role):
        raise WriteNotAllowed("Only the owner and editors may do this.")


@cached_sql
def _role_sql() -> str:
    return (
        f"SELECT {column(Membership, 'role')} FROM {table(Membership)}"
        f" WHERE {column(Membership, 'session')} = %s AND {column(Membership, 'user')} = %s"
    )


def _role_under_lock(*, session_id: UUID, user: AbstractBaseUser) -> str | None:
    """The user's role, hand-written (every post asks it; realtime.sql says why). Only
    meaningful once the session row is locked."""
    row = fetch_one(_role_sql(), [db_value(CollabSession, "id", session_id), user.pk])
    return row[0] if row is not None else None


@transaction.atomic
def session_create(*, owner: AbstractBaseUser, title: str) -> CollabSession:
    session = CollabSession(owner=owner, title=title)
    session.full_clean()
    session.save()
    Membership.objects.create(session=session, user=owner, role=Role.OWNER)
    event_publish(session_id=session.pk, payload=events.member_joined(username=owner.get_username(), role=Role.OWNER))
    session.refresh_from_db(fields=["last_event_id"])
    return session


@transaction.atomic
def session_update(*, session: CollabSession, title: str) -> CollabSession:
    session.title = title
    session.full_clean()
    # The UPDATE is the first statement: it takes the session row lock (step 1).
    if not CollabSession.objects.filter(pk=session.pk).update(title=title, updated_at=timezone.now()):
        raise SessionNotFound(str(session.pk))
    event_publish(session_id=session.pk, payload=events.session_updated(title=title))
    session.refresh_from_db(fields=["last_event_id", "updated_at"])
    return session


@transaction.atomic
def session_delete(*, session: CollabSession) -> None:
    """Deletes the session with its log; its open streams end with `access_revoked`.

    FOR UPDATE first: writers of the session wait for it (and then find it gone: 404),
    and it waits for the writers already under way, whose rows it then deletes too. Without
    it, a row committed between Django collecting the related rows and deleting the
    session failed the deferred foreign-key check at commit (500, nothing deleted)."""
    session_lock(session_id=session.pk, exclusive=True)
    session_close_streams(session_id=session.pk)
    session.delete()


def _lock_memberships(session: CollabSession) -> None:
    """Serialize membership changes of one session until commit, so that "already a
    member?" and "still a member?" hold when acted on under PostgreSQL's READ COMMITTED
    (SQLite's IMMEDIATE transactions serialize anyway). It is step 1 of the lock order,
    which every writer of the session takes first."""
    session_lock(session_id=session.pk)


@transaction.atomic
def member_add(*, session: CollabSession, username: str, role: str) -> Membership:
    if role not in (Role.EDITOR, Role.VIEWER):
        raise ServiceError("role must be 'editor' or 'viewer' (a session has one owner).")
    _lock_memberships(session)
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ServiceError(f"No user named {username!r}.")
    if Membership.objects.filter(session=session, user=user).exists():
        raise ServiceError(f"{username!r} is already a member of this session.")
    membership = Membership.objects.create(session=session, user=user, role=role)
    event_publish(session_id=session.pk, payload=events.member_joined(username=username, role=role))
    return membership


@transaction.atomic
def member_remove(*, session: CollabSession, username: str) -> None:
    """Removes the member; the `member_left` event also ends that user's open streams."""
    if "\x00" in username:  # from the URL; no username has one, and PostgreSQL refuses NUL in text
        raise MemberNotFound(username)
    _lock_memberships(session)
    membership = Membership.objects.select_related("user").filter(session=session, user__username=username).first()
    if membership is None:
        raise MemberNotFound(username)
    if membership.role == Role.OWNER:
        raise ServiceError("The owner cannot be removed from their session.")
    role = membership.role
    membership.delete()
    event_publish(session_id=session.pk, payload=events.member_left(username=username, role=role))


@transaction.atomic(savepoint=False)  # no caller recovers from its failure: skip the savepoint
def message_create(
    *,
    session: CollabSession,
    author: AbstractBaseUser | None,
    content: str,
    role: str = MessageRole.USER,
    check_author: bool = False,
) -> Message:
    """Store a message and publish `message_created`. With `check_author`, the author's
    role is checked again under the session lock (a member removed while the request was
    on its way gets SessionNotFound, a viewer WriteNotAllowed)."""
    message = Message(session=session, author=author, content=content, role=role, created_at=timezone.now())
    # Field checks only: the relations are passed in, already valid, the pk is a fresh uuid,
    # and the role comes from code; the unique and constraint checks cost a query each.
    message.full_clean(
        exclude=["session", "author", "original_message"], validate_unique=False, validate_constraints=False
    )
    # Lock order: the publish goes first, its counter update is the session row lock (no
    # extra statement on the hottest path); the message row follows.
    try:
        event_publish(
            session_id=session.pk,
            payload=events.message_created(
                message_id=str(message.pk),
                role=message.role,
                author=author.get_username() if author is not None else None,
                content=content,
            ),
        )
    except LookupError:
        raise SessionNotFound(str(session.pk)) from None
    if check_author and author is not None:
        require_writer(_role_under_lock(session_id=session.pk, user=author), session_id=session.pk)
    insert(message)  # message.save() without the ORM's compile step: every post pays it
    return message


def message_post(*, session: CollabSession, author: AbstractBaseUser, content: str, reply: bool = False):
    """`message_create` by a member whose role is checked under the session lock, and with
    `reply` a regeneration that writes the assistant's answer (both in one transaction).
    Returns (message, regeneration or None).

    On PostgreSQL a post without `reply` is one statement (`_message_post_one_statement`);
    when that statement cannot decide (a writer of the session committed while it waited
    for the lock) the post runs the general path below, which then decides."""
    if not reply:
        message = message_post_one_statement(session_id=session.pk, author=author, content=content)
        if message is not None:
            return message, None
    return _message_post_in_transaction(session=session, author=author, content=content, reply=reply)


def message_post_one_statement(*, session_id: UUID, author: AbstractBaseUser, content: str) -> Message | None:
    """A post (without reply) as one statement on PostgreSQL, which also decides whether
    the session exists and `author` may write to it: nothing needs to be read first.
    Returns None, having written nothing, where it cannot decide (not PostgreSQL,
    CHORUS_ONE_STATEMENT_WRITES off, no such session, not a writer, or a writer of the
    session committed while it waited): the caller then takes the general path
    (`message_post`), which reads, re-checks under the lock and answers."""
    if not settings.CHORUS_ONE_STATEMENT_WRITES or connection.vendor != "postgresql":
        return None
    return _message_post_one_statement(session_id=session_id, author=author, content=content)


@transaction.atomic
def _message_post_in_transaction(*, session: CollabSession, author: AbstractBaseUser, content: str, reply: bool):
    from sessions_app.regenerations.services import regeneration_start

    message = message_create(session=session, author=author, content=content, check_author=True)
    regeneration = None
    if reply:
        regeneration = regeneration_start(session=session, source_message=message, requested_by=author, reply=True)
    return message, regeneration


@cached_sql
def _post_lock_sql() -> str:
    """The first CTE of the one-statement post: the session row lock (step 1 of the lock
    order) by the counter update, taken only if

    - no event was published to the session between the statement's snapshot and the
      moment it got the lock: every writer that holds the session lock and changes what a
      post depends on (members, the session itself) publishes an event, which moves the
      counter. The subquery reads the counter in the statement's snapshot; the WHERE is
      checked again on the locked row (READ COMMITTED re-checks a row updated meanwhile
      against the same subquery value), so a writer that committed while we waited makes
      the update match nothing;
    - then the author's role, read in that same snapshot, is still the role under the
      lock: it must be a writer's.

    Otherwise nothing is written (no row is returned) and the caller takes the general
    path, which locks, re-reads and answers (404, 403, or the post after all)."""
    session, last, pk = table(CollabSession), column(CollabSession, "last_event_id"), column(CollabSession, "id")
    writers = ", ".join(f"'{role}'" for role in WRITER_ROLES)
    return (
        f"UPDATE {session} SET {last} = {last} + 1"
        f" WHERE {pk} = %s AND {last} = (SELECT {last} FROM {session} WHERE {pk} = %s)"
        f" AND EXISTS (SELECT 1 FROM {table(Membership)} WHERE {column(Membership, 'session')} = %s"
        f" AND {column(Membership, 'user')} = %s AND {column(Membership, 'role')} IN ({writers}))"
        f" RETURNING {last} AS seq"
    )


@cache
def _post_sql(message_sql: str) -> str:
    return (
        f"WITH locked AS ({_post_lock_sql()}),"
        f" event AS ({event_insert_sql(seq_sql='locked.seq', source='locked')}),"
        f" message AS ({message_sql})"
        " SELECT seq FROM locked"
    )


def _message_post_one_statement(*, session_id: UUID, author: AbstractBaseUser, content: str) -> Message | None:
    """A post as one statement on PostgreSQL (no BEGIN/COMMIT round trips, one statement
    instead of four): lock the session row by numbering the event (`_post_lock_sql`),
    insert the event and the message, in the lock order. Returns None, having written
    nothing, if the statement could not decide; stores exactly the rows `message_create`
    stores (tests compare them) and broadcasts after commit."""
    message = Message(
        session_id=session_id, author=author, content=content, role=MessageRole.USER, created_at=timezone.now()
    )
    message.full_clean(
        exclude=["session", "author", "original_message"], validate_unique=False, validate_constraints=False
    )
    pending = event_prepare(
        session_id=session_id,
        payload=events.message_created(
            message_id=str(message.pk), role=message.role, author=author.get_username(), content=content
        ),
    )
    session_id = db_value(CollabSession, "id", session_id)
    message_sql, message_params = insert_select(message, source="locked")
    sql = _post_sql(message_sql)
    params = [session_id, session_id, session_id, author.pk, *event_insert_params(pending), *message_params]
    row = fetch_one(sql, params)
    if row is None:
        return None
    event_stored(pending, row[0])
    message._state.adding = False
    message._state.db = connection.alias
    return message


def message_may_change(*, message: Message, user: AbstractBaseUser, role: str | None) -> bool:
    """CONTRACT §3: a message's author or the session's owner may edit or delete it."""
    return role == Role.OWNER or (role is not None and message.author_id is not None and message.author_id == user.pk)


def _require_may_change(*, message: Message, user: AbstractBaseUser, role: str | None) -> None:
    require_writer(role, session_id=message.session_id)
    if not message_may_change(message=message, user=user, role=role):
        raise WriteNotAllowed("Only the message's author or the session's owner may change it.")


@transaction.atomic
def message_edit(*, message: Message, content: str, by: AbstractBaseUser | None = None) -> Message:
    """Replace the content of a visible message and publish `message_edited`. With `by`,
    that user's right to (CONTRACT §3) is checked again under the session lock. Raises
    MessageNotFound if the message is gone, RegenerationConflict while a regeneration is
    writing it."""
    from sessions_app.regenerations.selectors import regeneration_writing
    from sessions_app.regenerations.services import RegenerationConflict

    role = session_lock(session_id=message.session_id, user=by)
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("author")
        .filter(pk=message.pk, deleted_at__isnull=True)
        .first()
    )
    if message is None:
        raise MessageNotFound("The message was deleted.")
    if by is not None:
        _require_may_change(message=message, user=by, role=role)
    if regeneration_writing(message=message) is not None:
        raise RegenerationConflict("This message is still being generated; cancel it or wait for it to finish.")
    message.content = content
    message.edited_at = timezone.now()
    message.full_clean(exclude=["session", "author", "original_message"])
    message.save(update_fields=["content", "edited_at"])
    event_publish(
        session_id=message.session_id,
        payload=events.message_edited(
            message_id=str(message.pk),
            role=message.role,
            author=message.author.get_username() if message.author_id else None,
            content=content,
        ),
    )
    return message


@transaction.atomic
def message_delete(*, message: Message, by: AbstractBaseUser | None = None) -> list[str]:
    """Soft-delete a message and its regenerated versions, cancel the regenerations that
    write or answer them, and publish `message_deleted`. Returns the deleted ids. With
    `by`, that user's right to is checked again under the session lock. Raises
    MessageNotFound if the message is already deleted (a concurrent delete won)."""
    from sessions_app.regenerations.services import regenerations_cancel_for_messages

    role = session_lock(session_id=message.session_id, user=by)
    current = Message.objects.filter(pk=message.pk, deleted_at__isnull=True).only("pk", "session_id", "author_id")
    message = current.first()
    if message is None:
        raise MessageNotFound("The message was already deleted.")
    if by is not None:
        _require_may_change(message=message, user=by, role=role)
    ids = [message.pk]
    frontier = [message.pk]
    while frontier:  # versions of versions, in order
        frontier = list(
            Message.objects.filter(original_message_id__in=frontier, deleted_at__isnull=True)
            .order_by("created_at", "id")
            .values_list("pk", flat=True)
        )
        ids.extend(pk for pk in frontier if pk not in ids)
    # Step 2 of the lock order: the messages (in primary-key order), then regenerations.
    locked = list(Message.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
    Message.objects.filter(pk__in=locked, deleted_at__isnull=True).update(deleted_at=timezone.now())
    regenerations_cancel_for_messages(message_ids=ids)
    deleted = [str(pk) for pk in ids]
    event_publish(session_id=message.session_id, payload=events.message_deleted(deleted_message_ids=deleted))
    return deleted
