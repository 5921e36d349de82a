"""Writes about regenerations, each in one short transaction with its events.

The request side (`regeneration_start`, `regeneration_cancel`) runs in a view's thread;
the run side (`regeneration_claim` … `regeneration_finish`) is called by the runner
through `database_sync_to_async`, one short call per step. Every write after `queued` is
an UPDATE conditional on the status, and its event is published only if that UPDATE
matched: once a regeneration is cancelled, failed or completed, nothing else is written
or published for it, whichever process tries.

Lock order (sessions_app.services says why): every write takes the session row first.
The request side locks it with `session_lock` and re-reads what it acts on under it (the
source message still visible, the requester still a writer); the run side publishes
first (the counter update is that lock), then makes its conditional UPDATE, and rolls
the whole transaction back (event and counter included) if the regeneration is no
longer running.

Bytes written grow linearly with the answer: a run flush stores its delta once, in its
`regeneration_progress` event. An UPDATE in PostgreSQL writes a whole new row version, so
`content = content || delta` rewrote the whole text so far at every flush, twice
(regeneration and message): quadratic in the answer's length (issue 12). The regeneration's
row gets the whole text so far only as a checkpoint, when its length reached the next power
of two (`checkpoint_due`: less than four times the answer in all), and the message row when
the run ends (completed, failed, cancelled, reaped). Readers rebuild the text so far from
the checkpoint and the deltas after it (`selectors.regeneration_content_so_far`), so
retention pruning early deltas of a running answer loses none of its text.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from realtime import events
from realtime.events import EventType
from realtime.publish import (
    control_send,
    event_insert_params,
    event_insert_rows_sql,
    event_insert_sql,
    event_prepare,
    event_publish,
    events_stored,
)
from realtime.sql import cached_sql, column, fetch_one, table
from sessions_app.models import (
    ACTIVE_REGENERATION_STATUSES,
    CollabSession,
    Message,
    MessageRole,
    Regeneration,
    RegenerationStatus,
)
from sessions_app.providers import Turn, get_provider
from sessions_app.regenerations import selectors
from sessions_app.regenerations.metrics import count_after_commit
from sessions_app.selectors import MessageNotFound
from sessions_app.services import require_writer, session_lock

logger = logging.getLogger(__name__)

# Every process's worker joins this group to hear cancel commands (runner.py).
CONTROL_GROUP = "chorus.regenerations"
CANCEL_MESSAGE_TYPE = "regeneration.cancel"

LOST_ERROR = "The assistant stopped unexpectedly. Please try again."
GENERIC_ERROR = "The assistant could not finish this answer. Please try again."
TOO_LONG_ERROR = "The assistant took too long to finish this answer. Please try again."
SHUTDOWN_ERROR = "The server restarted while writing this answer. Please try again."


def too_much_output_error(limit: int) -> str:
    return f"The answer reached the limit of {limit} characters and was stopped there."


class RegenerationConflict(Exception):
    """The request contradicts the regeneration's state (409): one is already running
    for the message, the message is still being written, or it has already ended."""


# --- the request side -------------------------------------------------------------------
@transaction.atomic
def regeneration_start(
    *,
    session: CollabSession,
    source_message: Message,
    requested_by: AbstractBaseUser | None,
    user_query: str | None = None,
    reply: bool = False,
) -> Regeneration:
    """Create the assistant message that will hold the answer and a queued regeneration
    that writes it; publish `message_regenerating`; after commit, hand it to this
    process's runner. With `reply`, the new message answers `source_message`; otherwise
    it is a new version of it (its `original_message`).

    Lock order: the session first; with `requested_by`, their role is checked again
    under that lock (SessionNotFound if no longer a member, WriteNotAllowed if not a
    writer), and `source_message` is read again: MessageNotFound if it was deleted
    meanwhile (or is not a message of the session). Raises RegenerationConflict if it is
    still being written or already has a queued or running regeneration."""
    role = session_lock(session_id=session.pk, user=requested_by)
    if requested_by is not None:
        require_writer(role, session_id=session.pk)
    source_message = (
        Message.objects.select_related("author")
        .filter(pk=source_message.pk, session_id=session.pk, deleted_at__isnull=True)
        .first()
    )
    if source_message is None:
        raise MessageNotFound("The message was deleted.")
    if selectors.regeneration_writing(message=source_message) is not None:
        raise RegenerationConflict("This message is still being generated; cancel it or wait for it to finish.")
    provider = get_provider()
    now = timezone.now()
    message = Message.objects.create(
        session=session,
        role=MessageRole.ASSISTANT,
        author=None,
        content="",
        created_at=now,
        original_message=None if reply else source_message,
    )
    try:
        with transaction.atomic():
            regeneration = Regeneration.objects.create(
                session=session,
                message=message,
                source_message=source_message,
                requested_by=requested_by,
                user_query=user_query or "",
                provider=provider.name,
                model=provider.model,
                created_at=now,
                heartbeat_at=now,  # the lease starts now: a run never claimed is reaped too
            )
    except IntegrityError:
        raise RegenerationConflict("A regeneration of this message is already running.")
    count_after_commit(RegenerationStatus.QUEUED)
    event_publish(
        session_id=session.pk,
        payload=events.message_regenerating(
            message_id=str(message.pk),
            original_message_id=str(message.original_message_id) if message.original_message_id else None,
            task_id=regeneration.task_id,
            regeneration_id=str(regeneration.pk),
            user_query=regeneration.user_query or None,
        ),
    )
    from sessions_app.regenerations.runner import regeneration_launch

    regeneration_id = regeneration.pk
    transaction.on_commit(lambda: regeneration_launch(regeneration_id))
    return regeneration


def regeneration_cancel(*, regeneration: Regeneration, by: AbstractBaseUser | None = None) -> Regeneration:
    """Mark a queued or running regeneration cancelled and publish
    `regeneration_cancelled`, then (after commit) tell every process to stop its run.
    Cancelling a cancelled regeneration changes nothing; a completed or failed one raises
    RegenerationConflict. With `by`, that user's role is checked again under the session
    lock (SessionNotFound / WriteNotAllowed)."""
    with transaction.atomic():
        role = session_lock(session_id=regeneration.session_id, user=by)
        if by is not None:
            require_writer(role, session_id=regeneration.session_id)
        cancelled = _cancel_in_transaction(regeneration_id=regeneration.pk)
    if not cancelled:
        regeneration.refresh_from_db()
        if regeneration.status != RegenerationStatus.CANCELLED:
            raise RegenerationConflict(f"This regeneration has already {regeneration.status}.")
    regeneration.refresh_from_db()
    return regeneration


def _keep_content_so_far(*, regeneration_id: UUID, session_id: UUID, message_id: UUID) -> None:
    """Write the text a run had streamed into its rows as it ends without its own final
    content (cancelled, failed, reaped). Inside the transaction that holds the session
    lock: no flush of the run can come in between."""
    content = selectors.regeneration_content_so_far(regeneration_id=regeneration_id, session_id=session_id)
    if content:
        Regeneration.objects.filter(pk=regeneration_id).update(content=content)
        Message.objects.filter(pk=message_id).update(content=content)


def _cancel_in_transaction(*, regeneration_id: UUID) -> bool:
    """Cancel inside the caller's transaction, which holds the session lock (lock order);
    True if it was queued or running."""
    now = timezone.now()
    updated = Regeneration.objects.filter(pk=regeneration_id, status__in=ACTIVE_REGENERATION_STATUSES).update(
        status=RegenerationStatus.CANCELLED, finished_at=now, heartbeat_at=now
    )
    if not updated:
        return False
    count_after_commit(RegenerationStatus.CANCELLED)
    row = Regeneration.objects.values("session_id", "message_id").get(pk=regeneration_id)
    _keep_content_so_far(regeneration_id=regeneration_id, session_id=row["session_id"], message_id=row["message_id"])
    event_publish(
        session_id=row["session_id"],
        payload=events.regeneration_cancelled(message_id=str(row["message_id"]), task_id=str(regeneration_id)),
    )
    transaction.on_commit(lambda: send_cancel_command(regeneration_id))
    return True


def regenerations_cancel_for_messages(*, message_ids: list[UUID]) -> list[UUID]:
    """Cancel every active regeneration writing one of `message_ids` or answering one of
    them, inside the caller's transaction, which holds the session lock (used when
    messages are deleted). Locks them in primary-key order (lock order, step 2)."""
    active = Regeneration.objects.filter(status__in=ACTIVE_REGENERATION_STATUSES).filter(
        message_id__in=message_ids
    ) | Regeneration.objects.filter(status__in=ACTIVE_REGENERATION_STATUSES, source_message_id__in=message_ids)
    cancelled = []
    for regeneration_id in active.values_list("pk", flat=True).distinct().order_by("pk"):
        if _cancel_in_transaction(regeneration_id=regeneration_id):
            cancelled.append(regeneration_id)
    return cancelled


def send_cancel_command(regeneration_id: UUID | str) -> None:
    """Tell the process running the regeneration (whichever it is) to stop it now. A lost
    command only delays the stop: the runner also sees the status at its next lease
    renewal (CHORUS_REGENERATION_HEARTBEAT_SECONDS)."""
    try:
        control_send(CONTROL_GROUP, {"type": CANCEL_MESSAGE_TYPE, "id": str(regeneration_id)})
    except Exception:
        logger.exception("could not send the cancel command for regeneration %s", regeneration_id)


# --- the run side (called by the runner, one short call each) ---------------------------
@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a runner needs to know about its regeneration, read when it claims it."""

    regeneration_id: UUID
    session_id: UUID
    message_id: UUID
    provider: str
    conversation: list[Turn]

    @property
    def task_id(self) -> str:
        return str(self.regeneration_id)


