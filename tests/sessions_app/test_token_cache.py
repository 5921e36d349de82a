"""The token cache (sessions_app.authentication): a token this process verified lately
costs no query, and revoking it, or changing its user's rights, takes effect at once."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken
from rest_framework.test import APIClient

from sessions_app.authentication import TokenCache, token_cache, token_lookup
from sessions_app.tokens import token_issue, tokens_revoke_all

pytestmark = pytest.mark.django_db

SESSIONS = "/api/v1/sessions/"


@pytest.fixture(autouse=True)
def empty_cache():
    token_cache.clear()
    yield
    token_cache.clear()


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw")


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def token_queries(client: APIClient) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(SESSIONS).status_code == 200
    return sum(AuthToken._meta.db_table in query["sql"] for query in queries.captured_queries)


def test_a_token_seen_lately_costs_no_query(alice):
    client = client_with(token_issue(user=alice)[1])
    assert token_queries(client) == 1
    assert token_queries(client) == 0


def test_the_cache_can_be_turned_off(alice, settings):
    settings.CHORUS_TOKEN_CACHE_SECONDS = 0
    client = client_with(token_issue(user=alice)[1])
    assert token_queries(client) == 1
    assert token_queries(client) == 1


def test_a_cached_token_is_refused_after_logout(alice):
    client = client_with(token_issue(user=alice)[1])
    assert token_queries(client) == 1  # cached now
    assert client.post("/api/v1/auth/logout/").status_code == 204
    assert client.get(SESSIONS).status_code == 401


def test_a_cached_token_is_refused_after_logout_all_from_another_token(alice):
    first, second = client_with(token_issue(user=alice)[1]), client_with(token_issue(user=alice)[1])
    assert first.get(SESSIONS).status_code == 200
    assert second.post("/api/v1/auth/logout-all/").status_code == 204
    assert first.get(SESSIONS).status_code == 401


def test_a_cached_token_of_a_deactivated_user_is_refused(alice):
    client = client_with(token_issue(user=alice)[1])
    assert client.get(SESSIONS).status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get(SESSIONS).status_code == 401


def test_staff_status_taken_away_is_seen_at_once(alice):
    alice.is_staff = True
    alice.save()
    token = token_issue(user=alice)[1]
    assert token_lookup(token).user.is_staff
    alice.is_staff = False
    alice.save(update_fields=["is_staff"])
    assert not token_lookup(token).user.is_staff


def test_each_request_gets_its_own_copy(alice):
    token = token_issue(user=alice)[1]
    first = token_lookup(token)
    first.user.username = "changed by a view"
    assert token_lookup(token).user.username == "alice"


def test_a_row_read_before_a_revocation_is_not_kept(alice):
    cache = TokenCache()
    token, _ = token_issue(user=alice)
    epoch = cache.epoch  # a lookup reads the row ...
    cache.forget_users(frozenset({alice.pk}))  # ... the token is revoked meanwhile ...
    cache.put("digest", token, epoch=epoch)  # ... and the stale row would go in
    assert cache.get("digest") is None


def test_the_oldest_entries_go_first_when_full(alice):
    cache = TokenCache(max_entries=2)
    token, _ = token_issue(user=alice)
    for digest in ("a", "b", "c"):
        cache.put(digest, token, epoch=cache.epoch)
    assert cache.get("a") is None and cache.get("b") is token and cache.get("c") is token


def test_revoking_through_the_service_empties_the_cache(alice):
    client = client_with(token_issue(user=alice)[1])
    assert client.get(SESSIONS).status_code == 200
    tokens_revoke_all(user=alice)
    assert client.get(SESSIONS).status_code == 401
