"""Reads for the ops console and `GET /api/v1/ops/stats/`.

Cluster-wide figures come from the worker registry (realtime.workers: what every live
process reported in its last heartbeat) and from the database (the event log, the
regenerations), never from the process that happens to render the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django.utils.module_loading import import_string

from ops.models import AuditEntry
from realtime.events import EventType, iso_timestamp
from realtime.models import Event
from realtime.workers import SessionLoad, WorkerInfo, cluster_session_loads, workers_list
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, CollabSession, Regeneration, RegenerationStatus
from sessions_app.regenerations.selectors import regeneration_counts

CHART_MINUTES = 60


# --- workers and sessions, from the registry ------------------------------------------------
def workers_for_console(*, now: dt.datetime | None = None) -> list[WorkerInfo]:
    """Every registered process, alive ones first; a process silent for longer than
    CHORUS_WORKER_STALE_SECONDS is listed as gone (`alive` false) until
    CHORUS_WORKER_FORGET_SECONDS, then dropped (even if no live process deleted its row)."""
    now = now or timezone.now()
    forget_before = now - dt.timedelta(seconds=settings.CHORUS_WORKER_FORGET_SECONDS)
    workers = [w for w in workers_list(now=now) if w.last_seen >= forget_before]
    return sorted(workers, key=lambda w: (not w.alive, w.host, w.pid))


@dataclass(frozen=True, slots=True)
class SessionStat:
    id: str
    title: str
    subscribers: int
    history_size: int
    last_event_id: int
    users: dict[str, int] = field(default_factory=dict)


def session_stats(*, loads: dict[str, SessionLoad]) -> list[SessionStat]:
    """Per session with open streams somewhere in the cluster: its subscribers, stored
    events and newest id, most subscribers first (two queries, whatever the count;
    sessions deleted since the last heartbeats are left out)."""
    keys = []
    for key, load in loads.items():
        if load.streams <= 0:
            continue
        try:
            keys.append(UUID(key))
        except ValueError:
            continue
    if not keys:
        return []
    rows = {
        str(pk): (title, last)
        for pk, title, last in CollabSession.objects.filter(pk__in=keys).values_list("pk", "title", "last_event_id")
    }
    sizes = {
        str(row["session_id"]): row["n"]
        for row in Event.objects.filter(session_id__in=keys).values("session_id").annotate(n=Count("id")).order_by()
    }
    stats = [
        SessionStat(
            id=key,
            title=rows[key][0],
            subscribers=loads[key].streams,
            history_size=sizes.get(key, 0),
            last_event_id=rows[key][1],
            users=dict(sorted(loads[key].users.items())),
        )
        for key in (str(k) for k in keys)
        if key in rows
    ]
    return sorted(stats, key=lambda s: (-s.subscribers, s.title, s.id))


# --- event rates ----------------------------------------------------------------------------
def events_per_minute(*, now: dt.datetime | None = None) -> int:
    """Events published in the last 60 seconds, cluster-wide."""
    now = now or timezone.now()
    return Event.objects.filter(created_at__gt=now - dt.timedelta(seconds=60)).count()


def minute_cache_key(start: dt.datetime) -> str:
    """The cache key of one minute's count; it names the database, so deployments (or
    test runs) that share one Redis never read each other's counts."""
    return f"chorus:ops:epm:{connection.settings_dict['NAME']}:{start.isoformat()}"


@dataclass(frozen=True, slots=True)
class MinuteCount:
    minute: dt.datetime
    count: int