def regeneration_claim(*, regeneration_id: UUID | str, worker: str) -> RunPlan | None:
    """queued → running for `worker`; None if it is no longer queued (cancelled or
    reaped before it started, or claimed already)."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Regeneration.objects.filter(pk=regeneration_id, status=RegenerationStatus.QUEUED).update(
            status=RegenerationStatus.RUNNING, started_at=now, heartbeat_at=now, worker=worker
        )
        if not claimed:
            return None
        count_after_commit(RegenerationStatus.RUNNING)
        regeneration = Regeneration.objects.select_related("source_message", "requested_by").get(pk=regeneration_id)
        conversation = selectors.regeneration_conversation(regeneration=regeneration)
    return RunPlan(
        regeneration_id=regeneration.pk,
        session_id=regeneration.session_id,
        message_id=regeneration.message_id,
        provider=regeneration.provider,
        conversation=conversation,
    )


class _NotRunning(Exception):
    """Rolls back a run step whose regeneration is no longer running."""


def _running(plan: RunPlan, **changes) -> None:
    """The conditional UPDATE of a run step; raises _NotRunning (which rolls the step's
    transaction back) if the regeneration is no longer running."""
    changes.setdefault("heartbeat_at", timezone.now())
    if not Regeneration.objects.filter(pk=plan.regeneration_id, status=RegenerationStatus.RUNNING).update(**changes):
        raise _NotRunning


def _run_step(plan: RunPlan, payload: events.EventPayload, **changes) -> bool:
    """Publish `payload` and apply `changes` to the running regeneration, in one
    transaction, in the lock order: the publish (the session row) first. False, with
    nothing written or published, if it is no longer running or its session is gone."""
    try:
        with transaction.atomic():
            event_publish(session_id=plan.session_id, payload=payload)
            message_content = changes.pop("message_content", None)
            _running(plan, **changes)
            if message_content is not None:
                Message.objects.filter(pk=plan.message_id).update(content=message_content)
            if "status" in changes:
                count_after_commit(changes["status"])
    except (_NotRunning, LookupError):  # LookupError: the session was deleted
        return False
    return True


def regeneration_emit(*, plan: RunPlan, payload: events.EventPayload) -> bool:
    """Publish a thought-process event of a running regeneration; False if it is no
    longer running (nothing published)."""
    return _run_step(plan, payload)


@dataclass(frozen=True, slots=True)
class Flush:
    """One `regeneration_progress` of a running regeneration: `delta` at `offset` (code
    points). `content` is the whole text so far, `delta` included; it is stored when a
    checkpoint is due (`checkpoint_due`), and read back from the stored deltas if omitted."""

    plan: RunPlan
    offset: int
    delta: str
    progress: int
    content: str | None = None


def checkpoint_due(*, offset: int, length: int) -> bool:
    """Whether a flush taking the text from `offset` to `offset + length` code points
    stores the whole text so far in the regeneration's row: when its length reaches the
    next power of two. Each checkpoint is then at least half the text so far (a prune of
    early deltas loses nothing: `selectors.regeneration_content_so_far`), and all of them
    together are less than four times the final text (bytes written stay linear)."""
    return length > 0 and (offset + length).bit_length() > offset.bit_length()


def regeneration_append(*, plan: RunPlan, offset: int, delta: str, progress: int, content: str | None = None) -> bool:
    """Publish one `regeneration_progress` with `delta` at `offset`; False if no longer
    running (nothing written). See `regeneration_append_many`."""
    return regeneration_append_many(flushes=[Flush(plan, offset, delta, progress, content)])[0]


def regeneration_append_many(*, flushes: list[Flush]) -> list[bool]:
    """Publish each flush as one `regeneration_progress` of its regeneration (the runner
    gathers the flushes of its runs that fall due together); for each, False if that
    regeneration is no longer running (nothing written for it). At most one flush per
    regeneration.

    The delta is stored once, in the event; the regeneration's row gets the whole text so
    far only at a checkpoint (`checkpoint_due`: bytes grow linearly with the answer, see
    the module docstring), and its progress and lease from the runner's lease renewal
    (`regenerations_renew_leases`), not at every flush. On PostgreSQL all of them are
    one transaction of two statements (`_append_many_postgresql`); elsewhere each is a
    transaction of its own."""
    if not flushes:
        return []
    if connection.vendor == "postgresql" and settings.CHORUS_ONE_STATEMENT_WRITES:
        if len(flushes) == 1 and _append_one_statement(flushes[0]):
            return [True]
        return _append_many_postgresql(flushes)
    return [_append_general(flush) for flush in flushes]


@cached_sql
def _append_one_sql() -> str:
    """A lone flush (no checkpoint due) as one statement in autocommit, where the batch's
    transaction is four round trips: the session row lock by numbering the event (step 1
    of the lock order), taken only if the regeneration is running in the statement's
    snapshot and no event was published to the session between that snapshot and the
    lock (every status change of a regeneration but its claim publishes one, under the
    session lock: see sessions_app.services._post_lock_sql for how READ COMMITTED
    re-checks the counter); then the event. Measured alone (one run, 1,000 flushes):
    client CPU per flush 0.51-0.54 ms through the batch's transaction."""
    session, last, pk = table(CollabSession), column(CollabSession, "last_event_id"), column(CollabSession, "id")
    regeneration, status = table(Regeneration), column(Regeneration, "status")
    regeneration_pk = column(Regeneration, "id")
    running = f"'{RegenerationStatus.RUNNING.value}'"
    return (
        f"WITH locked AS (UPDATE {session} SET {last} = {last} + 1"
        f" WHERE {pk} = %s AND {last} = (SELECT {last} FROM {session} WHERE {pk} = %s)"
        f" AND (SELECT {status} FROM {regeneration} WHERE {regeneration_pk} = %s) = {running}"
        f" RETURNING {last} AS seq),"
        f" event AS ({event_insert_sql(seq_sql='locked.seq', source='locked')})"
        " SELECT seq FROM locked"
    )


