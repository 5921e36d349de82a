"""Stream database calls run side by side, in a bounded pool of their own."""

from __future__ import annotations

import asyncio
import threading

from realtime.db import stream_db


async def test_a_slow_stream_database_call_does_not_hold_up_the_next():
    gate = threading.Event()

    def slow() -> bool:
        return gate.wait(5)  # released only by the second call

    def quick() -> str:
        gate.set()
        return threading.current_thread().name

    async with asyncio.timeout(10):
        released, thread_name = await asyncio.gather(stream_db(slow)(), stream_db(quick)())
    assert released is True  # one shared thread would have run `slow` first, for 5 s
    assert thread_name.startswith("chorus-stream-db")


async def test_stream_database_calls_use_at_most_the_configured_threads(settings):
    from realtime import db

    assert db.stream_db.executor()._max_workers == settings.CHORUS_STREAM_DB_THREADS == 4
    seen = set()

    def where() -> None:
        seen.add(threading.get_ident())

    async with asyncio.timeout(10):
        await asyncio.gather(*(stream_db(where)() for _ in range(50)))
    assert 1 <= len(seen) <= settings.CHORUS_STREAM_DB_THREADS
