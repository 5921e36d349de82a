"""Retention runs by itself: every server process schedules pruning, one process at a time
(a PostgreSQL advisory lock), and streams replaying while it prunes keep CONTRACT §5's
rules: a `history_truncated` frame before any jump, never a silent skip."""

from __future__ import annotations

import asyncio
import random
import re
import time

import httpx
import psycopg
import pytest

from realtime.retention import PRUNE_LOCK_KEY
from tests.faults.conftest import api, last_event_id, new_session, report, start_cluster
from tests.support.servers import database_url
from tests.support.sse import SSEParser

pytestmark = pytest.mark.services

CAP = 30
INTERVAL = 0.3


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url):
    running = start_cluster(
        postgres_url,
        redis_url,
        CHORUS_PRUNE_INTERVAL_SECONDS=str(INTERVAL),
        CHORUS_HISTORY_MAX_EVENTS=str(CAP),
        CHORUS_REPLAY_PAGE_SIZE="10",
        processes=1,  # the lock is shown by holding it in the test
    )
    yield running
    running.stop()


async def stored_ids(cluster, session: str) -> list[int]:
    async with api(cluster, 0, "carol") as client:
        body = (await client.get(f"/api/v1/sessions/{session}/events/", params={"after": 0, "limit": 500})).json()
    return [e["id"] for e in body["events"]]


async def post_many(cluster, session: str, count: int, pause: float = 0.0) -> None:
    async with api(cluster, 0) as a, api(cluster, 0) as b:
        for n in range(count):
            response = await (a, b)[n % 2].post(f"/api/v1/sessions/{session}/messages/", json={"content": f"r{n}"})
            assert response.status_code == 201, response.text
            if pause:
                await asyncio.sleep(pause)


def pruned_total(cluster) -> float:
    total = 0.0
    for url in cluster.urls:
        text = httpx.get(url + "/metrics", timeout=5).text
        total += sum(float(v) for v in re.findall(r'^chorus_events_pruned_total\{reason="count"\} (\S+)$', text, re.M))
    return total


async def test_pruning_is_scheduled_and_takes_turns_through_the_advisory_lock(cluster, postgres_url):
    session = await new_session(cluster)
    with psycopg.connect(database_url(postgres_url, cluster.database), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [PRUNE_LOCK_KEY])  # "another process is pruning"
        await post_many(cluster, session, 2 * CAP)
        newest = await last_event_id(cluster, session)
        # Absence cannot be awaited: several intervals pass, and nothing may be pruned.
        await asyncio.sleep(6 * INTERVAL)
        assert (await stored_ids(cluster, session))[0] == 1, "pruned although another process held the lock"
        holder.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])
        released = time.monotonic()
    async with asyncio.timeout(10):
        while (ids := await stored_ids(cluster, session)) != list(range(newest - CAP + 1, newest + 1)):
            await asyncio.sleep(0.1)
    assert pruned_total(cluster) >= newest - CAP
    report("scheduled pruning", pruned_after_lock_released=round(time.monotonic() - released, 2), kept=len(ids))


async def read_until(client: httpx.AsyncClient, url: str, headers: dict, final: int) -> list:
    """Frames of one stream, in order, until the numbered event `final`."""
    parser = SSEParser()
    frames = []
    async with client.stream("GET", url, headers=headers, timeout=None) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            for frame in parser.feed(chunk):
                if frame.event is not None:
                    frames.append(frame)
                    if frame.id is not None and frame.id >= final:
                        return frames
    raise AssertionError("stream ended early")


def assert_no_silent_skip(frames: list, resumed_from: int) -> int:
    """Each numbered frame continues the run, or comes right after a `history_truncated`
    that names the jump. Returns how many jumps were announced."""
    expected, announced, jumps = resumed_from + 1, None, 0
    for frame in frames:
        if frame.event == "history_truncated":
            announced = frame.json
            continue
        if frame.id is None:
            continue
        if frame.id != expected:
            assert announced is not None, f"silent skip from {expected - 1} to {frame.id}"
            assert announced == {"requested": expected - 1, "oldestAvailable": frame.id}, (announced, frame.id)
            jumps += 1
        announced = None
        expected = frame.id + 1
    return jumps


async def test_streams_replaying_while_pruning_announce_every_jump(cluster):
    session = await new_session(cluster)
    await post_many(cluster, session, CAP)
    total = 80
    final = await last_event_id(cluster, session) + total  # each post stores one event
    publisher = asyncio.ensure_future(post_many(cluster, session, total, pause=0.02))
    rng = random.Random(7)

    async def reader(index: int) -> tuple[int, int]:
        await asyncio.sleep(rng.uniform(0, 2.5))
        resume = rng.randint(0, await last_event_id(cluster, session))
        headers = {"Authorization": f"Token {cluster.tokens['carol']}", "Last-Event-ID": str(resume)}
        async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as client:
            frames = await asyncio.wait_for(read_until(client, f"/sse/sessions/{session}/", headers, final), 30)
        return resume, assert_no_silent_skip(frames, resume)

    results = await asyncio.gather(*(reader(i) for i in range(16)))
    await publisher
    jumps = sum(j for _, j in results)
    assert jumps > 0, "no reader met pruned history: the test exercised nothing"
    report("pruning during replay", readers=len(results), announced_jumps=jumps)
