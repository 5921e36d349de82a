"""Presence in the stream (CONTRACT §7), in one process: the snapshot, joins and leaves,
tabs counted once, assistant typing, and the cluster view's merge rules."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime import hub as hub_module
from realtime.hub import current_hub
from realtime.presence import Change, ClusterPresence
from sessions_app import services
from sessions_app.regenerations import services as regeneration_services
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def headers(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


async def open_stream(asgi_app, collab, user, **kwargs) -> ASGIStream:
    stream = ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers=await headers(user), ephemeral=True, **kwargs)
    await stream.__aenter__()
    assert (await stream.next_event()).event == "connection"
    return stream


async def next_named(stream: ASGIStream, *names: str, timeout: float = 5) -> object:
    """The next frame whose event is one of `names` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await stream.next_event(timeout)
            assert frame is not None, f"stream ended before {names}"
            if frame.event in names:
                return frame


async def test_the_snapshot_follows_connection_and_counts_the_opener(asgi_app, collab, alice):
    alice_stream = await open_stream(asgi_app, collab, alice)
    try:
        snapshot = await alice_stream.next_event()
        assert snapshot.event == "presence" and snapshot.id is None
        assert snapshot.json == {"online": ["alice"]}
    finally:
        await alice_stream.disconnect()


async def test_others_see_a_user_join_and_leave_and_tabs_count_once(asgi_app, collab, alice, bob):
    watcher = await open_stream(asgi_app, collab, alice)
    try:
        assert (await next_named(watcher, "presence")).json == {"online": ["alice"]}
        first_tab = await open_stream(asgi_app, collab, bob)
        joined = await next_named(watcher, "presence_joined", "presence_left")
        assert (joined.event, joined.json, joined.id) == ("presence_joined", {"username": "bob"}, None)
        assert (await next_named(first_tab, "presence")).json == {"online": ["alice", "bob"]}

        second_tab = await open_stream(asgi_app, collab, bob)  # a second tab: nobody is told
        await second_tab.disconnect()  # closing one of two tabs: nothing either
        await database_sync_to_async(services.message_create)(session=collab, author=alice, content="marker")
        frame = await next_named(watcher, "presence_joined", "presence_left", "message_created")
        assert frame.event == "message_created", "a second tab or its closing changed presence"

        await first_tab.disconnect()
        left = await next_named(watcher, "presence_joined", "presence_left")
        assert (left.event, left.json) == ("presence_left", {"username": "bob"})
    finally:
        await watcher.disconnect()


async def test_a_user_who_comes_and_goes_within_one_batch_is_not_announced(asgi_app, collab, alice, bob, monkeypatch):
    monkeypatch.setattr(hub_module, "PRESENCE_FLUSH_SECONDS", 1.0)
    watcher = await open_stream(asgi_app, collab, alice)
    try:
        await next_named(watcher, "presence")
        visitor = await open_stream(asgi_app, collab, bob)
        await visitor.disconnect()
        async with asyncio.timeout(5):  # the batch goes out (and finds nothing to say)
            while str(collab.pk) in current_hub()._presence_pending:
                await asyncio.sleep(0.05)
        await database_sync_to_async(services.message_create)(session=collab, author=alice, content="marker")
        frame = await next_named(watcher, "presence_joined", "presence_left", "message_created")
        assert frame.event == "message_created", "bob's visit was announced"
    finally:
        await watcher.disconnect()


async def test_a_resumed_stream_gets_only_the_stored_events_it_missed(asgi_app, collab, alice, bob):
    watcher = await open_stream(asgi_app, collab, alice)
    try:
        last_id = await database_sync_to_async(lambda: type(collab).objects.get(pk=collab.pk).last_event_id)()
        tab = await open_stream(asgi_app, collab, bob)
        await next_named(watcher, "presence_joined")
        await tab.disconnect()
        await next_named(watcher, "presence_left")
        await database_sync_to_async(services.message_create)(session=collab, author=bob, content="stored")
    finally:
        await watcher.disconnect()
    resumed = ASGIStream(
        asgi_app, f"/sse/sessions/{collab.pk}/", headers={**await headers(alice), "Last-Event-ID": str(last_id)}
    )
    async with resumed:
        frames = []
        while (frame := await resumed.next_frame(timeout=2)) is not None:
            if frame.event not in (None, "connection", "presence"):
                frames.append(frame)
            if frame.event == "message_created":
                break
    assert [(f.event, f.id) for f in frames] == [("message_created", last_id + 1)]


async def test_the_assistant_types_while_a_regeneration_runs(asgi_app, collab, alice, bob, settings):
    settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 5
    watcher = await open_stream(asgi_app, collab, alice)
    try:
        message = await database_sync_to_async(services.message_create)(session=collab, author=bob, content="hi?")
        await database_sync_to_async(regeneration_services.regeneration_start)(
            session=collab, source_message=message, requested_by=bob, user_query=None
        )
        typing = await next_named(watcher, "typing", timeout=10)
        assert typing.json == {"username": "assistant", "typing": True, "expiresIn": 6.0}
        assert typing.id is None
        done = await next_named(watcher, "typing", timeout=20)
        assert done.json == {"username": "assistant", "typing": False}
    finally:
        await watcher.disconnect()


