"""The worker registry: heartbeats, gone and forgotten processes, cluster-wide sums."""

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from realtime import workers
from realtime.hub import Hub
from realtime.models import Worker
from realtime.workers import SessionLoad

pytestmark = pytest.mark.django_db


def register(identity: str, *, seconds_ago: float, sessions: dict) -> None:
    seen = timezone.now() - dt.timedelta(seconds=seconds_ago)
    host, pid, _ = identity.rsplit(":", 2)
    Worker.objects.create(
        id=identity, host=host, pid=int(pid), started_at=seen, last_seen=seen, connections=0, sessions=sessions
    )


def test_a_heartbeat_records_this_process_and_what_it_serves():
    workers.worker_heartbeat(sessions={"s1": SessionLoad(streams=3, users={"alice": 2, "bob": 1})}, connections=3)
    workers.worker_heartbeat(sessions={"s1": SessionLoad(streams=1, users={"alice": 1})}, connections=1)
    (row,) = Worker.objects.all()
    assert row.id == workers.process_identity()
    assert row.pid > 0 and row.rss_mb > 0
    assert row.connections == 1
    assert row.sessions == {"s1": {"streams": 1, "users": {"alice": 1}, "since": {}, "v": 0}}


def test_a_silent_process_is_gone_then_forgotten(settings):
    settings.CHORUS_WORKER_STALE_SECONDS = 20
    settings.CHORUS_WORKER_FORGET_SECONDS = 600
    register("h:1:aa", seconds_ago=1, sessions={})
    register("h:2:bb", seconds_ago=60, sessions={})
    register("h:3:cc", seconds_ago=3600, sessions={})
    alive = {w.id: w.alive for w in workers.workers_list()}
    assert alive == {"h:1:aa": True, "h:2:bb": False, "h:3:cc": False}
    workers.worker_heartbeat(sessions={}, connections=0)  # any heartbeat forgets the long silent
    assert set(Worker.objects.values_list("id", flat=True)) == {"h:1:aa", "h:2:bb", workers.process_identity()}


def test_cluster_loads_add_up_live_processes_only():
    register("h:1:aa", seconds_ago=1, sessions={"s1": {"streams": 2, "users": {"alice": 1, "bob": 1}}})
    register("h:2:bb", seconds_ago=2, sessions={"s1": {"streams": 1, "users": {"alice": 1}}, "s2": {"streams": 1}})
    register("h:3:cc", seconds_ago=3600, sessions={"s1": {"streams": 9, "users": {"mallory": 9}}})
    loads = workers.cluster_session_loads()
    assert loads["s1"] == SessionLoad(streams=3, users={"alice": 2, "bob": 1})
    assert loads["s2"] == SessionLoad(streams=1, users={})


@pytest.mark.django_db(transaction=True)
async def test_the_hub_beats_while_running_and_unregisters_on_stop(settings):
    settings.CHORUS_WORKER_HEARTBEAT_SECONDS = 0.05
    hub = Hub(asyncio.get_running_loop())
    await hub.start()
    try:
        for _ in range(200):
            if await database_sync_to_async(Worker.objects.filter(id=workers.process_identity()).exists)():
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("no heartbeat was recorded")
    finally:
        await hub.stop()
    assert not await database_sync_to_async(Worker.objects.filter(id=workers.process_identity()).exists)()
