"""Streams that must not linger or mislead: one ended while it was opening, a catch-up
page past a pruned gap, refusals that cost no subscription, and the per-user cap."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from channels.db import database_sync_to_async

import realtime.stream as stream_module
from realtime.hub import Hub, current_hub
from realtime.models import Event
from realtime.retention import events_prune
from realtime.tickets import ticket_issue
from sessions_app import services
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]


def stream_path(session) -> str:
    return f"/sse/sessions/{session.pk}/"


@database_sync_to_async
def auth(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


post = database_sync_to_async(services.message_create)


async def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_stream_ended_while_opening_ends_instead_of_lingering(asgi_app, collab, bob, monkeypatch, settings):
    """The session is deleted after the stream's opening query and before its headers:
    the stream must still end (with `access_revoked`), not stay open detached from the
    hub, with no keepalive and no deadline."""
    settings.CHORUS_KEEPALIVE_SECONDS = 0.05
    queried, resume = threading.Event(), threading.Event()
    real_open = stream_module.stream_open

    def open_then_wait(**kwargs):
        start = real_open(**kwargs)  # bob may read: the answer is in
        queried.set()
        resume.wait(10)
        return start

    monkeypatch.setattr(stream_module, "stream_open", open_then_wait)
    stream = ASGIStream(asgi_app, stream_path(collab), headers=await auth(bob))
    await stream._incoming.put({"type": "http.request", "body": b"", "more_body": False})
    stream.task = asyncio.ensure_future(asgi_app(stream.scope, stream._receive, stream._send))
    try:
        assert await asyncio.to_thread(queried.wait, 5)
        await database_sync_to_async(services.session_delete)(session=collab)
        hub = current_hub()
        await wait_for(lambda: hub.stream_count() == 0, "the hub revoked the opening stream")
        resume.set()
        await asyncio.wait_for(stream.finished.wait(), 5)
        assert stream.status == 200
        assert b"event: access_revoked" in stream.body
        assert b"event: connection" not in stream.body
    finally:
        resume.set()
        await stream.disconnect()


async def test_a_catch_up_page_past_a_pruned_gap_says_history_truncated(
    asgi_app, collab, alice, bob, monkeypatch, settings
):
    settings.CHORUS_REPLAY_PAGE_SIZE = 3
    for i in range(10):
        await post(session=collab, author=bob, content=f"m{i}")
    newest = collab.last_event_id + 10  # 13
    real_rows = stream_module.replay_rows
    pruned = []

    def prune_then_read(**kwargs):
        if not pruned:  # the first catch-up page: retention runs just before it
            pruned.append(events_prune(session_id=collab.pk, keep=5, ttl_seconds=10**9))
        return real_rows(**kwargs)

    monkeypatch.setattr(stream_module, "replay_rows", prune_then_read)
    headers = {**(await auth(alice)), "Last-Event-ID": "0"}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as s:
        await s.next_event()  # connection
        frames = []
        while not frames or frames[-1].id != newest:
            frame = await s.next_event()
            assert frame is not None
            frames.append(frame)
    assert pruned and pruned[0].by_count == newest - 5
    assert [f.id for f in frames[:3]] == [1, 2, 3]
    assert frames[3].event == "history_truncated" and frames[3].id is None
    assert frames[3].json == {"requested": 3, "oldestAvailable": newest - 4}
    assert [f.id for f in frames[4:]] == list(range(newest - 4, newest + 1))
    assert await database_sync_to_async(Event.objects.filter(session=collab).count)() == 5


@pytest.fixture
def attaches(monkeypatch) -> list:
    """Every Hub.attach call (a group subscription and then a query each)."""
    calls = []
    real_attach = Hub.attach

    async def spy(self, stream):
        calls.append(stream.session_key)
        await real_attach(self, stream)

    monkeypatch.setattr(Hub, "attach", spy)
    return calls


async def refused(app, path, **kwargs) -> tuple[int, dict, dict]:
    async with ASGIStream(app, path, **kwargs) as s:
        await asyncio.wait_for(s.finished.wait(), 5)
        assert s.headers["content-type"] == "application/json"
        return s.status, json.loads(s.body), s.headers


class _Later:
    """django.core.signing's clock, an hour ahead: every ticket has expired."""

    @staticmethod
    def time() -> float:
        return time.time() + 3600


@pytest.mark.parametrize("ticket", ["forged", "other-session", "expired"])
async def test_a_bad_ticket_is_refused_before_attaching_to_the_hub(
    asgi_app, collab, alice, bob, attaches, monkeypatch, ticket
):
    if ticket == "forged":
        value = "eyJ1IjoxfQ:forged:signature"
    elif ticket == "other-session":
        other = await database_sync_to_async(services.session_create)(owner=alice, title="Other")
        value = ticket_issue(user_id=bob.pk, session_id=other.pk)
    else:
        value = ticket_issue(user_id=bob.pk, session_id=collab.pk)
        monkeypatch.setattr("django.core.signing.time", _Later())
    status, body, _ = await refused(asgi_app, stream_path(collab), query={"ticket": value})
    assert status == 401 and body["detail"].startswith("Invalid stream ticket")
    assert attaches == []


async def test_a_good_ticket_still_opens_the_stream(asgi_app, collab, bob, attaches):
    ticket = ticket_issue(user_id=bob.pk, session_id=collab.pk)
    async with ASGIStream(asgi_app, stream_path(collab), query={"ticket": ticket}) as s:
        assert s.status == 200
        assert (await s.next_event()).json["userId"] == bob.pk
    assert attaches == [str(collab.pk)]


async def test_streams_per_user_are_capped_with_a_429(asgi_app, collab, alice, bob, settings, attaches):
    settings.CHORUS_STREAM_MAX_PER_USER = 2
    alices, bobs = await auth(alice), await auth(bob)
    open_streams = [ASGIStream(asgi_app, stream_path(collab), headers=alices) for _ in range(2)]
    try:
        for s in open_streams:
            await s.__aenter__()
            assert s.status == 200
        status, body, headers = await refused(asgi_app, stream_path(collab), headers=alices)
        assert status == 429 and body == {"detail": stream_module.TOO_MANY_STREAMS}
        assert headers["retry-after"] == "5"
        # A ticket names its user before any query: refused before attaching, too.
        before = len(attaches)
        ticket = ticket_issue(user_id=alice.pk, session_id=collab.pk)
        status, _, _ = await refused(asgi_app, stream_path(collab), query={"ticket": ticket})
        assert status == 429 and len(attaches) == before
        async with ASGIStream(asgi_app, stream_path(collab), headers=bobs) as other:
            assert other.status == 200, "the cap is per user"
        await open_streams[0].disconnect()
        async with ASGIStream(asgi_app, stream_path(collab), headers=alices) as again:
            assert again.status == 200, "a closed stream gives its place back"
    finally:
        for s in open_streams:
            await s.disconnect()
    assert stream_module.user_streams.count(alice.pk) == 0