def _append_one_statement(flush: Flush) -> bool:
    """`flush` in one statement; False, having written nothing, when it cannot decide
    alone (a checkpoint is due, the regeneration is not running in its snapshot, or the
    session had an event meanwhile): the batch's transaction then does."""
    if checkpoint_due(offset=flush.offset, length=len(flush.delta)):
        return False
    plan = flush.plan
    pending = event_prepare(session_id=plan.session_id, payload=_progress_payload(flush))
    params = [plan.session_id, plan.session_id, plan.regeneration_id, *event_insert_params(pending)]
    row = fetch_one(_append_one_sql(), params)
    if row is None:
        return False
    events_stored([(pending, row[0])])
    return True


def _progress_payload(flush: Flush) -> events.EventPayload:
    return events.regeneration_progress(
        message_id=str(flush.plan.message_id),
        task_id=flush.plan.task_id,
        progress=flush.progress,
        offset=flush.offset,
        delta=flush.delta,
    )


def _append_general(flush: Flush) -> bool:
    changes: dict = {"progress": flush.progress}
    if checkpoint_due(offset=flush.offset, length=len(flush.delta)):
        changes["content"] = _checkpoint_text(flush)
    return _run_step(flush.plan, _progress_payload(flush), **changes)


def _checkpoint_text(flush: Flush) -> str:
    if flush.content is not None:
        return flush.content
    plan = flush.plan
    so_far = selectors.regeneration_content_so_far(regeneration_id=plan.regeneration_id, session_id=plan.session_id)
    return so_far[: flush.offset] + flush.delta


