"""The REST operations: paths, bodies, pagination, tokens and error mapping, against a
scripted server (httpx.MockTransport); the sync and the async client alike."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from email.utils import format_datetime

import httpx
import pytest

from chorus_client import (
    AsyncClient,
    ChorusError,
    Client,
    ConnectionFailed,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
)
from chorus_client.errors import parse_retry_after
from tests.client.fake_server import SESSION


@pytest.fixture(params=["sync", "async"])
def call(request):
    """call(handler, operation, **credentials): run `operation(client)` on a client of the
    parametrized flavor whose transport is `handler`; returns its result or raises."""

    def run(handler, operation, **credentials):
        options = {"transport": httpx.MockTransport(handler), **(credentials or {"token": "t0"})}
        if request.param == "sync":
            with Client("http://chorus.test", **options) as client:
                return operation(client)

        async def main():
            async with AsyncClient("http://chorus.test", **options) as client:
                return await operation(client)

        return asyncio.run(main())

    return run


def test_operations_use_the_contracts_paths_and_bodies(call):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body, request.headers["authorization"]))
        return httpx.Response(200, json={"ok": True})

    def operations(client):
        return [
            client.create_session("Plans"),
            client.session(SESSION),
            client.post_message(SESSION, "hello"),
            client.post_message(SESSION, "answer me", reply=True),
            client.regenerate(SESSION, "m1"),
            client.regenerate(SESSION, "m1", query="shorter"),
            client.regeneration("r1"),
            client.cancel("r1"),
            client.stream_ticket(SESSION),
        ]

    async def async_operations(client):
        return [await step for step in operations(client)]

    results = call(handler, lambda c: async_operations(c) if isinstance(c, AsyncClient) else operations(c))
    assert results == [{"ok": True}] * 9
    assert seen == [
        ("POST", "/api/v1/sessions/", {"title": "Plans"}, "Token t0"),
        ("GET", f"/api/v1/sessions/{SESSION}/", None, "Token t0"),
        ("POST", f"/api/v1/sessions/{SESSION}/messages/", {"content": "hello", "reply": False}, "Token t0"),
        ("POST", f"/api/v1/sessions/{SESSION}/messages/", {"content": "answer me", "reply": True}, "Token t0"),
        ("POST", "/api/v1/chat_actions/regenerate", {"sessionId": SESSION, "messageId": "m1"}, "Token t0"),
        (
            "POST",
            "/api/v1/chat_actions/regenerate",
            {"sessionId": SESSION, "messageId": "m1", "query": "shorter"},
            "Token t0",
        ),
        ("GET", "/api/v1/regenerations/r1/", None, "Token t0"),
        ("POST", "/api/v1/regenerations/r1/cancel/", None, "Token t0"),
        ("POST", f"/api/v1/sessions/{SESSION}/stream-ticket/", None, "Token t0"),
    ]


def test_messages_follow_every_page_and_keep_the_first_pages_last_event_id(call):
    pages = {
        None: {
            "count": 3,
            "next": "https://proxy.example/api/v1/x/?page=2",
            "results": [{"id": "a"}],
            "lastEventId": 9,
        },
        "2": {
            "count": 3,
            "next": "https://proxy.example/api/v1/x/?page=3",
            "results": [{"id": "b"}],
            "lastEventId": 10,
        },
        "3": {"count": 3, "next": None, "results": [{"id": "c"}], "lastEventId": 11},
    }
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(str(request.url))
        return httpx.Response(200, json=pages[request.url.params.get("page")])

    messages = call(handler, lambda client: client.messages(SESSION))
    assert [m["id"] for m in messages] == ["a", "b", "c"]
    assert messages.last_event_id == 9
    # `next` names a host the client never talks to: only its query is used.
    base = f"http://chorus.test/api/v1/sessions/{SESSION}/messages/"
    assert paths == [base, base + "?page=2", base + "?page=3"]


def test_events_is_the_polling_fallback(call):
    envelope = {"id": 4, "type": "system", "sessionId": SESSION, "timestamp": "2026-11-21T10:00:00.123Z", "data": {}}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["after"] == "3" and request.url.params["limit"] == "2"
        return httpx.Response(200, json={"events": [envelope], "lastId": 4, "truncated": True})

    page = call(handler, lambda client: client.events(SESSION, after=3, limit=2))
    assert [e.id for e in page.events] == [4] and page.last_id == 4 and page.truncated is True


@pytest.mark.parametrize(
    ("status", "kind"), [(400, ChorusError), (401, Unauthorized), (403, Forbidden), (404, NotFound), (500, ChorusError)]
)
def test_errors_carry_status_and_detail(call, status, kind):
    def handler(request):
        return httpx.Response(status, json={"detail": f"because {status}"})

    with pytest.raises(kind) as raised:
        call(handler, lambda client: client.session(SESSION))
    assert raised.value.status == status and raised.value.detail == f"because {status}"


def test_a_429_carries_retry_after(call):
    def handler(request):
        return httpx.Response(429, json={"detail": "Request was throttled."}, headers={"Retry-After": "12"})

    with pytest.raises(RateLimited) as raised:
        call(handler, lambda client: client.regenerate(SESSION, "m1"))
    assert raised.value.status == 429 and raised.value.retry_after == 12


def test_a_non_json_error_still_has_a_detail(call):
    def handler(request):
        return httpx.Response(502, text="<html>Bad gateway</html>")

    with pytest.raises(ChorusError) as raised:
        call(handler, lambda client: client.sessions())
    assert raised.value.status == 502 and "Bad gateway" in raised.value.detail


def test_an_unreachable_server_is_connection_failed(call):
    def handler(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(ConnectionFailed) as raised:
        call(handler, lambda client: client.sessions())
    assert raised.value.status is None


def test_logs_in_on_first_use_and_again_after_a_401(call):
    logins = []
    valid = set()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/auth/token/":
            assert "authorization" not in request.headers
            assert json.loads(request.content) == {"username": "alice", "password": "pw"}
            logins.append(token := f"t{len(logins) + 1}")
            valid.clear()
            valid.add(token)
            return httpx.Response(200, json={"token": token, "expiresAt": "2099-01-01T00:00:00Z"})
        if request.headers.get("authorization", "").removeprefix("Token ") not in valid:
            return httpx.Response(401, json={"detail": "Invalid token."})
        return httpx.Response(200, json={"count": 0, "next": None, "results": []})

    def twice(client):
        first = client.sessions()
        valid.clear()  # the token is revoked or expired meanwhile
        return first, client.sessions()

    async def twice_async(client):
        first = await client.sessions()
        valid.clear()
        return first, await client.sessions()

    result = call(
        handler, lambda c: twice_async(c) if isinstance(c, AsyncClient) else twice(c), username="alice", password="pw"
    )
    assert result == ([], []) and logins == ["t1", "t2"]


def test_login_reads_expires_at_and_copes_without_it():
    answers = [
        httpx.Response(200, json={"token": "new", "expiresAt": "2026-12-30T07:00:00Z"}),
        httpx.Response(200, json={"token": "old-server"}),
    ]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    with Client("http://chorus.test", username="a", password="b", transport=transport) as client:
        assert client.login() == "new" and client.token == "new"
        assert client.expires_at == dt.datetime(2026, 12, 30, 7, tzinfo=dt.UTC)
        assert client.login() == "old-server" and client.expires_at is None


def test_expires_at_that_is_naive_or_unreadable_does_not_break_login():
    answers = [
        httpx.Response(200, json={"token": "a", "expiresAt": "2026-12-30T07:00:00"}),
        httpx.Response(200, json={"token": "b", "expiresAt": "next tuesday"}),
    ]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    with Client("http://chorus.test", username="a", password="b", transport=transport) as client:
        client.login()
        assert client.expires_at == dt.datetime(2026, 12, 30, 7, tzinfo=dt.UTC)
        client.login()
        assert client.token == "b" and client.expires_at is None


def test_logout_revokes_the_token_and_forgets_it(call):
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        return httpx.Response(204)

    def sync_logout(client):
        client.logout()
        return client.token

    async def async_logout(client):
        await client.logout()
        return client.token

    token_after = call(handler, lambda c: async_logout(c) if isinstance(c, AsyncClient) else sync_logout(c))
    assert seen == [("POST", "/api/v1/auth/logout/", "Token t0")]
    assert token_after is None


def test_a_token_about_to_expire_is_renewed_before_the_request():
    tokens = []

    def handler(request):
        if request.url.path == "/api/v1/auth/token/":
            tokens.append(f"t{len(tokens) + 1}")
            # The first token expires in 30 s: inside the renewal margin.
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30 if len(tokens) == 1 else 3600)
            return httpx.Response(200, json={"token": tokens[-1], "expiresAt": expires.isoformat()})
        return httpx.Response(200, json={"seen": request.headers["authorization"]})

    with Client("http://chorus.test", username="a", password="b", transport=httpx.MockTransport(handler)) as client:
        assert client.session(SESSION) == {"seen": "Token t1"}
        assert client.session(SESSION) == {"seen": "Token t2"}  # t1 was about to expire: renewed first
        assert client.session(SESSION) == {"seen": "Token t2"}
    assert tokens == ["t1", "t2"]


def test_retry_after_accepts_seconds_and_http_dates():
    now = dt.datetime(2026, 11, 30, 7, 0, tzinfo=dt.UTC)
    assert parse_retry_after("5") == 5
    assert parse_retry_after(format_datetime(now + dt.timedelta(seconds=90), usegmt=True), now=now) == 90
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
