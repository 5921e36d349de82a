"""Presence across real server processes (CONTRACT §7): users on two processes see each
other come and go within 2 s, tabs on several processes count once, and a SIGKILLed
process's users leave once its heartbeats stop."""

import asyncio
import contextlib
import time

import pytest

from tests.crossprocess.conftest import async_client_for, client_for, new_session
from tests.support.http_sse import HttpStream
from tests.support.servers import Cluster

pytestmark = pytest.mark.services

# Registry timings shortened so the dead-process case takes seconds, not the default
# 5 s heartbeat + 20 s staleness (which bound it at 30 s: see realtime.workers).
ENV = {"CHORUS_WORKER_HEARTBEAT_SECONDS": "1", "CHORUS_WORKER_STALE_SECONDS": "4"}


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url):
    running = Cluster(postgres_url=postgres_url, redis_url=redis_url, processes=3, env=ENV).start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


class Watcher:
    """alice's stream, reading presence frames and message markers."""

    def __init__(self, stream: HttpStream) -> None:
        self.stream = stream

    async def next_signal(self, timeout: float) -> tuple[str, dict]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.stream.next_event(timeout)
                assert frame is not None, "alice's stream ended"
                if frame.event in ("presence_joined", "presence_left", "message_created"):
                    return frame.event, frame.json if frame.event != "message_created" else {}


def wait_until_listed(cluster, session_id: str, username: str, present: bool = True) -> None:
    deadline = time.monotonic() + 10
    with client_for(cluster, 0, "alice") as api:
        while True:
            names = {u["username"] for u in api.get(f"/api/v1/sessions/{session_id}/presence/").json()["online"]}
            if (username in names) == present:
                return
            assert time.monotonic() < deadline, f"presence API never showed {username} present={present}: {names}"
            time.sleep(0.1)


async def open_stream(stack, cluster, index: int, user: str, path: str) -> HttpStream:
    client = await stack.enter_async_context(async_client_for(cluster, index, user))
    stream = await stack.enter_async_context(HttpStream(client, path, ephemeral=True))
    assert (await stream.next_event()).event == "connection"
    return stream


async def test_users_on_two_processes_see_each_other_and_tabs_count_once(cluster):
    session = new_session(cluster, editors=("bob",), viewers=("carol",))
    path = f"/sse/sessions/{session['id']}/"
    async with contextlib.AsyncExitStack() as stack:
        alice_stream = await open_stream(stack, cluster, 0, "alice", path)
        assert (await alice_stream.next_event()).json == {"online": ["alice"]}
        watcher = Watcher(alice_stream)
        wait_until_listed(cluster, session["id"], "alice")

        async with contextlib.AsyncExitStack() as bob_tabs:
            started = time.monotonic()
            bob_on_1 = await open_stream(bob_tabs, cluster, 1, "bob", path)
            snapshot = await bob_on_1.next_event()
            assert snapshot.event == "presence" and snapshot.json == {"online": ["alice", "bob"]}
            assert await watcher.next_signal(timeout=2) == ("presence_joined", {"username": "bob"})
            joined_after = time.monotonic() - started

            async with contextlib.AsyncExitStack() as more_tabs:
                await open_stream(more_tabs, cluster, 2, "bob", path)  # a second tab, on another process
                await open_stream(more_tabs, cluster, 0, "bob", path)  # and a third, on alice's
            # Two of bob's three tabs opened and closed: alice was told nothing of it.
            with client_for(cluster, 1, "bob") as api:
                api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "marker"})
            assert await watcher.next_signal(timeout=5) == ("message_created", {})
            closing = time.monotonic()
        assert await watcher.next_signal(timeout=2) == ("presence_left", {"username": "bob"})
        left_after = time.monotonic() - closing
        print(f"presence_joined after {joined_after:.3f} s, presence_left after {left_after:.3f} s")


async def test_a_killed_process_takes_its_users_presence_with_it(cluster):
    session = new_session(cluster, editors=("bob",), viewers=("carol",))
    path = f"/sse/sessions/{session['id']}/"
    victim = cluster.start_process()
    async with contextlib.AsyncExitStack() as stack:
        watcher = Watcher(await open_stream(stack, cluster, 0, "alice", path))
        client = await stack.enter_async_context(async_client_for(cluster, victim, "carol"))
        carol_stream = await stack.enter_async_context(HttpStream(client, path, ephemeral=True))
        assert (await carol_stream.next_event()).event == "connection"
        assert await watcher.next_signal(timeout=2) == ("presence_joined", {"username": "carol"})
        wait_until_listed(cluster, session["id"], "carol")
        killed = time.monotonic()
        cluster.kill(victim)
        assert await watcher.next_signal(timeout=30) == ("presence_left", {"username": "carol"})
        print(f"a SIGKILLed process's user left after {time.monotonic() - killed:.1f} s")
    wait_until_listed(cluster, session["id"], "carol", present=False)