@cached_sql
def _lock_sessions_sql() -> str:
    # Several session rows in one transaction: locked in primary-key order (a Sort below
    # the LockRows node), so that two batches (two processes) never wait for each other
    # in a cycle. NO KEY UPDATE, as session_lock and the counter's UPDATE take.
    session, pk = table(CollabSession), column(CollabSession, "id")
    return f"SELECT 1 FROM {session} WHERE {pk} = ANY(%s::uuid[]) ORDER BY {pk} FOR NO KEY UPDATE"


@cached_sql
def _lock_regenerations_sql() -> str:
    # Regeneration rows after the session rows and in primary-key order: the lease
    # renewal locks them in that order too (without session locks).
    regeneration, pk = table(Regeneration), column(Regeneration, "id")
    return f"SELECT 1 FROM {regeneration} WHERE {pk} = ANY(%s::uuid[]) ORDER BY {pk} FOR UPDATE"


@cached_sql
def _append_many_sql() -> str:
    """The flushes of a batch whose regeneration is running, numbered per session (the
    counter raised once per session), inserted as events; the checkpoints written. Runs
    after `_lock_sessions_sql` in the same transaction: its snapshot is taken under the
    session locks, so the status it reads cannot change before commit (every status
    change but the claim takes the session lock). Returns (index, seq) of each stored flush."""
    session, last, pk = table(CollabSession), column(CollabSession, "last_event_id"), column(CollabSession, "id")
    regeneration, status = table(Regeneration), column(Regeneration, "status")
    regeneration_pk = column(Regeneration, "id")
    running = f"'{RegenerationStatus.RUNNING.value}'"
    return (
        # The rows come as one JSON document: psycopg adapts a list parameter element by
        # element in Python, which cost more than the rest of the batch (profiled).
        "WITH batch AS (SELECT * FROM ROWS FROM (json_to_recordset(%s::json)"
        " AS (session_id uuid, regeneration_id uuid, data jsonb, created_at timestamptz, envelope_tail text))"
        " WITH ORDINALITY AS b(session_id, regeneration_id, data, created_at, envelope_tail, idx)),"
        # A correlated subquery, so that each status is one primary-key lookup (as a join,
        # the planner may scan every running regeneration by the status index).
        f" stored AS (SELECT batch.*, row_number() OVER (PARTITION BY session_id ORDER BY idx) AS k FROM batch"
        f" WHERE (SELECT r.{status} FROM {regeneration} r WHERE r.{regeneration_pk} = batch.regeneration_id)"
        f" = {running}),"
        " counts AS (SELECT session_id, count(*) AS n FROM stored GROUP BY session_id),"
        f" bumped AS (UPDATE {session} s SET {last} = s.{last} + counts.n FROM counts"
        f" WHERE s.{pk} = counts.session_id RETURNING s.{pk} AS session_id, s.{last} - counts.n AS base),"
        " numbered AS (SELECT stored.idx, stored.session_id, bumped.base + stored.k AS seq,"
        f" '{EventType.REGENERATION_PROGRESS.value}'::text AS type, stored.data,"
        " stored.created_at, stored.envelope_tail FROM stored JOIN bumped USING (session_id)),"
        f" inserted AS ({event_insert_rows_sql(source='numbered')}),"
        f" checkpoints AS (UPDATE {regeneration} r SET {column(Regeneration, 'content')} = c.content,"
        f" {column(Regeneration, 'progress')} = c.progress"
        " FROM unnest(%s::uuid[], %s::text[], %s::int[]) AS c(id, content, progress)"
        f" WHERE r.{regeneration_pk} = c.id AND c.id IN (SELECT regeneration_id FROM stored))"
        " SELECT idx, seq FROM numbered"
    )


