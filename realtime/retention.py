"""Retention of the event log. Pruning never touches ids: a session's `last_event_id`
stays, so new events continue the sequence and streams report `history_truncated`.

Every server process schedules `prune_events` itself (CHORUS_PRUNE_INTERVAL_SECONDS; the
hub start hook `hub_started` starts it), one process at a time; no cron is needed.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import random
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from realtime import metrics
from realtime.models import Event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneResult:
    by_age: int
    by_count: int


def events_prune(
    *, session_id: UUID | str | None = None, keep: int | None = None, ttl_seconds: int | None = None
) -> PruneResult:
    """Delete events older than the TTL and all but the newest `keep` of each session."""
    keep = settings.CHORUS_HISTORY_MAX_EVENTS if keep is None else keep
    ttl_seconds = settings.CHORUS_EVENT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    events = Event.objects.all() if session_id is None else Event.objects.filter(session_id=session_id)
    with transaction.atomic():
        cutoff = timezone.now() - dt.timedelta(seconds=ttl_seconds)
        by_age, _ = events.filter(created_at__lt=cutoff).delete()
        by_count = 0
        over = events.values("session_id").annotate(n=Count("id"), newest=Max("seq")).filter(n__gt=keep)
        for row in over:
            deleted, _ = Event.objects.filter(session_id=row["session_id"], seq__lte=row["newest"] - keep).delete()
            by_count += deleted
    return PruneResult(by_age=by_age, by_count=by_count)


# --- scheduled pruning, inside the service (no cron) -----------------------------------
# The advisory lock that lets one process at a time prune (any 64-bit constant of ours).
PRUNE_LOCK_KEY = 0x63686F7275730001
# A scheduled prune may delete much more than one request would: it gets this long per
# statement, whatever CHORUS_DB_STATEMENT_TIMEOUT_MS says for requests.
_PRUNE_STATEMENT_TIMEOUT_MS = 300_000


def events_prune_exclusive() -> PruneResult | None:
    """`events_prune` with the settings' limits, by one process at a time: on PostgreSQL
    it runs only if this transaction gets the advisory lock PRUNE_LOCK_KEY (None if another
    process holds it); on SQLite there is one process anyway."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PRUNE_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    return None
                cursor.execute(f"SET LOCAL statement_timeout = {_PRUNE_STATEMENT_TIMEOUT_MS}")
        return events_prune()


class RetentionScheduler:
    """Runs `events_prune_exclusive` every CHORUS_PRUNE_INTERVAL_SECONDS (0 disables) on
    the process's event loop, in a thread of its own (a long delete never holds up the
    streams' database threads). Every process runs one; the lock makes them take turns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chorus-retention")
        self.runs = 0

    def start(self) -> None:
        if settings.CHORUS_PRUNE_INTERVAL_SECONDS > 0 and (self.task is None or self.task.done()):
            self.task = self.loop.create_task(self._loop(), name="chorus-retention", context=contextvars.Context())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _loop(self) -> None:
        interval = settings.CHORUS_PRUNE_INTERVAL_SECONDS
        # The first run comes after part of an interval, spread so that processes started
        # together do not all try at once.
        await asyncio.sleep(interval * random.uniform(0.2, 1.0))
        prune = database_sync_to_async(events_prune_exclusive, thread_sensitive=False, executor=self._executor)
        while True:
            try:
                result = await prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scheduled pruning failed; retrying in %ss", interval)
            else:
                self.runs += 1
                if result is not None:
                    metrics.EVENTS_PRUNED.labels("age").inc(result.by_age)
                    metrics.EVENTS_PRUNED.labels("count").inc(result.by_count)
                    if result.by_age or result.by_count:
                        logger.info("pruned %d event(s) by age, %d beyond the cap", result.by_age, result.by_count)
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))


_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RetentionScheduler] = weakref.WeakKeyDictionary()


def hub_started(hub) -> None:
    """settings.CHORUS_HUB_START_HOOKS entry: start this process's retention schedule."""
    scheduler = _schedulers.get(hub.loop)
    if scheduler is None:
        scheduler = _schedulers[hub.loop] = RetentionScheduler(hub.loop)
    scheduler.start()
