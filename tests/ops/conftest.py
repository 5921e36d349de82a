"""Fixtures for the ops console: a staff client, worker registry rows, an empty cache."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from ops.selectors import minute_cache_key
from tests.support.registry import worker_row


@pytest.fixture
def staff_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_worker(db):
    """make_worker(pid, sessions={sid: (streams, {user: n})}, age=seconds since its heartbeat)."""
    return worker_row


def _forget_minutes() -> None:
    # Only the chart's keys: cache.clear() would flush a Redis database that other test
    # runs (throttle counters) may be using at the same time.
    now = timezone.now().replace(second=0, microsecond=0)
    cache.delete_many([minute_cache_key(now - dt.timedelta(minutes=i)) for i in range(-2, 180)])


@pytest.fixture(autouse=True)
def _no_cached_minutes():
    """The events-per-minute chart caches finished minutes; each test starts without."""
    _forget_minutes()
    yield
    _forget_minutes()