def _append_many_postgresql(flushes: list[Flush]) -> list[bool]:
    pending = []
    for flush in flushes:
        pending.append(event_prepare(session_id=flush.plan.session_id, payload=_progress_payload(flush)))
    due = sorted(
        (f for f in flushes if checkpoint_due(offset=f.offset, length=len(f.delta))),
        key=lambda f: f.plan.regeneration_id,
    )
    stored = [False] * len(flushes)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_lock_sessions_sql(), [sorted({f.plan.session_id for f in flushes})])
            if due:
                cursor.execute(_lock_regenerations_sql(), [[f.plan.regeneration_id for f in due]])
            rows = [
                {
                    "session_id": str(p.session_id),
                    "regeneration_id": f.plan.task_id,
                    "data": p.data,
                    "created_at": p.created_at.isoformat(),
                    "envelope_tail": p.envelope_tail,
                }
                for f, p in zip(flushes, pending, strict=True)
            ]
            params = [
                json.dumps(rows, ensure_ascii=False),
                [f.plan.regeneration_id for f in due],
                [_checkpoint_text(f) for f in due],
                [f.progress for f in due],
            ]
            cursor.execute(_append_many_sql(), params)
            rows = cursor.fetchall()
        for index, _ in rows:
            stored[index - 1] = True
        events_stored([(pending[index - 1], seq) for index, seq in rows])
    return stored


