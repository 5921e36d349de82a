"""Regenerations across real processes: cancel through another process than the one
running it, and a runner process that dies."""

import asyncio

import httpx
import pytest

from tests.crossprocess.conftest import async_client_for, new_session
from tests.support.http_sse import HttpStream
from tests.support.servers import Cluster

pytestmark = pytest.mark.services


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def slow_cluster(request, postgres_url, redis_url):
    """Slow tokens, so a generation is still running when we act on it; short leases, so
    a dead runner is noticed quickly."""
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        server=request.param,
        env={
            "CHORUS_LOCAL_TOKEN_DELAY_MS": "40",
            "CHORUS_LOCAL_THOUGHT_STEPS": "0",
            "CHORUS_REGENERATION_HEARTBEAT_SECONDS": "0.5",
            "CHORUS_REGENERATION_LEASE_SECONDS": "2",
            "CHORUS_REGENERATION_RATE_USER": "1000/minute",
            "CHORUS_REGENERATION_RATE_SESSION": "1000/minute",
        },
    ).start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


async def start_regeneration(cluster, index: int, session: dict) -> dict:
    async with async_client_for(cluster, index, "bob") as api:
        message = (
            await api.post(
                f"/api/v1/sessions/{session['id']}/messages/",
                json={"content": "Write a long, detailed plan for the launch of our product " * 3},
            )
        ).json()
        response = await api.post(
            "/api/v1/chat_actions/regenerate", json={"sessionId": session["id"], "messageId": message["id"]}
        )
        assert response.status_code == 202, response.text
        return response.json()


async def next_of(stream: HttpStream, *types: str, timeout: float = 15):
    async with asyncio.timeout(timeout):
        while True:
            frame = await stream.next_event(timeout)
            assert frame is not None, "stream ended"
            if frame.event in types:
                return frame


async def test_cancel_through_another_process_stops_the_provider(slow_cluster):
    cluster = slow_cluster
    session = new_session(cluster)
    async with (
        async_client_for(cluster, 1, "carol") as watcher,
        HttpStream(watcher, f"/sse/sessions/{session['id']}/") as stream,
    ):
        await stream.next_event()  # connection
        started = await start_regeneration(cluster, 0, session)  # runs in process 0
        await next_of(stream, "regeneration_progress")
        async with async_client_for(cluster, 1, "bob") as api:  # cancelled through process 1
            response = await api.post(f"/api/v1/regenerations/{started['regenerationId']}/cancel/")
            assert response.status_code == 202, response.text
        cancelled = await next_of(stream, "regeneration_cancelled")
        assert cancelled.json["data"]["taskId"] == started["taskId"]
        # Absence cannot be awaited: give a running provider time for ~25 more tokens,
        # then mark the end of the window with a message of our own.
        await asyncio.sleep(1.0)
        async with async_client_for(cluster, 0, "bob") as api:
            marker = (await api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "marker"})).json()
        after_cancel = []
        while True:
            frame = await next_of(stream, "regeneration_progress", "message_regenerated", "message_created")
            if frame.event == "message_created" and frame.json["data"]["messageId"] == marker["id"]:
                break
            after_cancel.append(frame.event)
        assert after_cancel == [], "the provider kept producing after the cancel"
    async with async_client_for(cluster, 0, "carol") as api:
        body = (await api.get(f"/api/v1/regenerations/{started['regenerationId']}/")).json()
    assert body["status"] == "cancelled"


async def test_killed_runner_process_ends_failed_with_an_error_event(slow_cluster):
    """Runs last in the module: it kills process 0."""
    cluster = slow_cluster
    session = new_session(cluster)
    async with (
        async_client_for(cluster, 1, "carol") as watcher,
        HttpStream(watcher, f"/sse/sessions/{session['id']}/") as stream,
    ):
        await stream.next_event()
        started = await start_regeneration(cluster, 0, session)
        await next_of(stream, "regeneration_progress")
        cluster.kill(0)
        error = await next_of(stream, "regeneration_error", timeout=20)
        assert error.json["data"]["taskId"] == started["taskId"]
        assert "Traceback" not in error.json["data"]["error"]
    async with httpx.AsyncClient(
        base_url=cluster.urls[1], headers={"Authorization": f"Token {cluster.tokens['carol']}"}
    ) as api:
        body = (await api.get(f"/api/v1/regenerations/{started['regenerationId']}/")).json()
    assert body["status"] == "failed"
    assert body["error"]
