"""Redis restarted, and Redis frozen, while events are published and streamed through
two server processes."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from tests.faults.conftest import (
    api,
    assert_exact,
    close_all,
    last_event_id,
    new_session,
    open_subscribers,
    report,
    specs,
    start_cluster,
    until_caught_up,
)

pytestmark = pytest.mark.services

# Reconciliation every 3 s (two rounds to suspect a lost event): an event that arrives
# within a second came through Redis, so a fast delivery after the restart proves that the
# hubs subscribed again.
RECONCILE = "3"


@pytest.fixture(scope="module")
def cluster(postgres_url, own_redis):
    running = start_cluster(postgres_url, own_redis.url, CHORUS_RECONCILE_SECONDS=RECONCILE)
    yield running
    running.stop()


def broadcast_failures(cluster) -> float:
    total = 0.0
    for url in cluster.urls:
        text = httpx.get(url + "/metrics", timeout=5).text
        for match in re.finditer(r"^chorus_broadcast_failures_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M):
            total += float(match.group(1))
    return total


async def publish(cluster, session: str, count: int, *, rate: float, failures: list) -> None:
    clients = [api(cluster, 0), api(cluster, 1)]
    try:
        for n in range(count):
            started = time.monotonic()
            response = await clients[n % 2].post(f"/api/v1/sessions/{session}/messages/", json={"content": f"m{n}"})
            if response.status_code != 201:
                failures.append((response.status_code, response.text[:200]))
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_restart_loses_nothing_and_hubs_resubscribe(cluster, own_redis):
    session = await new_session(cluster)
    other = await new_session(cluster)  # its streams open while Redis is down
    start = await last_event_id(cluster, session)
    subs = await open_subscribers(specs(cluster, session, 10, last_id=start))
    failed_before = broadcast_failures(cluster)
    failures: list = []
    opened = []
    try:
        publisher = asyncio.ensure_future(publish(cluster, session, 80, rate=20, failures=failures))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_redis.stop)
        took_open, opened = await timed(open_subscribers(specs(cluster, other, 2, last_id=None), timeout=10))
        await asyncio.sleep(max(0.0, 1.0 - took_open))
        await asyncio.to_thread(own_redis.start)
        restarted = time.monotonic()
        newest_at_restart = await last_event_id(cluster, session)
        caught_up = await until_caught_up(subs, newest_at_restart, timeout=20)
        await publisher
        final = await last_event_id(cluster, session)
        await until_caught_up(subs, final, timeout=20)
        assert failures == [], failures
        assert final == start + 80
        assert_exact(subs, final)
        assert broadcast_failures(cluster) > failed_before, "failed broadcasts are not counted"

        # Live delivery through Redis again, well inside one reconciliation round (two
        # rounds, 6 s, pass before reconciliation would deliver it): the hubs subscribed
        # again by themselves, and joined the group that they could not join while Redis
        # was down.
        other_next = opened[0].max_id + 1
        async with api(cluster, 0) as client:
            sent = time.monotonic()
            for target in (session, other):
                response = await client.post(f"/api/v1/sessions/{target}/messages/", json={"content": "after"})
                assert response.status_code == 201
        await until_caught_up(subs, final + 1, timeout=10)
        await until_caught_up(opened, other_next, timeout=10)
        live_latency = time.monotonic() - sent
        assert live_latency < 1.5, f"delivery took {live_latency:.2f}s: the hubs did not subscribe again"
        report(
            "redis restart (down 1 s)",
            stream_open_while_down=round(took_open, 2),
            recovery_seconds=round(caught_up - restarted, 2),
            live_latency_after=round(live_latency, 3),
            reconnects=sum(s.reconnects for s in subs),
        )
    finally:
        close_all(subs + opened)


async def timed(coro) -> tuple[float, object]:
    started = time.monotonic()
    result = await coro
    return time.monotonic() - started, result


async def test_frozen_redis_answers_in_bounded_time_and_catches_up(cluster, own_redis):
    """SIGSTOP on redis-server: its connections stay open and nothing answers (a hung
    host). Publishing, opening streams and readiness answer within a bounded time; when it
    thaws, every subscriber holds every event."""
    session = await new_session(cluster)
    start = await last_event_id(cluster, session)
    subs = await open_subscribers(specs(cluster, session, 6, last_id=start))
    other = await new_session(cluster)  # its group is joined only after the freeze
    opened = []
    try:
        own_redis.freeze()
        frozen_at = time.monotonic()
        try:
            slowest = 0.0
            async with api(cluster, 0) as a, api(cluster, 1) as b:
                for n in range(10):
                    took, response = await timed(
                        (a, b)[n % 2].post(f"/api/v1/sessions/{session}/messages/", json={"content": f"f{n}"})
                    )
                    assert response.status_code == 201, response.text
                    slowest = max(slowest, took)
                message = (await a.post(f"/api/v1/sessions/{session}/messages/", json={"content": "why?"})).json()
                took_regen, response = await timed(
                    a.post("/api/v1/chat_actions/regenerate", json={"sessionId": session, "messageId": message["id"]})
                )
                assert response.status_code == 202, response.text  # the throttle's cache fails open
                took_ready, response = await timed(a.get("/readyz"))
                assert response.status_code == 503
            took_open, opened = await timed(open_subscribers(specs(cluster, other, 2, last_id=None), timeout=10))
        finally:
            own_redis.thaw()
        thawed = time.monotonic()
        assert slowest < 3, f"a POST took {slowest:.1f}s while Redis was frozen"
        assert took_regen < 5 and took_ready < 4 and took_open < 5, (took_regen, took_ready, took_open)

        # The regeneration runs to its end: wait until its last event is stored.
        async with api(cluster, 1) as client:
            async with asyncio.timeout(30):
                while True:
                    body = (
                        await client.get(f"/api/v1/sessions/{session}/events/", params={"after": start, "limit": 500})
                    ).json()
                    if any(e["type"] in ("message_regenerated", "regeneration_error") for e in body["events"]):
                        break
                    await asyncio.sleep(0.2)
        final = await last_event_id(cluster, session)
        caught_up = await until_caught_up(subs, final, timeout=20)
        assert_exact(subs, final)

        # The streams opened during the freeze were served without their group; the hubs
        # joined it once Redis answered: a new event reaches them well inside one
        # reconciliation round (two rounds, 6 s, before reconciliation would deliver it).
        other_next = opened[0].max_id + 1
        async with api(cluster, 0) as client:
            sent = time.monotonic()
            assert (await client.post(f"/api/v1/sessions/{other}/messages/", json={"content": "hi"})).status_code == 201
        await until_caught_up(opened, other_next, timeout=10)
        rejoined_latency = time.monotonic() - sent
        assert rejoined_latency < 1.5, f"{rejoined_latency:.2f}s: the hubs did not join the group after the thaw"
        report(
            "redis frozen",
            frozen_seconds=round(thawed - frozen_at, 2),
            slowest_post=round(slowest, 2),
            regenerate=round(took_regen, 2),
            readyz=round(took_ready, 2),
            stream_open=round(took_open, 2),
            recovery_seconds=round(caught_up - thawed, 2),
            live_latency_after=round(rejoined_latency, 3),
        )
    finally:
        close_all(subs + opened)
