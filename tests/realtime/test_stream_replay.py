"""The stream's protocol in-process: opening, replay, gaps, keepalive, limits, teardown."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime.hub import current_hub
from sessions_app import services
from tests.conftest import token_for
from tests.support.asgi import ASGIStream
from tests.support.layer import broadcasts_dropped

pytestmark = [pytest.mark.django_db(transaction=True)]


def stream_path(session) -> str:
    return f"/sse/sessions/{session.pk}/"


def auth(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


post = database_sync_to_async(services.message_create)


async def test_stream_opens_with_headers_retry_and_connection_event(asgi_app, collab, alice):
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream"
        assert s.headers["cache-control"] == "no-cache"
        assert s.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in s.headers
        first = await s.next_frame()
        assert first.retry == 3000
        connected = await s.next_event()
        assert connected.event == "connection" and connected.id is None
        assert connected.json == {
            "status": "connected",
            "sessionId": str(collab.pk),
            "userId": alice.pk,
            "lastEventId": collab.last_event_id,
        }


async def test_live_events_follow_without_replay(asgi_app, collab, alice, bob):
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        await s.next_event()  # connection
        message = await post(session=collab, author=bob, content="héllo 👋")
        frame = await s.next_event()
        assert frame.id == collab.last_event_id + 1
        assert frame.event == "message_created"
        assert frame.json["id"] == frame.id
        assert frame.json["data"] == {
            "messageId": str(message.pk),
            "role": "user",
            "author": "bob",
            "content": "héllo 👋",
        }


@pytest.mark.parametrize("how", ["header", "query"])
async def test_replay_sends_exactly_the_events_after_the_given_id(asgi_app, collab, alice, bob, how):
    for i in range(5):
        await post(session=collab, author=bob, content=f"m{i}")
    newest = collab.last_event_id + 5
    headers = await database_sync_to_async(auth)(alice)
    query = {}
    if how == "header":
        headers["Last-Event-ID"] = "2"
    else:
        query["lastEventId"] = "2"
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers, query=query) as s:
        await s.next_event()
        frames = await s.events_until(newest)
        assert [f.id for f in frames] == list(range(3, newest + 1))


async def test_header_wins_over_query_parameter(asgi_app, collab, alice, bob):
    for i in range(3):
        await post(session=collab, author=bob, content=f"m{i}")
    headers = {**await database_sync_to_async(auth)(alice), "Last-Event-ID": "5"}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers, query={"lastEventId": "1"}) as s:
        await s.next_event()
        frame = await s.next_event()
        assert frame.id == 6


async def test_id_above_newest_is_treated_as_newest(asgi_app, collab, alice, bob):
    headers = {**await database_sync_to_async(auth)(alice), "Last-Event-ID": "999999999999999999999"}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as s:
        await s.next_event()
        await post(session=collab, author=bob, content="next")
        frame = await s.next_event()
        assert frame.id == collab.last_event_id + 1


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "", " 3x"])
async def test_malformed_last_event_id_is_400(asgi_app, collab, alice, bad):
    headers = {**await database_sync_to_async(auth)(alice), "Last-Event-ID": bad}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as s:
        await asyncio.wait_for(s.finished.wait(), 5)
        assert s.status == 400
        assert s.headers["content-type"] == "application/json"
        assert "Last-Event-ID" in s.body.decode()


async def test_history_truncated_when_events_were_pruned(asgi_app, collab, alice, bob):
    from realtime.models import Event

    for i in range(6):
        await post(session=collab, author=bob, content=f"m{i}")
    newest = collab.last_event_id + 6
    await database_sync_to_async(Event.objects.filter(session=collab, seq__lte=5).delete)()
    headers = {**await database_sync_to_async(auth)(alice), "Last-Event-ID": "1"}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as s:
        await s.next_event()  # connection
        notice = await s.next_event()
        assert notice.event == "history_truncated" and notice.id is None
        assert notice.json == {"requested": 1, "oldestAvailable": 6}
        frames = await s.events_until(newest)
        assert [f.id for f in frames] == list(range(6, newest + 1))


async def test_history_truncated_when_every_event_was_pruned(asgi_app, collab, alice, bob):
    from realtime.models import Event

    for i in range(3):
        await post(session=collab, author=bob, content=f"m{i}")
    newest = collab.last_event_id + 3
    await database_sync_to_async(Event.objects.filter(session=collab).delete)()
    headers = {**await database_sync_to_async(auth)(alice), "Last-Event-ID": "1"}
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as s:
        connected = await s.next_event()
        assert connected.json["lastEventId"] == newest
        notice = await s.next_event()
        assert notice.event == "history_truncated"
        assert notice.json == {"requested": 1, "oldestAvailable": newest + 1}
        await post(session=collab, author=bob, content="after the prune")
        live = await s.next_event()
        assert live.id == newest + 1 and live.event == "message_created"


async def test_keepalive_comment_after_idle_interval(asgi_app, collab, alice, settings):
    settings.CHORUS_KEEPALIVE_SECONDS = 0.2
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        await s.next_event()
        frame = await s.next_frame(timeout=3)
        while frame.event == "presence":  # the opening snapshot (CONTRACT §7) precedes it
            frame = await s.next_frame(timeout=3)
        assert frame.comments == ["keepalive"] and frame.event is None


async def test_stream_ends_after_max_lifetime(asgi_app, collab, alice, settings):
    settings.CHORUS_STREAM_MAX_SECONDS = 0.3
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        await s.next_event()
        await asyncio.wait_for(s.finished.wait(), 5)
        assert s.finished.is_set()


async def test_live_gap_is_filled_from_the_database(asgi_app, collab, alice, bob):
    """The channel layer may drop a message: the next one reveals the gap and the stream
    reads the missing event from the database."""
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        await s.next_event()
        with broadcasts_dropped(1) as dropped:
            await post(session=collab, author=bob, content="lost on the wire")
            await post(session=collab, author=bob, content="arrives")
        frames = await s.events_until(collab.last_event_id + 2)
        assert dropped == [collab.last_event_id + 1]
        assert [f.id for f in frames] == [collab.last_event_id + 1, collab.last_event_id + 2]
        assert frames[0].json["data"]["content"] == "lost on the wire"


async def test_frozen_subscriber_is_ended_then_recovers_everything(asgi_app, collab, alice, bob, settings):
    """A client that stops reading (its sends block, as under uvicorn's flow control) is
    ended once CHORUS_STREAM_QUEUE_SIZE events wait for it; it reconnects and replays."""
    settings.CHORUS_STREAM_QUEUE_SIZE = 5
    frozen = asyncio.Event()
    never = asyncio.Event()

    async def block_when_frozen(message):
        if frozen.is_set() and message["type"] == "http.response.body":
            await never.wait()

    headers = await database_sync_to_async(auth)(alice)
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers, send_hook=block_when_frozen) as s:
        await s.next_event()
        start = collab.last_event_id
        frozen.set()
        for i in range(20):
            await post(session=collab, author=bob, content=f"m{i}")
        await asyncio.wait_for(s.task, 5)  # the server gave up on it
        assert current_hub().stream_count() == 0
        seen = [f for f in _drain(s) if f.id is not None]
    assert all(f.id <= start + 20 for f in seen)
    assert len(seen) < 20, "a frozen client must not be handed every event"
    last = seen[-1].id if seen else start
    async with ASGIStream(asgi_app, stream_path(collab), headers={**headers, "Last-Event-ID": str(last)}) as again:
        await again.next_event()
        frames = await again.events_until(start + 20)
        assert [f.id for f in frames] == list(range(last + 1, start + 21))


def _drain(stream: ASGIStream):
    frames = []
    while not stream._frames.empty():
        frame = stream._frames.get_nowait()
        if frame is not None:
            frames.append(frame)
    return frames


async def test_removed_member_gets_access_revoked_and_stream_ends(asgi_app, collab, alice, bob):
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(bob)) as s:
        await s.next_event()
        await database_sync_to_async(services.member_remove)(session=collab, username="bob")
        frames = []
        while (frame := await s.next_event()) is not None:
            frames.append(frame)
        assert [f.event for f in frames] == ["member_left", "access_revoked"]
        assert frames[-1].id is None


async def test_many_streams_opened_and_dropped_leave_nothing_behind(asgi_app, collab, alice, settings):
    settings.CHORUS_STREAM_MAX_PER_USER = 0  # one user opens them all
    headers = await database_sync_to_async(auth)(alice)
    # Warm up: the hub and the channel layer start their process-wide tasks once.
    async with ASGIStream(asgi_app, stream_path(collab), headers=headers) as first:
        await first.next_event()
    hub = current_hub()
    await _settled(hub)
    baseline = asyncio.all_tasks()

    streams = [ASGIStream(asgi_app, stream_path(collab), headers=headers) for _ in range(50)]
    for s in streams:
        await s.__aenter__()
        assert s.status == 200, s.body
        assert (await s.next_event()).event == "connection"
    assert hub.stream_count() == 50
    assert hub.joined_groups() == {str(collab.pk)}
    for s in streams:
        await s.disconnect()
    await _settled(hub)
    assert hub.stream_count() == 0
    assert hub.session_counts() == {}
    # Process-wide tasks (named chorus-*) may come and go; nothing per stream remains.
    leftover = [t for t in asyncio.all_tasks() - baseline if not t.get_name().startswith("chorus-")]
    assert leftover == []


async def _settled(hub) -> None:
    async with asyncio.timeout(5):
        while hub.joined_groups() or hub.background_task_count():
            await asyncio.sleep(0.01)


async def test_lost_last_event_is_recovered_by_reconciliation(asgi_app, collab, alice, bob, settings):
    """No later event reveals the gap: the hub's periodic check against the database does."""

    settings.CHORUS_RECONCILE_SECONDS = 0.1
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
        await s.next_event()
        with broadcasts_dropped(None):
            await post(session=collab, author=bob, content="its doorbell never rings")
        frames = await s.events_until(collab.last_event_id + 1, timeout=5)
        assert [f.json["data"]["content"] for f in frames] == ["its doorbell never rings"]


async def test_sweeper_leaves_a_stream_that_is_still_opening_alone(asgi_app, collab, alice, settings):
    """The hub's sweeper may run while a stream waits for its database round trip; it must
    neither end it (no deadline yet) nor write a keepalive before the headers."""
    settings.CHORUS_KEEPALIVE_SECONDS = 0.01
    import realtime.stream as stream_module

    real_open = stream_module.stream_open

    def slow_open(**kwargs):
        import time

        time.sleep(0.3)  # runs in the database thread: the sweeper ticks meanwhile
        return real_open(**kwargs)

    stream_module.stream_open = slow_open
    try:
        async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(alice)) as s:
            assert s.status == 200
            assert (await s.next_event()).event == "connection"
            assert not s.finished.is_set()
            assert current_hub().stream_count() == 1
    finally:
        stream_module.stream_open = real_open