def events_per_minute_series(*, minutes: int = CHART_MINUTES, now: dt.datetime | None = None) -> list[MinuteCount]:
    """Events published in each of the last `minutes` minutes (the current one last and
    still filling). A finished minute no longer changes, so its count is cached (for two
    hours): a console polling every few seconds reads only the newest minutes. (The
    minute just ended is read again: an event is stamped when published and may commit
    a little later.)"""
    now = now or timezone.now()
    current = now.replace(second=0, microsecond=0)
    starts = [current - dt.timedelta(minutes=i) for i in range(minutes - 1, -1, -1)]
    keys = {start: minute_cache_key(start) for start in starts[:-2]}
    known = cache.get_many(list(keys.values()))
    missing = [start for start in starts[:-2] if keys[start] not in known]
    counts: dict[dt.datetime, int] = {}
    read_from = min(missing) if missing else starts[-2]
    rows = (
        Event.objects.filter(created_at__gte=read_from, created_at__lt=current + dt.timedelta(minutes=1))
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        counts[row["minute"].astimezone(dt.UTC)] = row["n"]
    cache.set_many({keys[start]: counts.get(start, 0) for start in missing}, timeout=2 * 3600)
    series = []
    for start in starts:
        if start in keys and keys[start] in known:
            series.append(MinuteCount(start, known[keys[start]]))
        else:
            series.append(MinuteCount(start, counts.get(start, 0)))
    return series


# --- regenerations --------------------------------------------------------------------------
def regenerations_active(*, limit: int = 50, session_id: UUID | None = None) -> list[Regeneration]:
    """Queued and running regenerations, running first, oldest first within each."""
    qs = Regeneration.objects.filter(status__in=ACTIVE_REGENERATION_STATUSES).select_related("session", "requested_by")
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    return list(qs.order_by("-status", "created_at", "id")[:limit])  # 'running' > 'queued'


def regenerations_for_session(*, session: CollabSession, limit: int = 20) -> list[Regeneration]:
    return list(session.regenerations.select_related("requested_by").order_by("-created_at", "id")[:limit])


# --- recent errors: several sources, one list -----------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One error for the console. `ref` identifies the failed thing across sources (a
    regeneration's task id), so that the same failure seen twice is listed once."""

    at: dt.datetime
    source: str
    message: str
    session_id: str | None = None
    session_title: str | None = None
    ref: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": iso_timestamp(self.at),
            "source": self.source,
            "message": self.message,
            "sessionId": self.session_id,
            "sessionTitle": self.session_title,
        }


ErrorSource = Callable[..., Iterable[ErrorItem]]


def errors_failed_regenerations(*, since: dt.datetime, limit: int) -> list[ErrorItem]:
    failed = (
        Regeneration.objects.filter(status=RegenerationStatus.FAILED, finished_at__gte=since)
        .select_related("session")
        .order_by("-finished_at")[:limit]
    )
    return [
        ErrorItem(
            at=r.finished_at,
            source="regeneration",
            message=r.error or "failed",
            session_id=str(r.session_id),
            session_title=r.session.title,
            ref=str(r.pk),
        )
        for r in failed
    ]


def errors_regeneration_events(*, since: dt.datetime, limit: int) -> list[ErrorItem]:
    """`regeneration_error` events: the same failures as above while the regeneration
    rows exist, and the only trace of those whose rows are gone or never existed."""
    found = (
        Event.objects.filter(type=EventType.REGENERATION_ERROR, created_at__gte=since)
        .select_related("session")
        .order_by("-created_at")[:limit]
    )
    return [
        ErrorItem(
            at=e.created_at,
            source="regeneration_error event",
            message=str(e.data.get("error", "")),
            session_id=str(e.session_id),
            session_title=e.session.title,
            ref=str(e.data.get("taskId")) if e.data.get("taskId") else None,
        )
        for e in found
    ]


def errors_failed_completions(*, since: dt.datetime, limit: int) -> list[ErrorItem]:
    """Failed calls of the OpenAI-compatible endpoint, from its generation log (the
    `completions` app); nothing when that app is not installed."""
    try:
        log = apps.get_model("completions", "GenerationLog")
    except LookupError:
        return []
    failed = log.objects.filter(status="failed", created_at__gte=since).select_related("session", "user")
    return [
        ErrorItem(
            at=row.created_at,
            source="completion",
            message=f"{row.model}: {row.error or 'failed'}" + (f" ({row.user.get_username()})" if row.user else ""),
            session_id=str(row.session_id) if row.session_id else None,
            session_title=row.session.title if row.session_id else None,
            ref=None,
        )
        for row in failed.order_by("-created_at")[:limit]
    ]


def error_sources() -> list[ErrorSource]:
    """The configured sources (settings.CHORUS_OPS_ERROR_SOURCES, dotted paths)."""
    return [import_string(path) for path in settings.CHORUS_OPS_ERROR_SOURCES]


