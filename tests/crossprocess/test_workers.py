"""The worker registry sees every process: streams opened on two processes add up."""

import asyncio
import contextlib
import json
import time

import psycopg
import pytest

from tests.crossprocess.conftest import async_client_for, new_session
from tests.support.http_sse import HttpStream
from tests.support.servers import database_url

pytestmark = pytest.mark.services


def registry(cluster) -> list[tuple[int, int, dict]]:
    with psycopg.connect(database_url(cluster.postgres_url, cluster.database), autocommit=True) as conn:
        rows = conn.execute("SELECT pid, connections, sessions FROM realtime_worker").fetchall()
    return [
        (pid, connections, sessions if isinstance(sessions, dict) else json.loads(sessions))
        for pid, connections, sessions in rows
    ]


async def test_streams_on_two_processes_are_counted_cluster_wide(cluster):
    session = new_session(cluster)
    key = session["id"]
    path = f"/sse/sessions/{key}/"
    async with contextlib.AsyncExitStack() as stack:
        for index, user in ((0, "alice"), (1, "bob"), (1, "carol")):
            client = await stack.enter_async_context(async_client_for(cluster, index, user))
            stream = await stack.enter_async_context(HttpStream(client, path))
            assert (await stream.next_event()).event == "connection"
        pids = {proc.pid for proc in cluster.procs}
        deadline = time.monotonic() + 15  # one heartbeat interval (5 s) and then some
        while True:
            rows = [row for row in registry(cluster) if row[0] in pids and key in row[2]]
            users: dict[str, int] = {}
            for _, _, sessions in rows:
                for name, count in sessions[key].get("users", {}).items():
                    users[name] = users.get(name, 0) + count
            if len(rows) == 2 and users == {"alice": 1, "bob": 1, "carol": 1}:
                break
            assert time.monotonic() < deadline, f"registry never showed both processes: {registry(cluster)}"
            await asyncio.sleep(0.2)
        assert sorted(sessions[key]["streams"] for _, _, sessions in rows) == [1, 2]
