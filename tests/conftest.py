"""Shared fixtures: users, sessions, API clients, the in-process ASGI app, and the real
services (PostgreSQL, Redis) that cross-process tests need."""

from __future__ import annotations

import copy
import os
import socket
import uuid
from urllib.parse import urlparse

import pytest
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from config.cache import FailOpenRedisCache
from sessions_app import services
from sessions_app.models import Role

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("CHORUS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CHORUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> str:
    """The service's URL; a missing service skips the test, but fails it under CI=true,
    so CI can never pass by silently skipping what needs PostgreSQL or Redis."""
    if not _reachable(url):
        message = f"{name} is not reachable at {url}"
        if IN_CI:
            pytest.fail(message + " (CI=true: service-backed tests must run)")
        pytest.skip(message)
    return url


def pytest_configure(config) -> None:
    from django.conf import settings

    # database_sync_to_async threads would otherwise keep connections open past the test
    # run, and PostgreSQL refuses to drop a test database that is still in use.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Likewise a pool would keep connections open (the server processes of the
    # cross-process tests use it; the in-process tests need not).
    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)
    # The default PBKDF2 hasher costs ~0.3 s per user created; tests create hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # In-process hubs come and go with each test's event loop; their heartbeats would write
    # to databases that tests do not expect to be written. Registry tests turn it on.
    settings.CHORUS_WORKER_HEARTBEAT_SECONDS = 0


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_service("PostgreSQL", POSTGRES_URL)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("Redis", REDIS_URL)


@pytest.fixture(autouse=True)
def _fresh_channel_layers():
    """Each test runs on its own event loop: give it fresh layer objects."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _fresh_cache_namespace(settings):
    """Throttle counters (sign-in, regenerations) live in the default cache: each test gets
    an empty namespace of its own (a key prefix), so no test is throttled by another's
    sign-ins, and the Redis that other runs share is never flushed for it."""
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"chorus-test-{uuid.uuid4().hex}"
    settings.CACHES = caches  # Django rebuilds its cache handlers on this change
    # A Redis error in an earlier test (a fault test) makes the cache step aside for a few
    # seconds (config.cache): throttles would then let everything through here.
    FailOpenRedisCache._skip_until = 0.0


@pytest.fixture
def make_user(db):
    def make(username: str, *, staff: bool = False, password: str = "pw-for-tests"):
        return get_user_model().objects.create_user(username=username, password=password, is_staff=staff)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def outsider(make_user):
    return make_user("mallory")


@pytest.fixture
def staff_user(make_user):
    return make_user("operator", staff=True)


@pytest.fixture
def collab(alice, bob, carol):
    """A session owned by alice, with bob as editor and carol as viewer."""
    session = services.session_create(owner=alice, title="Planning")
    services.member_add(session=session, username="bob", role=Role.EDITOR)
    services.member_add(session=session, username="carol", role=Role.VIEWER)
    session.refresh_from_db()
    return session


def token_for(user) -> str:
    """A new API token (knox) for `user`: tokens are stored hashed, so each call makes one."""
    from sessions_app.tokens import token_issue

    return token_issue(user=user)[1]


@pytest.fixture
def api():
    """api(user) -> an APIClient authenticated with that user's token (None: anonymous)."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


@pytest.fixture
def asgi_app():
    from config.asgi import application

    return application
