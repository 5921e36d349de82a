"""PostgreSQL stalled, restarted and locked under load, through a TCP proxy between the
server processes and the shared PostgreSQL (which is never touched itself).

The promises: requests answer (201, or 503 JSON) within a bounded time and recover by
themselves; no event is stored twice or out of sequence; keepalives and /healthz keep
working while the database hangs."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from tests.faults.conftest import FAST_ENV, api, last_event_id, new_session, report
from tests.support.faults import TcpProxy
from tests.support.servers import Cluster, database_url
from tests.support.sse import SSEParser

pytestmark = pytest.mark.services

STATEMENT_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def proxy(postgres_url):
    parsed = urlparse(postgres_url)
    running = TcpProxy(parsed.hostname, parsed.port or 5432).start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url, proxy):
    env = {
        **FAST_ENV,
        "CHORUS_DB_STATEMENT_TIMEOUT_MS": str(int(STATEMENT_TIMEOUT * 1000)),
        "CHORUS_DB_POOL_TIMEOUT": "2",
        "CHORUS_DB_CONNECT_TIMEOUT_SECONDS": "2",
        "CHORUS_STREAM_OPEN_TIMEOUT_SECONDS": "3",
    }
    running = Cluster(postgres_url=postgres_url, redis_url=redis_url, env=env, database_port=proxy.port).start()
    running.tokens = running.create_users("alice", "bob", "carol")
    yield running
    proxy.resume()
    proxy.refuse(False)
    running.stop()


class Watcher:
    """One stream, read with httpx: the ids it received and when each keepalive came."""

    def __init__(self, cluster: Cluster, index: int, session: str, after: int) -> None:
        self.client = httpx.AsyncClient(base_url=cluster.urls[index], timeout=10)
        self.url = f"/sse/sessions/{session}/"
        self.headers = {"Authorization": f"Token {cluster.tokens['carol']}", "Last-Event-ID": str(after)}
        self.ids: list[int] = []
        self.keepalives: list[float] = []
        self.opened = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        parser = SSEParser()
        try:
            async with self.client.stream("GET", self.url, headers=self.headers, timeout=None) as response:
                assert response.status_code == 200
                self.opened.set()
                async for chunk in response.aiter_raw():
                    for frame in parser.feed(chunk):
                        if frame.id is not None:
                            self.ids.append(frame.id)
                        if "keepalive" in frame.comments:
                            self.keepalives.append(time.monotonic())
        finally:
            self.opened.set()

    async def close(self) -> None:
        self.task.cancel()
        await self.client.aclose()


class Load:
    """Posts messages through both processes until stopped; records every answer."""

    def __init__(self, cluster: Cluster, session: str, interval: float = 0.1) -> None:
        self.answers: list[tuple[int, float, str]] = []  # (status, seconds, content-type)
        self.stopped = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(cluster, session, interval))

    async def _post(self, client: httpx.AsyncClient, session: str, n: int) -> None:
        started = time.monotonic()
        try:
            response = await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": f"p{n}"})
            status, kind = response.status_code, response.headers.get("content-type", "")
            if status == 503:
                assert "detail" in response.json()
        except httpx.TimeoutException:
            status, kind = 0, "timeout"
        self.answers.append((status, time.monotonic() - started, kind))

    async def _run(self, cluster: Cluster, session: str, interval: float) -> None:
        clients = [api(cluster, 0, timeout=15), api(cluster, 1, timeout=15)]
        pending = set()
        n = 0
        try:
            while not self.stopped.is_set():
                pending.add(asyncio.ensure_future(self._post(clients[n % 2], session, n)))
                n += 1
                await asyncio.sleep(interval)
            await asyncio.gather(*pending)
        finally:
            for client in clients:
                await client.aclose()

    async def stop(self) -> None:
        self.stopped.set()
        await self.task


async def assert_log_is_exact(cluster: Cluster, session: str) -> list[int]:
    """The stored ids are 1..N with nothing twice (the unique constraint would refuse a
    duplicate anyway; this also shows no gap)."""
    async with api(cluster, 1, "carol") as client:
        events = (await client.get(f"/api/v1/sessions/{session}/events/", params={"after": 0, "limit": 500})).json()
    ids = [e["id"] for e in events["events"]]
    assert ids == list(range(1, events["lastId"] + 1))
    return ids


async def wait_caught_up(watchers: list[Watcher], final: int, timeout: float) -> float:
    async with asyncio.timeout(timeout):
        while not all(w.ids and w.ids[-1] >= final for w in watchers):
            await asyncio.sleep(0.05)
    return time.monotonic()


async def test_stalled_database_keeps_keepalives_and_healthz_and_recovers(cluster, proxy):
    session = await new_session(cluster)
    start = await last_event_id(cluster, session)
    watchers = [Watcher(cluster, n % 2, session, start) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*(w.opened.wait() for w in watchers)), 10)
    load = Load(cluster, session)
    try:
        await asyncio.sleep(0.5)
        proxy.stall()
        stalled = time.monotonic()
        probes: list[float] = []
        async with httpx.AsyncClient(timeout=5) as client:
            opening = asyncio.ensure_future(
                client.get(cluster.urls[0] + f"/sse/sessions/{session}/", headers=watchers[0].headers)
            )
            while time.monotonic() - stalled < 4:
                for url in cluster.urls:
                    began = time.monotonic()
                    assert (await client.get(url + "/healthz")).status_code == 200
                    probes.append(time.monotonic() - began)
                await asyncio.sleep(0.25)
            refused = await opening
        proxy.resume()
        resumed = time.monotonic()
        await asyncio.sleep(0.5)
        await load.stop()
        final = await last_event_id(cluster, session)
        caught_up = await wait_caught_up(watchers, final, timeout=15)
    finally:
        proxy.resume()
        for watcher in watchers:
            await watcher.close()

    assert max(probes) < 0.5, f"/healthz took {max(probes):.2f}s while the database hung"
    for watcher in watchers:
        during = [t for t in watcher.keepalives if stalled + 0.5 < t < resumed]
        assert len(during) >= 2, "keepalives stopped while the database hung"
        assert watcher.ids == list(range(start + 1, final + 1))
    assert refused.status_code == 503 and refused.json()["detail"]
    statuses = {status for status, _, _ in load.answers}
    assert statuses <= {201, 503}, load.answers
    assert max(seconds for _, seconds, _ in load.answers) < 4 + 3
    await assert_log_is_exact(cluster, session)
    report(
        "PostgreSQL stalled 4 s",
        posts=len(load.answers),
        answered_503=sum(1 for s, _, _ in load.answers if s == 503),
        slowest_post=round(max(seconds for _, seconds, _ in load.answers), 2),
        healthz_max=round(max(probes), 3),
        stream_open_503_after=round(refused.elapsed.total_seconds(), 2),
        recovery_seconds=round(caught_up - resumed, 2),
    )


async def test_restarted_database_answers_503_json_then_recovers(cluster, proxy):
    session = await new_session(cluster)
    start = await last_event_id(cluster, session)
    watchers = [Watcher(cluster, n % 2, session, start) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*(w.opened.wait() for w in watchers)), 10)
    load = Load(cluster, session)
    try:
        await asyncio.sleep(0.5)
        proxy.refuse(True)  # down: every connection dropped, new ones refused
        proxy.cut()
        await asyncio.sleep(2)
        proxy.refuse(False)
        restored = time.monotonic()
        async with asyncio.timeout(15):  # until both processes store again
            while True:
                recent = [s for s, _, _ in load.answers[-6:]]
                if len(recent) == 6 and all(s == 201 for s in recent):
                    break
                await asyncio.sleep(0.1)
        recovered = time.monotonic()
        await load.stop()
        final = await last_event_id(cluster, session)
        caught_up = await wait_caught_up(watchers, final, timeout=15)
    finally:
        proxy.refuse(False)
        for watcher in watchers:
            await watcher.close()

    unavailable = [(s, kind) for s, _, kind in load.answers if s != 201]
    assert unavailable, "the outage was not noticed: no request failed"
    assert all(s == 503 and kind == "application/json" for s, kind in unavailable), unavailable
    for watcher in watchers:
        assert watcher.ids == list(range(start + 1, final + 1))
    await assert_log_is_exact(cluster, session)
    report(
        "PostgreSQL restarted (down 2 s)",
        posts=len(load.answers),
        answered_503=len(unavailable),
        requests_recovered_after=round(recovered - restored, 2),
        streams_caught_up_after=round(caught_up - restored, 2),
    )


async def test_locked_row_ends_in_503_within_the_statement_timeout(cluster, postgres_url):
    session = await new_session(cluster)
    with psycopg.connect(database_url(postgres_url, cluster.database)) as blocker:
        blocker.execute("SELECT 1 FROM sessions_app_collabsession WHERE id = %s FOR UPDATE", [session])
        async with api(cluster, 0) as client:
            response = await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": "blocked"})
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json" and response.json()["detail"]
        waited = response.elapsed.total_seconds()
        assert waited < STATEMENT_TIMEOUT + 1.5
        blocker.rollback()
    async with api(cluster, 0) as client:
        response = await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": "free again"})
    assert response.status_code == 201
    ids = await assert_log_is_exact(cluster, session)
    report("PostgreSQL row locked", answered_503_after=round(waited, 2), events=len(ids))
