"""A server process SIGKILLed while clients stream from it and a regeneration runs in it:
the clients resume on the other process and miss nothing; the regeneration ends failed
with a `regeneration_error` within its lease (the reaper of the surviving process)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from urllib.parse import urlparse

import pytest

from tests.faults.conftest import (
    FAST_ENV,
    api,
    assert_exact,
    close_all,
    last_event_id,
    new_session,
    open_subscribers,
    report,
    specs,
    until_caught_up,
    victim,
)

pytestmark = pytest.mark.services


async def test_sigkilled_process_its_clients_resume_elsewhere_and_its_regeneration_fails(shared_cluster):
    cluster = shared_cluster
    doomed = victim(cluster)
    session = await new_session(cluster)
    start = await last_event_id(cluster, session)
    subs = await open_subscribers(specs(cluster, session, 8, last_id=start, indexes=[0, doomed]))
    survivor = urlparse(cluster.urls[0]).port
    try:
        async with api(cluster, doomed) as client:
            message = (
                await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": "plan " * 40})
            ).json()
            body = {"sessionId": session, "messageId": message["id"]}
            started = (await client.post("/api/v1/chat_actions/regenerate", json=body)).json()
        async with asyncio.timeout(15):  # the run is streaming in the doomed process
            while not any(s.count > 2 for s in subs):
                await asyncio.sleep(0.05)

        async def publish() -> None:
            async with api(cluster, 0) as client:
                for n in range(30):
                    response = await client.post(f"/api/v1/sessions/{session}/messages/", json={"content": f"k{n}"})
                    assert response.status_code == 201
                    await asyncio.sleep(0.05)

        publisher = asyncio.ensure_future(publish())
        await asyncio.sleep(0.3)
        cluster.kill(doomed)
        killed = time.monotonic()
        for sub in subs:  # a proxy would send them to the survivor; here they are told
            sub.spec = dataclasses.replace(sub.spec, port=survivor)
        await publisher

        async with api(cluster, 0, "carol") as client:
            async with asyncio.timeout(15):
                while (await client.get(f"/api/v1/regenerations/{started['regenerationId']}/")).json()[
                    "status"
                ] != "failed":
                    await asyncio.sleep(0.1)
        failed_after = time.monotonic() - killed
        final = await last_event_id(cluster, session, index=0)
        caught_up = await until_caught_up(subs, final, timeout=15)
        assert_exact(subs, final)
        lease = float(FAST_ENV["CHORUS_REGENERATION_LEASE_SECONDS"])
        heartbeat = float(FAST_ENV["CHORUS_REGENERATION_HEARTBEAT_SECONDS"])
        assert failed_after < lease + 2 * heartbeat + 1.5, f"reaped after {failed_after:.1f}s"
        async with api(cluster, 0, "carol") as client:
            events = (
                await client.get(f"/api/v1/sessions/{session}/events/", params={"after": start, "limit": 500})
            ).json()
        errors = [e for e in events["events"] if e["type"] == "regeneration_error"]
        assert [e["data"]["taskId"] for e in errors] == [started["taskId"]]
        report(
            "SIGKILL",
            regeneration_failed_after=round(failed_after, 2),
            recovery_seconds=round(caught_up - killed, 2),
            reconnects=sum(s.reconnects for s in subs),
        )
    finally:
        close_all(subs)
