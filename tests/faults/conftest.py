"""Fault tests: real server processes, a private Redis, a TCP proxy in front of
PostgreSQL; faults are injected for real (STYLE §12) and recovery times printed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from urllib.parse import urlparse

import httpx
import pytest

from bench.client import Spec, Subscriber
from tests.support.faults import RedisServer
from tests.support.servers import Cluster, drop_templates

pytestmark = pytest.mark.services

# Faster than production so the tests stay short; every figure is still a real timeout.
FAST_ENV = {
    "CHORUS_KEEPALIVE_SECONDS": "1",
    "CHORUS_RECONCILE_SECONDS": "0.5",
    "CHORUS_LOCAL_TOKEN_DELAY_MS": "30",
    "CHORUS_LOCAL_THOUGHT_STEPS": "0",
    "CHORUS_REGENERATION_HEARTBEAT_SECONDS": "0.5",
    "CHORUS_REGENERATION_LEASE_SECONDS": "2",
    "CHORUS_REGENERATION_RATE_USER": "1000/minute",
    "CHORUS_REGENERATION_RATE_SESSION": "1000/minute",
}


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases():
    yield
    drop_templates()


@pytest.fixture(scope="session")
def shared_cluster(postgres_url, redis_url):
    """One uvicorn cluster for the tests that kill or stop processes: process 0 lives
    through the whole suite; each such test starts its own victim with `victim()`."""
    cluster = Cluster(postgres_url=postgres_url, redis_url=redis_url, processes=1, env=dict(FAST_ENV)).start()
    cluster.tokens = cluster.create_users(
        "alice", "bob", "carol", "soak-owner", "soak-viewer-0", "soak-viewer-1", "soak-viewer-2"
    )
    yield cluster
    cluster.stop()


def victim(cluster: Cluster, server: str = "uvicorn") -> int:
    """Start one more server process (uvicorn or daphne) on the cluster; its index."""
    cluster.server = server
    try:
        return cluster.start_process()
    finally:
        cluster.server = "uvicorn"


@pytest.fixture(scope="module")
def own_redis(redis_url):
    """A redis-server of this module's own (tests restart and freeze it)."""
    server = RedisServer().start()
    yield server
    server.close()


def start_cluster(postgres_url: str, redis_url: str, *, server: str = "uvicorn", processes: int = 2, **env) -> Cluster:
    cluster = Cluster(
        postgres_url=postgres_url, redis_url=redis_url, server=server, processes=processes, env={**FAST_ENV, **env}
    ).start()
    cluster.tokens = cluster.create_users("alice", "bob", "carol")
    return cluster


def api(cluster: Cluster, index: int, user: str = "bob", timeout: float = 20) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cluster.urls[index], headers={"Authorization": f"Token {cluster.tokens[user]}"}, timeout=timeout
    )


async def new_session(cluster: Cluster, index: int = 0) -> str:
    async with api(cluster, index, "alice") as client:
        session = (await client.post("/api/v1/sessions/", json={"title": "faults"})).json()
        for name, role in (("bob", "editor"), ("carol", "viewer")):
            response = await client.post(
                f"/api/v1/sessions/{session['id']}/members/", json={"username": name, "role": role}
            )
            assert response.status_code == 201, response.text
    return session["id"]


async def last_event_id(cluster: Cluster, session: str, index: int = 0) -> int:
    async with api(cluster, index) as client:
        return (await client.get(f"/api/v1/sessions/{session}/")).json()["lastEventId"]


def specs(
    cluster: Cluster,
    session: str,
    count: int,
    *,
    user: str = "carol",
    last_id: int | None = 0,
    indexes: list[int] | None = None,
) -> list[Spec]:
    """`count` subscriber specs alternating between the cluster's processes (`indexes`:
    these ones only)."""
    indexes = indexes if indexes is not None else list(range(len(cluster.urls)))
    out = []
    for n in range(count):
        parsed = urlparse(cluster.urls[indexes[n % len(indexes)]])
        out.append(Spec(parsed.hostname, parsed.port, session, cluster.tokens[user], last_id))
    return out


async def open_subscribers(spec_list: Iterable[Spec], timeout: float = 15) -> list[Subscriber]:
    """Connected subscribers (the bench's light client: it reconnects with Last-Event-ID
    0.5 s after a stream ends, as EventSource does, and counts every id it receives)."""
    subs = [Subscriber(spec, latencies=__import__("array").array("d")) for spec in spec_list]
    await asyncio.gather(*(sub.connect(sub.spec.last_id, timeout) for sub in subs))
    return subs


async def until_caught_up(subs: list[Subscriber], last_id: int, timeout: float) -> float:
    """Wait until every subscriber holds every id up to `last_id`; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        if all(sub.contig >= last_id for sub in subs):
            return time.monotonic()
        if time.monotonic() > deadline:
            behind = [(sub.spec.port, sub.contig) for sub in subs if sub.contig < last_id]
            raise AssertionError(f"{len(behind)} subscriber(s) not caught up to {last_id}: {behind[:5]}")
        await asyncio.sleep(0.05)


def assert_exact(subs: list[Subscriber], last_id: int) -> None:
    """Every subscriber received each id after its start exactly once."""
    for sub in subs:
        received, expected = sub.lost(last_id)
        assert received == expected, f"subscriber on {sub.spec.port} lost {expected - received} event(s)"
        assert sub.dups == 0, f"subscriber on {sub.spec.port} got {sub.dups} duplicate(s)"
        assert sub.ooo == 0, f"subscriber on {sub.spec.port} got {sub.ooo} event(s) out of order"


def close_all(subs: list[Subscriber]) -> None:
    for sub in subs:
        sub.close()


def report(name: str, **figures) -> None:
    """Recovery figures, printed for the report (run pytest with -s to see them)."""
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
