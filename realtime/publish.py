"""The one place session events leave from (STYLE §3).

`event_publish` numbers and stores an event inside the caller's transaction and rings the
session's channel-layer group after commit. The channel layer is only a doorbell: the
message carries the id, and a stream that sees a gap reads the database, which is the truth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from realtime import metrics
from realtime.events import EventPayload, EventType, envelope, envelope_json
from realtime.models import Event
from realtime.redis_publish import group_publish
from realtime.sql import cached_sql, db_value, insert
from realtime.sql import table as table_name

logger = logging.getLogger(__name__)

BROADCAST_MESSAGE_TYPE = "session.event"


def session_group(session_id: UUID | str) -> str:
    """The channel-layer group of a session's hub subscriptions."""
    return f"chorus.session.{UUID(str(session_id)).hex}"


@cached_sql
def _next_seq_sql() -> str:
    model = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field("last_event_id").column)
    pk = connection.ops.quote_name(model._meta.pk.column)
    # One statement takes the row lock and returns the new number (PostgreSQL and SQLite
    # >= 3.35 both speak RETURNING). The lock is held until commit, so a concurrent
    # publisher of the same session waits and then reads the committed value: ids are
    # gapless and N is visible before N+1, even under READ COMMITTED.
    return f"UPDATE {table} SET {column} = {column} + 1 WHERE {pk} = %s RETURNING {column}"


def event_publish(*, session_id: UUID | str, payload: EventPayload) -> Event:
    """Store `payload` as the session's next event and broadcast it after commit.

    Runs in the caller's transaction when there is one (a savepoint otherwise is not
    needed: it opens its own). Raises `LookupError` if the session does not exist. The
    broadcast happens only if and when the outermost transaction commits.
    """
    if not isinstance(payload.type, EventType):
        raise ValueError(f"unknown event type {payload.type!r}")
    session_uuid = UUID(str(session_id))
    # No savepoint: a failed publish fails the caller's whole transaction anyway, and the
    # SAVEPOINT/RELEASE pair would be two more round trips on every event.
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            source = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
            cursor.execute(_next_seq_sql(), [db_value(source, source._meta.pk.name, session_uuid)])
            row = cursor.fetchone()
        if row is None:
            raise LookupError(f"session {session_uuid} does not exist")
        created_at = timezone.now()
        body = envelope_json(
            envelope(
                seq=row[0],
                type=payload.type.value,
                session_id=str(session_uuid),
                created_at=created_at,
                data=payload.data,
            )
        )
        event = Event(
            session_id=session_uuid,
            seq=row[0],
            type=payload.type.value,
            data=payload.data,
            envelope=body,
            created_at=created_at,
        )
        insert(event)  # event.save() without the ORM's compile step (realtime.sql)
        message = broadcast_message(event)
        transaction.on_commit(lambda: broadcast(session_uuid, message))
    return event


# --- one statement per publish (PostgreSQL) -------------------------------------------------
_ENVELOPE_HEAD = '{"id":'


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event whose number is not known yet: everything `event_publish` stores but the
    number, for a caller that numbers and inserts it inside a statement of its own
    (`event_insert_sql`), then hands the number to `event_stored`. The envelope is
    serialized here, by the same code as `event_publish`'s, without its leading id."""

    session_id: UUID
    type: str
    data: dict
    created_at: dt.datetime
    envelope_tail: str

    def envelope(self, seq: int) -> str:
        return f"{_ENVELOPE_HEAD}{seq}{self.envelope_tail}"


def event_prepare(*, session_id: UUID | str, payload: EventPayload) -> PendingEvent:
    """The event `payload` will be, but for its number (see PendingEvent)."""
    if not isinstance(payload.type, EventType):
        raise ValueError(f"unknown event type {payload.type!r}")
    session_uuid = UUID(str(session_id))
    created_at = timezone.now()
    body = envelope_json(
        envelope(seq=0, type=payload.type.value, session_id=str(session_uuid), created_at=created_at, data=payload.data)
    )
    head = f"{_ENVELOPE_HEAD}0"
    assert body.startswith(head)  # "id" is the envelope's first key (realtime.events.envelope)
    return PendingEvent(session_uuid, payload.type.value, payload.data, created_at, body[len(head) :])