def recent_errors(
    *, since: dt.datetime, limit: int = 20, sources: Iterable[ErrorSource] | None = None
) -> list[ErrorItem]:
    """The newest errors since `since` from every source, newest first, at most `limit`.
    A source is a function `(since=, limit=) -> [ErrorItem]`; an item whose `ref` an
    earlier source already gave is dropped (a failed regeneration and its event)."""
    items: list[ErrorItem] = []
    seen: set[str] = set()
    for source in sources if sources is not None else error_sources():
        for item in source(since=since, limit=limit):
            if item.ref is not None:
                if item.ref in seen:
                    continue
                seen.add(item.ref)
            items.append(item)
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]


# --- the whole picture ----------------------------------------------------------------------
ERRORS_COUNT_CAP = 1000


@dataclass(frozen=True, slots=True)
class Overview:
    now: dt.datetime
    workers: list[WorkerInfo]
    sessions: list[SessionStat]
    events_per_minute: int
    series: list[MinuteCount]
    regenerations: dict[str, int]
    active: list[Regeneration]
    errors: list[ErrorItem]
    errors_last_hour: int

    @property
    def alive_workers(self) -> list[WorkerInfo]:
        return [w for w in self.workers if w.alive]

    @property
    def subscribers(self) -> int:
        return sum(s.subscribers for s in self.sessions)

    @property
    def chart_max(self) -> int:
        return max((m.count for m in self.series), default=0)


def ops_overview(*, now: dt.datetime | None = None) -> Overview:
    """Everything the console's first screen shows."""
    now = now or timezone.now()
    workers = workers_for_console(now=now)
    loads = cluster_session_loads(workers=workers)
    hour_ago = now - dt.timedelta(hours=1)
    errors_hour = recent_errors(since=hour_ago, limit=ERRORS_COUNT_CAP)
    return Overview(
        now=now,
        workers=workers,
        sessions=session_stats(loads=loads),
        events_per_minute=events_per_minute(now=now),
        series=events_per_minute_series(now=now),
        regenerations=regeneration_counts(),
        active=regenerations_active(),
        errors=errors_hour[:20] or recent_errors(since=now - dt.timedelta(days=1), limit=20),
        errors_last_hour=len(errors_hour),
    )


def ops_stats(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """CONTRACT §6's `GET /api/v1/ops/stats/`: cluster-wide, from live workers only."""
    now = now or timezone.now()
    workers = [w for w in workers_list(now=now) if w.alive]
    stats = session_stats(loads=cluster_session_loads(workers=workers))
    counts = regeneration_counts()
    return {
        "sessions": len(stats),
        "subscribers": sum(s.subscribers for s in stats),
        "workers": [
            {
                "id": w.id,
                "pid": w.pid,
                "host": w.host,
                "connections": w.connections,
                "rssMb": w.rss_mb,
                "lastSeen": iso_timestamp(w.last_seen),
            }
            for w in workers
        ],
        "sessionStats": {
            s.id: {"subscribers": s.subscribers, "historySize": s.history_size, "lastEventId": s.last_event_id}
            for s in stats
        },
        "eventsPerMinute": events_per_minute(now=now),
        "regenerations": {
            "running": counts[RegenerationStatus.RUNNING],
            "queued": counts[RegenerationStatus.QUEUED],
        },
    }


# --- sessions: search, one session's log, the audit log --------------------------------------
def sessions_search(*, query: str = "") -> QuerySet[CollabSession]:
    """Every session (staff see all), newest first, matching `query` in the
    title, the owner's or a member's username, or the id; with member counts."""
    qs = CollabSession.objects.select_related("owner").annotate(member_count=Count("memberships", distinct=True))
    query = query.strip()
    if query:
        match = Q(title__icontains=query) | Q(owner__username__icontains=query)
        match |= Q(pk__in=CollabSession.objects.filter(memberships__user__username__icontains=query).values("pk"))
        try:
            match |= Q(pk=UUID(query))
        except ValueError:
            pass
        qs = qs.filter(match)
    return qs.order_by("-created_at", "id")


def session_events(*, session: CollabSession, event_type: str = "") -> QuerySet[Event]:
    """The session's stored events, newest first, optionally of one type."""
    qs = Event.objects.filter(session_id=session.pk)
    if event_type:
        qs = qs.filter(type=event_type)
    return qs.order_by("-seq")


def audit_entries(*, session_id: UUID | None = None) -> QuerySet[AuditEntry]:
    qs = AuditEntry.objects.all()
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    return qs.order_by("-created_at", "-id")