# --- the merge rules of one process's cluster view ---------------------------------------------
def delta(worker: str, version: int, username: str, count: int) -> dict:
    return {
        "type": "session.presence",
        "session": "s",
        "worker": worker,
        "v": version,
        "username": username,
        "count": count,
    }


def test_deltas_from_other_processes_add_and_remove_users():
    here = ClusterPresence("here")
    assert here.open("s", "alice")[1] == Change("alice", True)
    assert here.apply_delta(delta("there", 1, "bob", 1)) == Change("bob", True)
    assert here.online("s") == ["alice", "bob"]
    assert here.apply_delta(delta("there", 1, "bob", 1)) is None  # a repeated delta changes nothing
    assert here.apply_delta(delta("there", 2, "bob", 0)) == Change("bob", False)
    assert here.apply_delta(delta("there", 1, "bob", 1)) is None  # older than what we know


def test_a_user_on_two_processes_stays_online_until_both_close():
    here = ClusterPresence("here")
    here.open("s", "alice")
    here.apply_delta(
        {"type": "session.presence", "session": "s", "worker": "w2", "v": 1, "username": "bob", "count": 1}
    )
    sent, change = here.open("s", "bob")
    assert sent is not None and change is None  # bob was online already (on w2)
    sent, change = here.close("s", "bob")
    assert sent["count"] == 0 and change is None  # still on w2


def test_the_registry_heals_lost_deltas_and_drops_dead_processes():
    here = ClusterPresence("here")
    here.open("s", "alice")
    changes = here.apply_registry("s", {"w2": (3, {"bob": 2}), "w3": (1, {"carol": 1})})
    assert changes == [Change("bob", True), Change("carol", True)]
    # w3 died (absent from the live rows); an older row of w2 does not undo what we know
    here.apply_delta(
        {"type": "session.presence", "session": "s", "worker": "w2", "v": 4, "username": "dan", "count": 1}
    )
    changes = here.apply_registry("s", {"w2": (3, {"bob": 2})})
    assert changes == [Change("carol", False)]
    assert here.online("s") == ["alice", "bob", "dan"]
    # a row of w2 written before its delta, not listing the session yet: no flapping
    assert here.apply_registry("s", {"w2": (2, None)}) == []
    # a newer row without the session: w2 no longer serves it
    assert here.apply_registry("s", {"w2": (5, None)}) == [Change("bob", False), Change("dan", False)]


def test_a_session_served_before_its_first_local_user_takes_the_cluster_view():
    here = ClusterPresence("here")
    here.serve("s")  # the first stream is attached, its user not known yet
    assert here.apply_registry("s", {"w2": (1, {"bob": 1})}) == [Change("bob", True)]
    assert here.apply_delta(delta("w2", 2, "carol", 1)) == Change("carol", True)
    assert here.open("s", "alice")[1] == Change("alice", True)
    assert here.online("s") == ["alice", "bob", "carol"]


def test_versions_keep_growing_when_a_session_is_served_again():
    here = ClusterPresence("here")
    first, _ = here.open("s", "alice")
    here.close("s", "alice")
    here.forget("s")
    again, _ = here.open("s", "alice")
    assert again["v"] > first["v"]  # others would otherwise ignore it as old


async def test_sessions_that_start_together_share_one_registry_read(asgi_app, alice, settings, monkeypatch):
    """A process taking on many sessions at once reads the worker registry (every process's
    every session) for all of those waiting together, not once per session: it used to be
    O(sessions²). The first read is held until the others have asked."""
    import threading

    settings.CHORUS_WORKER_HEARTBEAT_SECONDS = 3600  # the registry on, no beats meanwhile
    reads, release = [], threading.Event()
    real_workers_list = hub_module.workers_list

    def counted(*args, **kwargs):
        reads.append(1)
        if len(reads) == 1:
            release.wait(5)
        return real_workers_list(*args, **kwargs)

    monkeypatch.setattr(hub_module, "workers_list", counted)
    sessions = [await database_sync_to_async(services.session_create)(owner=alice, title=f"s{n}") for n in range(15)]
    streams = await asyncio.gather(*(open_stream(asgi_app, session, alice) for session in sessions))
    try:
        hub = current_hub()
        async with asyncio.timeout(5):
            while len(hub._presence_wanted) < 14:  # all but the first are waiting for a read
                await asyncio.sleep(0.01)
        release.set()
        for stream in streams:
            assert (await next_named(stream, "presence")).json == {"online": ["alice"]}
        await asyncio.wait_for(asyncio.shield(hub._presence_loader), 5)
        assert len(reads) == 2
    finally:
        release.set()
        await asyncio.gather(*(stream.disconnect() for stream in streams))