@cached_sql
def _event_insert_parts() -> tuple[str, str, list]:
    fields = [f for f in Event._meta.concrete_fields if not (f.primary_key and f.db_returning)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return table_name(Event), columns, fields


@cache
def event_insert_sql(*, seq_sql: str, source: str) -> str:
    """`INSERT INTO event … SELECT … FROM {source}`, the number taken from the expression
    `seq_sql` of `source` (e.g. a CTE that updated the session's counter), for PostgreSQL.
    Its parameters are `event_insert_params(pending)`, in order. Every value is cast to its
    column's type: a parameter in a SELECT list would otherwise be taken as text."""
    name, columns, fields = _event_insert_parts()
    values = []
    for field in fields:
        if field.name == "seq":
            values.append(seq_sql)
        elif field.name == "envelope":
            values.append(f"(%s || ({seq_sql})::text || %s)")
        else:
            values.append(f"%s::{field.db_type(connection)}")
    return f"INSERT INTO {name} ({columns}) SELECT {', '.join(values)} FROM {source}"


@cache
def event_insert_rows_sql(*, source: str) -> str:
    """`INSERT INTO event … SELECT … FROM {source}`, one event per row of `source`, for
    PostgreSQL: many events in one statement. `source` has the columns `session_id`,
    `seq`, `type`, `data` (jsonb), `created_at` and `envelope_tail` (PendingEvent's)."""
    name, columns, fields = _event_insert_parts()
    values = {
        "session": "session_id",
        "seq": "seq",
        "type": "type",
        "data": "data",
        "created_at": "created_at",
        "envelope": f"('{_ENVELOPE_HEAD}' || seq::text || envelope_tail)",
    }
    return f"INSERT INTO {name} ({columns}) SELECT {', '.join(values[f.name] for f in fields)} FROM {source}"


def event_insert_params(pending: PendingEvent) -> list:
    _, _, fields = _event_insert_parts()
    values = {
        "session": pending.session_id,
        "type": pending.type,
        "data": pending.data,
        "created_at": pending.created_at,
    }
    params: list = []
    for field in fields:
        if field.name == "envelope":
            params += [_ENVELOPE_HEAD, pending.envelope_tail]
        elif field.name != "seq":
            # What save() stores: these fields' pre_save returns the value as set.
            params.append(field.get_db_prep_save(values[field.name], connection))
    return params


def event_stored(pending: PendingEvent, seq: int) -> None:
    """The caller's statement stored `pending` as number `seq`: broadcast it after commit
    (as `event_publish` does)."""
    message = _broadcast_message(pending.session_id, seq, pending.type, pending.envelope(seq))
    session_uuid = pending.session_id
    transaction.on_commit(lambda: broadcast(session_uuid, message))


def events_stored(stored: list[tuple[PendingEvent, int]]) -> None:
    """`event_stored` for many events at once (a caller that stores a batch): one
    broadcast pass after commit, handed to the server's loop once, its sends one after
    another, each bounded in time as `broadcast`'s."""
    now = timezone.now().timestamp()
    sends = [
        (
            session_group(pending.session_id),
            _broadcast_message(pending.session_id, seq, pending.type, pending.envelope(seq), published_at=now),
        )
        for pending, seq in stored
    ]
    if sends:
        transaction.on_commit(lambda: _broadcast_many(sends))


def _broadcast_many(sends: list[tuple[str, dict]]) -> None:
    for _, message in sends:
        metrics.EVENTS_PUBLISHED.labels(message["event"]).inc()
    try:
        _send_from_sync(_send_many_bounded, sends)
    except Exception:
        logger.exception("broadcast of %d events failed", len(sends))


def broadcast_message(event: Event) -> dict:
    """The channel-layer message for a stored event: everything a hub needs to frame it."""
    return _broadcast_message(event.session_id, event.seq, event.type, event.envelope)


def _broadcast_message(
    session_id: UUID, seq: int, event_type: str, envelope: str, *, published_at: float | None = None
) -> dict:
    return {
        "type": BROADCAST_MESSAGE_TYPE,
        "session": str(session_id),
        "seq": seq,
        "event": event_type,
        "envelope": envelope,
        "publishedAt": timezone.now().timestamp() if published_at is None else published_at,
    }


SESSION_CLOSED_MESSAGE_TYPE = "session.closed"
EPHEMERAL_MESSAGE_TYPE = "session.ephemeral"


def ephemeral_send(*, session_id: UUID | str, event: str, data: dict, exclude_username: str | None = None) -> None:
    """Send an unnumbered frame (`typing`, `read_position`: CONTRACT §7) to every open
    stream of the session in every process, except the streams of `exclude_username`.
    Nothing is stored and nothing is replayed; a frame lost on the way is simply lost.
    Call from sync code (a request thread); in a transaction, call it from on_commit."""
    message = {"type": EPHEMERAL_MESSAGE_TYPE, "session": str(UUID(str(session_id))), "event": event, "data": data}
    if exclude_username is not None:
        message["exclude"] = exclude_username
    try:
        _group_send_from_sync(session_group(session_id), message)
    except Exception:
        logger.exception("sending %s to session %s failed", event, session_id)


def session_close_streams(*, session_id: UUID | str) -> None:
    """After commit, end every open stream of the session in every process (each gets
    `access_revoked`): for a session that is being deleted."""
    message = {"type": SESSION_CLOSED_MESSAGE_TYPE, "session": str(UUID(str(session_id)))}
    group = session_group(session_id)
    transaction.on_commit(lambda: control_send(group, message))


# Every process's hub joins this group: control messages about streams regardless of
# their session (realtime.hub).
STREAMS_CONTROL_GROUP = "chorus.streams"
STREAMS_RECHECK_MESSAGE_TYPE = "streams.recheck"


# Sent with `user_ids` in every process that hears a `streams_recheck` doorbell (from the
# hub, on its event loop: receivers must not block), and at once in the process that rang
# it. For what a process keeps about users' rights in memory (the API's token cache).
users_changed = Signal()


def streams_recheck(*, user_ids: Iterable[int]) -> None:
    """After commit, have every process re-check at once the open streams of these users
    (their token revoked, the user deactivated or no longer staff): those that may no
    longer exist end with `access_revoked`, and `users_changed` is sent. Only a doorbell:
    the check reads the database, and without the message streams are re-checked every
    CHORUS_STREAM_REVALIDATE_SECONDS anyway, so a failed send is logged, not raised."""
    message = {"type": STREAMS_RECHECK_MESSAGE_TYPE, "users": sorted(set(user_ids))}
    if message["users"]:
        # Now and again after commit: until then other transactions still read the old
        # rows, and a cache may have taken them in meanwhile.
        users_changed.send(sender=None, user_ids=frozenset(message["users"]))
        transaction.on_commit(lambda: _users_changed(message))


def _users_changed(message: dict) -> None:
    users_changed.send(sender=None, user_ids=frozenset(message["users"]))
    _control_send_logged(STREAMS_CONTROL_GROUP, message)


def _control_send_logged(group: str, message: dict) -> None:
    try:
        control_send(group, message)
    except Exception:
        logger.exception("control message %s to %s failed", message["type"], group)


def control_send(group: str, message: dict) -> None:
    """Send a control message (not a session event) to every process that joined `group`
    through `Hub.join_process_group`. Call from sync code, typically in on_commit."""
    _group_send_from_sync(group, message)


# Sends handed to the server's loop and not finished yet, at most this many: a frozen
# Redis must not pile up pending sends without bound (beyond it, a send is shed and
# counted; the event is stored and reconciliation delivers it).
_MAX_PENDING_SENDS = 1000
_pending_sends = threading.BoundedSemaphore(_MAX_PENDING_SENDS)


async def _send_bounded(group: str, message: dict) -> None:
    """group_send that gives up after CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS. A send that
    fails at once is tried once more in that time: after Redis restarts, the first send
    meets the connection that broke while idle, and the retry gets a new one (a doubled
    message is harmless: streams drop ids they have)."""
    layer = get_channel_layer()
    async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
        try:
            await _group_send(layer, group, message)
        except Exception:
            await _group_send(layer, group, message)


async def _group_send(layer, group: str, message: dict) -> None:
    if not await group_publish(layer, group, message):
        await layer.group_send(group, message)


async def _send_many_bounded(sends: list[tuple[str, dict]]) -> None:
    """group_send of each of `sends`, in order, within CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS.
    On Redis they are all written at once and their replies awaited together (the
    publisher pipelines: realtime.redis_publish), one round trip for the whole batch,
    where one per event was the limit of a busy loop (regenerations-200: sends waited
    seconds behind each other for channels_redis's per-shard lock, and ~10,000 timed out;
    pipelined, 12-28 did, p50 latency fell from 2.3-2.6 s to 0.57-0.67 s and CPU per event
    from 0.83-0.93 to 0.74 ms, back to back on a shared machine). Other layers get one
    group_send each, in order."""
    layer = get_channel_layer()
    async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
        try:
            await _group_send_all(layer, sends)
        except Exception:  # a connection that broke while idle: once more, on a new one
            await _group_send_all(layer, sends)


async def _group_send_all(layer, sends: list[tuple[str, dict]]) -> None:
    # Tasks start in the order they are made, so the publishes are written in order.
    publishes = [asyncio.ensure_future(group_publish(layer, group, message)) for group, message in sends]
    try:
        published = await asyncio.gather(*publishes)
    except BaseException:
        for publish in publishes:
            publish.cancel()
        raise
    for (group, message), done in zip(sends, published, strict=True):
        if not done:  # not a Redis layer: group_send, one after another
            await layer.group_send(group, message)


def _group_send_from_sync(group: str, message: dict) -> None:
    """group_send from a sync thread. In a server process the send is handed to the
    server's event loop without waiting for it: the request thread need not block on a
    Redis round trip (order is kept: the loop runs handed-over sends first come, first
    served). Elsewhere (a shell, a management command) it waits, as async_to_sync does.
    Either way the send is bounded in time; a failure is counted in
    `chorus_broadcast_failures_total` (and raised only on the waiting path)."""
    _send_from_sync(_send_bounded, group, message)


def _send_from_sync(send, *args) -> None:
    loop = _server_loop()
    if loop is None:
        try:
            async_to_sync(send)(*args)
        except Exception:
            metrics.BROADCAST_FAILURES.inc()
            raise
        return
    if not _pending_sends.acquire(blocking=False):
        metrics.BROADCAST_FAILURES.inc()
        logger.error("channel-layer send shed: %d sends pending already", _MAX_PENDING_SENDS)
        return
    try:
        future = asyncio.run_coroutine_threadsafe(send(*args), loop)
    except BaseException:
        _pending_sends.release()
        raise
    future.add_done_callback(_send_done)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    from realtime.hub import current_hub  # the hub imports this module

    hub = current_hub()
    if hub is None or not hub.loop.is_running() or hub.loop.is_closed():
        return None
    try:
        if asyncio.get_running_loop() is hub.loop:
            return None  # on the loop itself (publishing never is: the ORM refuses to run there)
    except RuntimeError:
        pass  # no loop in this thread: the usual case, a request thread
    return hub.loop


def _send_done(future) -> None:
    _pending_sends.release()
    if future.cancelled() or future.exception() is not None:
        metrics.BROADCAST_FAILURES.inc()
        error = "cancelled" if future.cancelled() else repr(future.exception())
        logger.error("channel-layer send failed: %s", error)


def broadcast(session_id: UUID, message: dict) -> None:
    """Ring the session's group. A failure is logged, not raised: the event is stored, and
    streams recover it from the database when they notice the gap."""
    metrics.EVENTS_PUBLISHED.labels(message["event"]).inc()
    try:
        _group_send_from_sync(session_group(session_id), message)
    except Exception:
        logger.exception("broadcast of event %s#%s failed", session_id, message["seq"])
