"""Events cross processes: a subscriber on one server process sees what another stored."""

import asyncio
import random
import threading

import pytest

from tests.crossprocess.conftest import async_client_for, client_for, new_session
from tests.support.http_sse import HttpStream

pytestmark = pytest.mark.services


def stream_url(session) -> str:
    return f"/sse/sessions/{session['id']}/"


async def test_message_posted_on_one_process_reaches_subscriber_on_the_other(cluster):
    session = new_session(cluster)
    async with async_client_for(cluster, 1, "carol") as client, HttpStream(client, stream_url(session)) as stream:
        assert stream.status == 200
        connected = await stream.next_event()
        assert connected.event == "connection"
        async with async_client_for(cluster, 0, "bob") as poster:
            response = await poster.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": "from A"})
            assert response.status_code == 201
        frame = await stream.next_event(timeout=10)
        assert frame.event == "message_created"
        assert frame.id == session["lastEventId"] + 1
        assert frame.json["data"]["content"] == "from A"


async def test_removed_member_stream_on_other_process_gets_access_revoked(cluster):
    session = new_session(cluster)
    async with async_client_for(cluster, 1, "carol") as client, HttpStream(client, stream_url(session)) as stream:
        await stream.next_event()
        async with async_client_for(cluster, 0, "alice") as owner:
            assert (await owner.delete(f"/api/v1/sessions/{session['id']}/members/carol/")).status_code == 204
        events = []
        while (frame := await stream.next_event(timeout=10)) is not None:
            events.append(frame.event)
        assert events == ["member_left", "access_revoked"]


def test_ids_are_gapless_under_concurrent_writers_on_two_processes(cluster):
    session = new_session(cluster)
    writers, per_writer = 6, 15
    errors = []

    def write(index: int) -> None:
        with client_for(cluster, index % 2, "bob") as api:
            for n in range(per_writer):
                r = api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": f"w{index}-{n}"})
                if r.status_code != 201:
                    errors.append(r.text)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with client_for(cluster, 1, "alice") as api:
        body = api.get(f"/api/v1/sessions/{session['id']}/events/", params={"after": 0, "limit": 500}).json()
    ids = [e["id"] for e in body["events"]]
    expected_last = session["lastEventId"] + writers * per_writer
    assert ids == list(range(1, expected_last + 1))
    assert body["lastId"] == expected_last


async def test_replay_race_every_subscriber_sees_a_contiguous_run(cluster):
    """A publisher keeps posting through both processes while subscribers connect to
    either process with Last-Event-ID at various points: each sees every id after its
    point exactly once, in order."""
    session = new_session(cluster)
    total = 60
    start = session["lastEventId"]
    final = start + total
    posted = asyncio.Event()

    async def publish() -> None:
        clients = [async_client_for(cluster, i, "bob") for i in (0, 1)]
        try:
            for n in range(total):
                r = await clients[n % 2].post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": f"n{n}"})
                assert r.status_code == 201
                if n % 7 == 0:
                    await asyncio.sleep(0)
        finally:
            posted.set()
            for c in clients:
                await c.aclose()

    async def subscribe(index: int, delay_posts: int) -> tuple[int, list[int]]:
        rng = random.Random(index)
        # Wait until roughly `delay_posts` events exist, then resume from a random earlier id.
        async with async_client_for(cluster, index % 2, "carol") as client:
            async with asyncio.timeout(30):
                while True:
                    body = (await client.get(f"/api/v1/sessions/{session['id']}/")).json()
                    if body["lastEventId"] >= start + delay_posts or posted.is_set():
                        break
                    await asyncio.sleep(0.01)
            resume = rng.randint(0, body["lastEventId"])
            async with HttpStream(client, stream_url(session), headers={"Last-Event-ID": str(resume)}) as stream:
                frames = await stream.events_until(final, timeout=30)
            return resume, [f.id for f in frames]

    publisher = asyncio.ensure_future(publish())
    results = await asyncio.gather(*(subscribe(i, (i * 5) % total) for i in range(12)))
    await publisher
    for resume, ids in results:
        assert ids == list(range(resume + 1, final + 1)), f"resumed at {resume}"
