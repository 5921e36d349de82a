"""SIGTERM with streams open and a regeneration running: the process exits within seconds,
every stream ends cleanly (a final `: shutdown` comment and the end of the response), the
regeneration ends failed with a clear `regeneration_error`, and clients that reconnect to
the other process with Last-Event-ID miss nothing."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.faults.conftest import api, last_event_id, new_session, report, victim
from tests.support.sse import SSEParser

pytestmark = pytest.mark.services


async def read_stream(client: httpx.AsyncClient, url: str, headers: dict, frames: list, opened: asyncio.Event) -> bool:
    """Read a stream to its end; True if the server ended the response properly (an
    abrupt close raises inside httpx as an incomplete chunked read)."""
    parser = SSEParser()
    try:
        async with client.stream("GET", url, headers=headers, timeout=None) as response:
            assert response.status_code == 200
            opened.set()
            async for chunk in response.aiter_raw():
                frames.extend(parser.feed(chunk))
        return True
    except httpx.HTTPError:
        return False
    finally:
        opened.set()


async def start_regeneration(cluster, index: int, session: str) -> dict:
    async with api(cluster, index) as client:
        message = (
            await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": "a long plan " * 20})
        ).json()
        response = await client.post(
            "/api/v1/chat_actions/regenerate", json={"sessionId": session, "messageId": message["id"]}
        )
        assert response.status_code == 202, response.text
        return response.json()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_sigterm_ends_streams_cleanly_and_fails_the_running_regeneration(shared_cluster, server):
    cluster = shared_cluster
    index = victim(cluster, server)  # the process that gets SIGTERM; process 0 stays
    session = await new_session(cluster)
    start = await last_event_id(cluster, session)
    url = f"/sse/sessions/{session}/"
    headers = {"Authorization": f"Token {cluster.tokens['carol']}", "Last-Event-ID": str(start)}
    count = 5
    clients = [httpx.AsyncClient(base_url=cluster.urls[index], timeout=10) for _ in range(count)]
    frames: list[list] = [[] for _ in range(count)]
    opened = [asyncio.Event() for _ in range(count)]
    readers = [asyncio.ensure_future(read_stream(clients[n], url, headers, frames[n], opened[n])) for n in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)
        started = await start_regeneration(cluster, index, session)  # runs in the victim
        async with asyncio.timeout(15):  # wait until it streams
            while not any(f.event == "regeneration_progress" for f in frames[0]):
                await asyncio.sleep(0.05)

        proc = cluster.procs[index]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        clean = await asyncio.wait_for(asyncio.gather(*readers), 10)
        streams_ended = time.monotonic() - signalled
        await asyncio.to_thread(proc.wait, 10)
        exited = time.monotonic() - signalled
    finally:
        for reader in readers:
            reader.cancel()
        for client in clients:
            await client.aclose()

    assert clean == [True] * count, "a stream was cut instead of ended"
    for received in frames:
        assert received[-1].comments == ["shutdown"], received[-1]
    assert exited < 2.5, f"the process took {exited:.1f}s to exit"

    # Each client reconnects to the other process with its last id: nothing missed, and
    # the regeneration ended failed with a clear error.
    final = await last_event_id(cluster, session, index=0)
    for received in frames:
        last_seen = max(f.id for f in received if f.id is not None)
        async with api(cluster, 0, "carol") as client:
            body = (await client.get(f"/api/v1/sessions/{session}/events/", params={"after": last_seen})).json()
        ids = [f.id for f in received if f.id is not None] + [e["id"] for e in body["events"]]
        assert ids == list(range(start + 1, final + 1))
    async with api(cluster, 0, "carol") as client:
        regeneration = (await client.get(f"/api/v1/regenerations/{started['regenerationId']}/")).json()
        events = (await client.get(f"/api/v1/sessions/{session}/events/", params={"after": start})).json()["events"]
    assert regeneration["status"] == "failed"
    assert "restarted" in regeneration["error"]
    errors = [e for e in events if e["type"] == "regeneration_error"]
    assert [e["data"]["taskId"] for e in errors] == [started["taskId"]]
    assert "Traceback" not in errors[0]["data"]["error"]
    report(
        f"SIGTERM ({server})",
        streams_ended_after=round(streams_ended, 2),
        process_exited_after=round(exited, 2),
    )