def regeneration_complete(*, plan: RunPlan, content: str) -> bool:
    """running → completed with the final content; publishes `message_regenerated`."""
    payload = events.message_regenerated(message_id=str(plan.message_id), task_id=plan.task_id, content=content)
    return _run_step(
        plan,
        payload,
        status=RegenerationStatus.COMPLETED,
        content=content,
        progress=100,
        finished_at=timezone.now(),
        message_content=content,
    )


def regeneration_fail(*, plan: RunPlan, error: str) -> bool:
    """running → failed with a message fit for users; publishes `regeneration_error`.
    What was streamed before is kept as the content."""
    payload = events.regeneration_error(message_id=str(plan.message_id), task_id=plan.task_id, error=error)
    try:
        with transaction.atomic():
            if not _run_step(plan, payload, status=RegenerationStatus.FAILED, error=error, finished_at=timezone.now()):
                return False
            _keep_content_so_far(
                regeneration_id=plan.regeneration_id, session_id=plan.session_id, message_id=plan.message_id
            )
    except _NotRunning:
        return False
    return True


def regenerations_renew_leases(
    *, regeneration_ids: list[UUID | str], progress: dict[str, int] | None = None
) -> set[str]:
    """Renew the lease of the given runs that are still queued or running (a queued one
    waits for a run slot in this process: CHORUS_REGENERATION_MAX_CONCURRENT), and record
    the `progress` of those it names (by id as a string): flushes do not write the row
    (see regeneration_append_many). Returns the ids (as strings) of those still active,
    so the caller can stop the others."""
    ids = [UUID(str(i)) for i in regeneration_ids]
    if not ids:
        return set()
    progress = progress or {}
    with transaction.atomic():
        # Locked in primary-key order, as message deletion locks them (lock order, step 2):
        # this holds no session lock, so an unordered multi-row UPDATE could close a cycle.
        active = Regeneration.objects.select_for_update().filter(pk__in=ids, status__in=ACTIVE_REGENERATION_STATUSES)
        alive = list(active.order_by("pk").values_list("pk", flat=True))
        now = timezone.now()
        by_progress: dict[int, list[UUID]] = {}
        for pk in alive:
            if str(pk) in progress:
                by_progress.setdefault(progress[str(pk)], []).append(pk)
        changes: dict = {"heartbeat_at": now}
        if by_progress:
            whens = [When(pk__in=pks, then=Value(value)) for value, pks in by_progress.items()]
            changes["progress"] = Case(
                *whens, default=F("progress"), output_field=Regeneration._meta.get_field("progress")
            )
        Regeneration.objects.filter(pk__in=alive).update(**changes)
        return {str(pk) for pk in alive}


