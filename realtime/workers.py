"""The worker registry: every server process says, every few seconds, that it is alive and
what it serves (pid, host, memory, open streams per session and who holds them).

Cluster-wide figures (the ops console, `GET /api/v1/ops/stats/`, presence snapshots) are
read from here, never from the one process that renders a page. It lives in the database
because the database is the one thing every deployment has, `make run` included (SQLite,
one process), and a heartbeat is one small UPSERT per process every
CHORUS_WORKER_HEARTBEAT_SECONDS: a thousand processes would write a few hundred rows a
second, far below what the event log writes.

A process that stops heartbeating is *gone* once its row is older than
CHORUS_WORKER_STALE_SECONDS (its streams and presence no longer count), and its row is
deleted once older than CHORUS_WORKER_FORGET_SECONDS. A process that shuts down cleanly
deletes its own row at once.

Each hub runs `heartbeat_loop` (started with the hub; a heartbeat interval of 0 turns the
registry off, as the in-process tests do).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from realtime.models import Worker

_identity: tuple[int, str] | None = None
_started_at: dt.datetime | None = None


def process_identity() -> str:
    """'host:pid:nonce' of this process (the nonce tells apart a restarted pid)."""
    global _identity, _started_at
    if _identity is None or _identity[0] != os.getpid():
        _identity = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
        _started_at = timezone.now()
    return _identity[1]


def process_started_at() -> dt.datetime:
    process_identity()
    assert _started_at is not None
    return _started_at


def rss_mb() -> float:
    """Resident memory of this process in MiB (current, from /proc; peak where /proc is absent)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass(frozen=True, slots=True)
class SessionLoad:
    """What one process serves of one session: open streams and, per username, how many;
    since when each user has had one open (epoch seconds), and the version of this
    process's presence for the session (realtime.presence: it only grows)."""

    streams: int
    users: dict[str, int] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    version: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"streams": self.streams, "users": self.users, "since": self.since, "v": self.version}


def worker_heartbeat(*, sessions: dict[str, SessionLoad], connections: int) -> list[WorkerInfo]:
    """Record that this process is alive and what it serves (one UPSERT), forget processes
    silent for longer than CHORUS_WORKER_FORGET_SECONDS, and return the registry as it now
    is (`workers_list`). Runs in a thread."""
    now = timezone.now()
    identity = process_identity()
    host, pid, _ = identity.rsplit(":", 2)
    Worker.objects.update_or_create(
        id=identity,
        defaults={
            "host": host,
            "pid": int(pid),
            "started_at": process_started_at(),
            "last_seen": now,
            "connections": connections,
            "rss_mb": rss_mb(),
            "sessions": {key: load.as_json() for key, load in sessions.items()},
        },
    )
    forget_before = now - dt.timedelta(seconds=settings.CHORUS_WORKER_FORGET_SECONDS)
    Worker.objects.filter(last_seen__lt=forget_before).delete()
    return workers_list(now=now)


def worker_unregister() -> None:
    """Delete this process's row (clean shutdown). Runs in a thread."""
    Worker.objects.filter(id=process_identity()).delete()


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    started_at: dt.datetime
    last_seen: dt.datetime
    connections: int
    rss_mb: float
    alive: bool
    sessions: dict[str, SessionLoad]


def _load(raw: Any) -> dict[str, SessionLoad]:
    loads = {}
    for key, value in (raw or {}).items():
        if isinstance(value, dict):
            users = {str(u): int(n) for u, n in (value.get("users") or {}).items()}
            since = {str(u): float(t) for u, t in (value.get("since") or {}).items()}
            loads[str(key)] = SessionLoad(
                streams=int(value.get("streams", 0)), users=users, since=since, version=int(value.get("v", 0))
            )
    return loads


def workers_list(*, now: dt.datetime | None = None) -> list[WorkerInfo]:
    """Every registered process, newest first; `alive` is false once it has been silent for
    longer than CHORUS_WORKER_STALE_SECONDS."""
    now = now or timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.CHORUS_WORKER_STALE_SECONDS)
    return [
        WorkerInfo(
            id=w.id,
            host=w.host,
            pid=w.pid,
            started_at=w.started_at,
            last_seen=w.last_seen,
            connections=w.connections,
            rss_mb=w.rss_mb,
            alive=w.last_seen >= stale_before,
            sessions=_load(w.sessions),
        )
        for w in Worker.objects.order_by("-started_at", "id")
    ]


def cluster_session_loads(*, workers: list[WorkerInfo] | None = None) -> dict[str, SessionLoad]:
    """Per session, the streams and users of every live process added up (a user's
    `since` is their earliest; `version` means nothing across processes and is 0)."""
    totals: dict[str, SessionLoad] = {}
    for worker in workers if workers is not None else workers_list():
        if not worker.alive:
            continue
        for key, load in worker.sessions.items():
            current = totals.get(key) or SessionLoad(streams=0)
            users, since = dict(current.users), dict(current.since)
            for username, count in load.users.items():
                users[username] = users.get(username, 0) + count
            for username, moment in load.since.items():
                since[username] = min(moment, since.get(username, moment))
            totals[key] = SessionLoad(streams=current.streams + load.streams, users=users, since=since)
    return totals
