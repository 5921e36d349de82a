"""What an idle stream costs its process (issue 12): no Task of its own beyond the one
the server runs it in, and the hub's sweep visits it about once per keepalive, not at
every sweep. The figures (KB per stream, idle CPU) are read off `make bench` idle-3000."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime.hub import Hub
from tests.realtime.test_stream_replay import auth, stream_path
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_an_open_stream_runs_in_its_own_task_only(asgi_app, collab, alice):
    """Channels' consumer wraps every `receive()` in a Task of its own (await_many_dispatch);
    a stream awaits it in the Task the server runs it in."""
    headers = await database_sync_to_async(auth)(alice)
    streams = [ASGIStream(asgi_app, stream_path(collab), headers=headers) for _ in range(5)]
    for stream in streams:
        await stream.__aenter__()
        await stream.next_event()
    try:
        app_tasks = {stream.task for stream in streams}
        receiving = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "ASGIStream._receive"]
        assert receiving == []
        assert all(not task.done() for task in app_tasks)
    finally:
        for stream in streams:
            await stream.disconnect()


class CountingStream:
    """A stream as the hub sees it, opened long ago, that counts its ticks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, keepalive: float) -> None:
        self.session_key = "idle"
        self.username = "alice"
        self.ticks = 0
        self.last_write = loop.time()
        self.keepalive = keepalive

    def tick(self, now: float) -> float | None:
        self.ticks += 1
        if now - self.last_write >= self.keepalive:
            self.last_write = now  # a keepalive written
        return self.last_write + self.keepalive


async def test_the_sweep_visits_an_idle_stream_once_per_keepalive(settings):
    settings.CHORUS_KEEPALIVE_SECONDS = 15
    loop = asyncio.get_running_loop()
    hub = Hub(loop)
    hub._sweep_interval, start = 1.0, loop.time()
    hub._sweep_slot = int(start)
    streams = [CountingStream(loop, 15) for _ in range(30)]
    hub._streams["idle"] = set(streams)
    for stream in streams:
        hub._schedule_tick(stream, start)
    for second in range(1, 61):  # a minute of sweeps, one a second
        hub._sweep(start + second)
    # First tick at the next sweep, then one per keepalive (due times round up to the
    # next sweep, so a keepalive is at most one sweep late, as before): 4, not 60.
    assert {stream.ticks for stream in streams} == {4}


async def test_the_sweep_drops_detached_streams(settings):
    loop = asyncio.get_running_loop()
    hub = Hub(loop)
    hub._sweep_interval, start = 1.0, loop.time()
    hub._sweep_slot = int(start)
    kept, gone = CountingStream(loop, 15), CountingStream(loop, 15)
    hub._streams["idle"] = {kept}
    for stream in (kept, gone):
        hub._schedule_tick(stream, start)
    hub._sweep(start + 2)
    assert (kept.ticks, gone.ticks) == (1, 0)
    assert all(gone not in bucket for bucket in hub._wheel.values())
