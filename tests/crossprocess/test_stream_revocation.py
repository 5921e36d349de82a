"""Revocation across processes (CONTRACT §2): a token revoked or a user deactivated through
one server process ends that user's streams on another within seconds, with
`access_revoked`. The periodic re-check is off here (an hour), so only the control message
that every process's hub receives through Redis can do it; one single-process server shows
the periodic check catching an expired token, which nothing announces."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.crossprocess.conftest import new_session
from tests.support.http_sse import HttpStream
from tests.support.servers import Cluster

pytestmark = pytest.mark.services

TRIGGERS_ONLY = {
    "CHORUS_STREAM_REVALIDATE_SECONDS": "3600",
    "CHORUS_RECONCILE_SECONDS": "3600",
    # Tokens stay in each process's cache for an hour: only the doorbell can drop them.
    "CHORUS_TOKEN_CACHE_SECONDS": "3600",
}


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def cluster(request, postgres_url, redis_url):
    running = Cluster(postgres_url=postgres_url, redis_url=redis_url, server=request.param, env=TRIGGERS_ONLY)
    running.start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


def stream_url(session) -> str:
    return f"/sse/sessions/{session['id']}/"


def new_token(cluster, user: str) -> str:
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from sessions_app.tokens import token_issue\n"
        f"print(token_issue(user=get_user_model().objects.get(username={user!r}))[1])\n"
    )
    return cluster.manage_script(code).strip().splitlines()[-1]


async def rest_of(stream: HttpStream, timeout: float = 10.0) -> list[str]:
    events = []
    while (frame := await stream.next_event(timeout=timeout)) is not None:
        events.append(frame.event)
    return events


async def open_on(cluster, index: int, session, token: str) -> HttpStream:
    client = httpx.AsyncClient(base_url=cluster.urls[index], headers={"Authorization": f"Token {token}"}, timeout=20)
    stream = HttpStream(client, stream_url(session))
    await stream.__aenter__()
    assert stream.status == 200
    assert (await stream.next_event()).event == "connection"
    return stream


async def test_logout_on_one_process_ends_the_tokens_stream_on_the_other(cluster):
    session = new_session(cluster)
    phone, laptop = new_token(cluster, "carol"), new_token(cluster, "carol")
    on_phone = await open_on(cluster, 1, session, phone)
    on_laptop = await open_on(cluster, 1, session, laptop)
    try:
        async with httpx.AsyncClient(base_url=cluster.urls[0], headers={"Authorization": f"Token {phone}"}) as api:
            assert (await api.post("/api/v1/auth/logout/")).status_code == 204
        assert await rest_of(on_phone) == ["access_revoked"]
        # The other token's stream stays and still delivers.
        async with httpx.AsyncClient(base_url=cluster.urls[0], headers={"Authorization": f"Token {laptop}"}) as api:
            response = await api.get(f"/api/v1/sessions/{session['id']}/")
            assert response.status_code == 200
        async with httpx.AsyncClient(
            base_url=cluster.urls[0], headers={"Authorization": f"Token {cluster.tokens['bob']}"}
        ) as api:
            assert (
                await api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "hi"})
            ).status_code == 201
        assert (await on_laptop.next_event()).event == "message_created"
    finally:
        for stream in (on_phone, on_laptop):
            await stream.close()
            await stream.client.aclose()


async def poll_until_refused(client: httpx.AsyncClient, path: str, timeout: float = 5.0) -> int:
    """Requests until one answers 401; returns how many were still let in."""
    admitted = 0
    async with asyncio.timeout(timeout):
        while (await client.get(path)).status_code != 401:
            admitted += 1
    return admitted


async def test_a_token_revoked_on_one_process_is_refused_by_the_other_at_once(cluster):
    session = new_session(cluster, viewers=("carol",))
    token = new_token(cluster, "carol")
    headers = {"Authorization": f"Token {token}"}
    path = f"/api/v1/sessions/{session['id']}/"
    async with (
        httpx.AsyncClient(base_url=cluster.urls[0], headers=headers) as first,
        httpx.AsyncClient(base_url=cluster.urls[1], headers=headers) as second,
    ):
        assert (await second.get(path)).status_code == 200  # now in the second process's cache
        assert (await first.post("/api/v1/auth/logout/")).status_code == 204
        # The doorbell crosses Redis in milliseconds: a handful of requests at most.
        assert await poll_until_refused(second, path) <= 20
        assert (await first.get(path)).status_code == 401


async def test_deactivating_a_user_ends_their_streams_on_every_process(cluster):
    session = new_session(cluster, viewers=("carol", "mallory"))
    token = new_token(cluster, "mallory")
    streams = [await open_on(cluster, index, session, token) for index in (0, 1)]
    try:
        cluster.manage_script(  # what the admin does
            "from django.contrib.auth import get_user_model\n"
            "u = get_user_model().objects.get(username='mallory'); u.is_active = False; u.save()\n"
        )
        for stream in streams:
            assert await rest_of(stream) == ["access_revoked"]
    finally:
        for stream in streams:
            await stream.close()
            await stream.client.aclose()


def test_an_expired_token_ends_its_stream_on_a_real_server(postgres_url, redis_url):
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        processes=1,
        env={"CHORUS_STREAM_REVALIDATE_SECONDS": "0.5", "CHORUS_KEEPALIVE_SECONDS": "1"},
    ).start()
    try:
        running.tokens = running.create_users("alice", "bob", "carol")
        session = new_session(running)

        async def scenario() -> list[str]:
            stream = await open_on(running, 0, session, running.tokens["carol"])
            try:
                running.manage_script(
                    "from django.utils import timezone\n"
                    "from knox.models import AuthToken\n"
                    "AuthToken.objects.filter(user__username='carol').update(expiry=timezone.now())\n"
                )
                return await rest_of(stream)
            finally:
                await stream.close()
                await stream.client.aclose()

        assert asyncio.run(scenario()) == ["access_revoked"]
    finally:
        running.stop()
