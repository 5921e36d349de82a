"""The channel layer sharded over two Redis instances (REDIS_URL as a comma-separated
list): delivery, gap fill, cancel and revocation still cross processes, with session
groups spread over both instances."""

import asyncio
import contextlib
import shutil
import subprocess
import time

import pytest
import redis

from tests.crossprocess.conftest import async_client_for, client_for, new_session
from tests.support.http_sse import HttpStream
from tests.support.servers import Cluster, free_port

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def two_redis(redis_url):
    """Two redis-server processes of our own (the shared one stays untouched)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed") if redis_url else pytest.skip("no redis-server")
    procs, urls = [], []
    for _ in range(2):
        port = free_port()
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        urls.append(f"redis://127.0.0.1:{port}/0")
    for url in urls:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.05)
    yield urls
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def cluster(postgres_url, two_redis):
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=",".join(two_redis),
        env={
            "CHORUS_LOCAL_TOKEN_DELAY_MS": "40",
            "CHORUS_LOCAL_THOUGHT_STEPS": "0",
            "CHORUS_REGENERATION_RATE_USER": "1000/minute",
            "CHORUS_REGENERATION_RATE_SESSION": "1000/minute",
        },
    ).start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


def subscriptions(url: str) -> set[str]:
    channels = redis.Redis.from_url(url).pubsub_channels()
    return {c.decode() for c in channels}


async def test_sessions_spread_over_both_instances_and_events_cross_processes(cluster, two_redis):
    sessions = [new_session(cluster) for _ in range(8)]
    async with contextlib.AsyncExitStack() as stack:
        streams = []
        for session in sessions:
            client = await stack.enter_async_context(async_client_for(cluster, 1, "carol"))
            stream = await stack.enter_async_context(HttpStream(client, f"/sse/sessions/{session['id']}/"))
            assert (await stream.next_event()).event == "connection"
            streams.append(stream)
        # Each instance carries some of the session groups' subscriptions.
        for url in two_redis:
            assert any("chorus.session." in name for name in subscriptions(url)), f"no session group on {url}"
        with client_for(cluster, 0, "bob") as api:
            for session in sessions:
                response = api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "sharded"})
                assert response.status_code == 201
        for session, stream in zip(sessions, streams, strict=True):
            frames = await stream.events_until(session["lastEventId"] + 1, timeout=10)
            assert [f.id for f in frames] == [session["lastEventId"] + 1]


async def test_a_lost_broadcast_is_filled_from_the_database(cluster):
    """An event stored without its broadcast (as when Redis drops a message), then one
    that crosses: the stream sees the gap and reads the missing id from the database."""
    session = new_session(cluster)
    path = f"/sse/sessions/{session['id']}/"
    async with async_client_for(cluster, 1, "carol") as client, HttpStream(client, path) as stream:
        assert (await stream.next_event()).event == "connection"
        cluster.manage_script(
            "from django.db import transaction\n"
            "from realtime import events, publish\n"
            "publish.broadcast = lambda *args: None  # the doorbell never rings\n"
            "with transaction.atomic():\n"
            f"    publish.event_publish(session_id={session['id']!r}, payload=events.system(message='silent'))\n"
        )
        with client_for(cluster, 0, "bob") as api:
            response = api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "loud"})
            assert response.status_code == 201
        frames = await stream.events_until(session["lastEventId"] + 2, timeout=10)
        assert [(f.id, f.event) for f in frames] == [
            (session["lastEventId"] + 1, "system"),
            (session["lastEventId"] + 2, "message_created"),
        ]


async def test_cancel_and_revocation_cross_processes(cluster):
    session = new_session(cluster)
    path = f"/sse/sessions/{session['id']}/"
    async with async_client_for(cluster, 1, "carol") as client, HttpStream(client, path) as stream:
        assert (await stream.next_event()).event == "connection"
        async with async_client_for(cluster, 0, "bob") as bob:
            message = (
                await bob.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "a long plan " * 20})
            ).json()
            started = (
                await bob.post(
                    "/api/v1/chat_actions/regenerate", json={"sessionId": session["id"], "messageId": message["id"]}
                )
            ).json()
        async with async_client_for(cluster, 1, "bob") as bob_elsewhere:  # not the runner's process
            response = await bob_elsewhere.post(f"/api/v1/regenerations/{started['regenerationId']}/cancel/")
            assert response.status_code == 202
        seen = []
        async with asyncio.timeout(15):
            while "regeneration_cancelled" not in seen:
                frame = await stream.next_event(15)
                assert frame is not None
                seen.append(frame.event)
        async with async_client_for(cluster, 0, "alice") as owner:
            assert (await owner.delete(f"/api/v1/sessions/{session['id']}/members/carol/")).status_code == 204
        rest = []
        while (frame := await stream.next_event(timeout=10)) is not None:
            rest.append(frame.event)
        assert rest[-2:] == ["member_left", "access_revoked"]
    async with async_client_for(cluster, 0, "bob") as bob:
        state = (await bob.get(f"/api/v1/regenerations/{started['regenerationId']}/")).json()
    assert state["status"] == "cancelled"
