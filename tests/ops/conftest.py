"""Fixtures for the ops console: a staff client, worker registry rows, an empty cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

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


@pytest.fixture(autouse=True)
def _empty_cache():
    """The events-per-minute chart caches finished minutes; each test starts without."""
    cache.clear()
    yield
    cache.clear()