def regenerations_reap_stale(*, now=None, lease_seconds: float | None = None, limit: int = 100) -> list[UUID]:
    """Mark failed (with `regeneration_error`) every queued or running regeneration whose
    lease is older than `lease_seconds` (CHORUS_REGENERATION_LEASE_SECONDS): its process
    died or lost the database. Safe to run in every process at once; returns the ids this
    call marked."""
    now = now or timezone.now()
    lease = settings.CHORUS_REGENERATION_LEASE_SECONDS if lease_seconds is None else lease_seconds
    cutoff = now - timedelta(seconds=lease)
    stale = Regeneration.objects.filter(status__in=ACTIVE_REGENERATION_STATUSES, heartbeat_at__lt=cutoff)
    reaped = []
    for regeneration_id, session_id, message_id in stale.values_list("pk", "session_id", "message_id")[:limit]:
        try:
            with transaction.atomic():
                # Lock order: the publish (the session row) first, then the conditional UPDATE.
                event_publish(
                    session_id=session_id,
                    payload=events.regeneration_error(
                        message_id=str(message_id), task_id=str(regeneration_id), error=LOST_ERROR
                    ),
                )
                updated = Regeneration.objects.filter(
                    pk=regeneration_id, status__in=ACTIVE_REGENERATION_STATUSES, heartbeat_at__lt=cutoff
                ).update(status=RegenerationStatus.FAILED, error=LOST_ERROR, finished_at=now)
                if not updated:
                    raise _NotRunning
                _keep_content_so_far(regeneration_id=regeneration_id, session_id=session_id, message_id=message_id)
                count_after_commit(RegenerationStatus.FAILED)
        except (_NotRunning, LookupError):
            continue
        logger.warning("regeneration %s lost its lease (its process died?): marked failed", regeneration_id)
        reaped.append(regeneration_id)
    return reaped


def regenerations_fail_active(*, regeneration_ids: list[UUID | str], error: str) -> list[UUID]:
    """Mark failed (with `regeneration_error`) those of `regeneration_ids` that are still
    queued or running: a server shutting down gives up its runs at once, rather than
    leaving them to the reaper. Returns the ids this call marked."""
    now = timezone.now()
    active = Regeneration.objects.filter(pk__in=regeneration_ids, status__in=ACTIVE_REGENERATION_STATUSES)
    failed = []
    for regeneration_id, session_id, message_id in active.values_list("pk", "session_id", "message_id"):
        with transaction.atomic():
            updated = Regeneration.objects.filter(pk=regeneration_id, status__in=ACTIVE_REGENERATION_STATUSES).update(
                status=RegenerationStatus.FAILED, error=error, finished_at=now
            )
            if not updated:
                continue
            event_publish(
                session_id=session_id,
                payload=events.regeneration_error(
                    message_id=str(message_id), task_id=str(regeneration_id), error=error
                ),
            )
        failed.append(regeneration_id)
    return failed
