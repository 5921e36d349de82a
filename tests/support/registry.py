"""Rows of the worker registry as a process's heartbeat would write them."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from realtime.models import Worker


def worker_row(pid: int, *, host: str = "node-a", sessions=None, age: float = 1.0, rss: float = 80.5) -> Worker:
    """A registered process `host:pid`, last heard `age` seconds ago, serving
    `sessions` = {session id: (streams, {username: streams})}."""
    now = timezone.now()
    loads = {str(key): {"streams": streams, "users": users} for key, (streams, users) in (sessions or {}).items()}
    return Worker.objects.create(
        id=f"{host}:{pid}:abc{pid}",
        host=host,
        pid=pid,
        started_at=now - dt.timedelta(hours=2),
        last_seen=now - dt.timedelta(seconds=age),
        connections=sum(streams for streams, _ in (sessions or {}).values()),
        rss_mb=rss,
        sessions=loads,
    )
