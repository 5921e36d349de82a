"""The bench's bare-hub peer (bench/peers/bare_hub.py) delivers what it is measured on:
a post to one process reaches a stream on each process once, with the id Redis gave it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bench.peers.cluster import BareHubCluster

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def peer(redis_url):
    running = BareHubCluster(redis_url=redis_url, processes=2).start()
    yield running
    running.stop()


def frames(lines):
    """SSE frames of a line iterator, as dicts of their fields (comments dropped)."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value


def next_numbered(stream_frames) -> dict:
    for frame in stream_frames:
        if "id" in frame:
            return frame
    raise AssertionError("the stream ended")


def test_each_stream_gets_a_posted_event_once_with_its_id(peer):
    one, two = peer.urls
    with httpx.Client(timeout=10) as client:
        session = client.post(f"{one}/api/v1/sessions/", json={"title": "t"}).json()["id"]
        # An event before the streams open: the next one is id 2, and id 1 is not sent.
        assert client.post(f"{one}/api/v1/sessions/{session}/messages/", json={"content": "before"}).status_code == 201
        headers = {"Authorization": "Token alice"}
        with (
            client.stream("GET", f"{one}/sse/sessions/{session}/", headers=headers) as local,
            client.stream("GET", f"{two}/sse/sessions/{session}/", headers=headers) as remote,
        ):
            streams = [frames(local.iter_lines()), frames(remote.iter_lines())]
            for stream in streams:
                assert next(stream) == {"retry": "3000"}
                opening = next(stream)
                assert opening["event"] == "connection"
                assert json.loads(opening["data"])["lastEventId"] == 1

            # One post to each process: the ids come from one counter for the session.
            posted = [
                client.post(f"{url}/api/v1/sessions/{session}/messages/", json={"content": text})
                for url, text in ((one, "first"), (two, "second"))
            ]
            assert [p.json()["eventId"] for p in posted] == [2, 3]
            for stream in streams:
                got = [next_numbered(stream), next_numbered(stream)]
                # Exactly once each, in order: a repeated frame would come before id 3.
                assert [f["id"] for f in got] == ["2", "3"]
                envelope = json.loads(got[0]["data"])
                assert got[0]["event"] == envelope["type"] == "message_created"
                assert envelope["id"] == 2
                assert envelope["sessionId"] == session
                assert envelope["data"]["content"] == "first"
                assert envelope["data"]["author"] == "anonymous"
        assert client.get(f"{two}/api/v1/sessions/{session}/").json()["lastEventId"] == 3


def test_bad_posts_get_a_json_error(peer):
    with httpx.Client(base_url=peer.urls[0], timeout=10) as client:
        session = client.post("/api/v1/sessions/", json={"title": "t"}).json()["id"]
        response = client.post(f"/api/v1/sessions/{session}/messages/", content=b"not json")
        assert response.status_code == 400
        assert "detail" in response.json()
        assert client.get(f"/api/v1/sessions/{session}/").json()["lastEventId"] == 0


def test_an_idle_stream_gets_keepalives(redis_url):
    peer = BareHubCluster(redis_url=redis_url, processes=1, env={"BARE_HUB_KEEPALIVE_SECONDS": "0.2"}).start()
    try:
        with httpx.Client(base_url=peer.urls[0], timeout=10) as client:
            session = client.post("/api/v1/sessions/", json={"title": "t"}).json()["id"]
            with client.stream("GET", f"/sse/sessions/{session}/") as response:
                assert response.headers["content-type"] == "text/event-stream"
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: connection"
                assert next(line for line in lines if line.startswith(":")) == ": keepalive"
    finally:
        peer.stop()


def test_an_event_ahead_of_a_missing_id_waits_for_it(peer):
    """Two posts in flight can reach Redis in the other order than their ids (INCR and
    PUBLISH are two round trips): streams still get them in id order."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from bench.peers.bare_hub import session_group
    from realtime import sse

    async def publish(session: str, *ids: int) -> None:
        layer = RedisPubSubChannelLayer(hosts=[peer.redis_url], prefix=peer.prefix)
        for seq in ids:
            frame = sse.frame(seq, "message_created", json.dumps({"id": seq}))
            await layer.group_send(
                session_group(session), {"type": "session.event", "session": session, "seq": seq, "frame": frame}
            )
        await layer.flush()

    with httpx.Client(base_url=peer.urls[1], timeout=10) as client:
        session = client.post("/api/v1/sessions/", json={"title": "t"}).json()["id"]
        with client.stream("GET", f"/sse/sessions/{session}/") as response:
            stream = frames(response.iter_lines())
            assert next(f for f in stream if f.get("event") == "connection")
            asyncio.run(publish(session, 2, 1))
            assert [next_numbered(stream)["id"], next_numbered(stream)["id"]] == ["1", "2"]
            # An id that never comes (the layer lost it) is given up after a while.
            asyncio.run(publish(session, 4))
            assert next_numbered(stream)["id"] == "4"