async def test_deleting_the_session_ends_its_streams_with_access_revoked(asgi_app, collab, alice, bob):
    async with ASGIStream(asgi_app, stream_path(collab), headers=await database_sync_to_async(auth)(bob)) as s:
        await s.next_event()
        await database_sync_to_async(services.session_delete)(session=collab)
        revoked = await s.next_event()
        assert revoked.event == "access_revoked"
        assert await s.next_event() is None  # and the stream ends


async def test_crossed_broadcasts_are_reordered_by_the_hub_not_read_by_every_stream(
    asgi_app, collab, alice, bob, monkeypatch
):
    """Two processes publishing to one session can have their broadcasts cross. The hub
    puts them back in order (reading the gap once if need be): no stream reads the
    database on its own, and each sees the ids in order."""
    from channels.layers import get_channel_layer

    import realtime.stream as stream_module

    stream_reads = []
    real_replay_rows = stream_module.replay_rows

    def counting_replay_rows(**kwargs):
        stream_reads.append(kwargs)
        return real_replay_rows(**kwargs)

    monkeypatch.setattr(stream_module, "replay_rows", counting_replay_rows)
    headers = await database_sync_to_async(auth)(alice)
    streams = [ASGIStream(asgi_app, stream_path(collab), headers=headers) for _ in range(20)]
    for s in streams:
        await s.__aenter__()
        await s.next_event()
    layer = get_channel_layer()
    real_group_send = layer.group_send
    first_held = []

    async def crossing_group_send(group, message):
        if not first_held:
            first_held.append((group, message))  # the first broadcast is overtaken
            return
        await real_group_send(group, message)
        await real_group_send(*first_held[0])

    layer.group_send = crossing_group_send
    try:
        await post(session=collab, author=bob, content="first")
        await post(session=collab, author=bob, content="second")
        first = collab.last_event_id + 1
        for s in streams:
            frames = await s.events_until(first + 1)
            assert [f.id for f in frames] == [first, first + 1]
    finally:
        layer.group_send = real_group_send
        for s in streams:
            await s.disconnect()
    assert stream_reads == []
