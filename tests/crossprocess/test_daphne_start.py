"""daphne speaks no ASGI lifespan: a process that has served only REST requests (no stream,
no readiness probe) still joins the worker registry and drains on SIGTERM, because the hub
starts with the first request of any kind (realtime.lifespan.start_on_first_request)."""

import asyncio
import signal
import time

import httpx
import pytest

from tests.crossprocess.test_workers import registry
from tests.support.servers import Cluster, create_database

pytestmark = pytest.mark.services


def wait_until_answered(url: str, timeout: float = 30) -> httpx.Response:
    """The first answer to a REST request (the process is still importing Django until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"no answer from {url} after {timeout}s"
            time.sleep(0.1)


async def test_a_daphne_process_that_served_only_rest_registers_and_drains(postgres_url, redis_url):
    cluster = Cluster(postgres_url=postgres_url, redis_url=redis_url, server="daphne", processes=1)
    cluster.env = {"CHORUS_WORKER_HEARTBEAT_SECONDS": "1"}
    cluster.database = create_database(postgres_url)
    index = cluster.start_process(wait=False)  # not through /readyz: it would start the hub
    try:
        response = await asyncio.to_thread(wait_until_answered, cluster.urls[index] + "/api/v1/sessions/")
        assert response.status_code == 401, response.text  # a REST answer, from Django
        pid = cluster.procs[index].pid
        async with asyncio.timeout(15):  # the first heartbeat comes as the hub starts
            while pid not in {row[0] for row in await asyncio.to_thread(registry, cluster)}:
                await asyncio.sleep(0.1)
        cluster.procs[index].send_signal(signal.SIGTERM)
        await asyncio.to_thread(cluster.procs[index].wait, 15)
        assert "SIGTERM: draining streams and regenerations before shutdown" in cluster.log_text(index)
    finally:
        cluster.stop()
