"""Fixtures for the ops console: staff and member clients, worker registry rows."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone

from realtime.models import Worker


@pytest.fixture
def staff_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_worker(db):
    """make_worker(pid, sessions={sid: (streams, {user: n})}, age=seconds since its heartbeat)."""

    def make(pid: int, *, host: str = "node-a", sessions=None, age: float = 1.0, rss: float = 80.5) -> Worker:
        now = timezone.now()
        loads = {
            str(key): {"streams": streams, "users": users} for key, (streams, users) in (sessions or {}).items()
        }
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

    return make


class ElementCollector(HTMLParser):
    """Every start tag of a page, with its attributes (html.parser: what a browser would parse)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str, tag: str) -> list[dict]:
    parser = ElementCollector()
    parser.feed(html)
    return [attrs for name, attrs in parser.tags if name == tag]


@pytest.fixture(autouse=True)
def _empty_cache():
    """The events-per-minute chart caches finished minutes; each test starts without."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
