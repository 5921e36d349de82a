"""A cluster of real server processes for the client's live tests, and a way to bring a
crashed process back on the same port (the client has one base URL to come back to)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.servers import ROOT, Cluster, drop_templates


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases():
    yield
    drop_templates()


@pytest.fixture(scope="module")
def cluster(postgres_url, redis_url):
    """Two uvicorn processes on PostgreSQL and Redis; users alice, bob, carol (password `pw`).
    Keepalives every second, so a short read timeout proves they keep a stream alive."""
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        env={"CHORUS_KEEPALIVE_SECONDS": "1", "CHORUS_LOCAL_TOKEN_DELAY_MS": "5", "CHORUS_LOCAL_THOUGHT_STEPS": "1"},
    ).start()
    running.create_users("alice", "bob", "carol")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def logins(cluster) -> dict[str, dict[str, str]]:
    """Client credentials per user: a token from one login (so the tests do not run into
    login throttles), plus the password for when the token is refused."""
    from chorus_client import Client

    found = {}
    for name in ("alice", "bob", "carol"):
        with Client(cluster.urls[0], username=name, password="pw") as client:
            found[name] = {"token": client.login(), "username": name, "password": "pw"}
    return found


def restart(cluster: Cluster, index: int) -> None:
    """Start process `index` again on its old port, after it was killed or stopped."""
    assert cluster.procs[index].poll() is not None, "the process is still running"
    with open(cluster.logs[index], "ab") as sink:
        cluster.procs[index] = subprocess.Popen(
            cluster.command(cluster.ports[index]),
            cwd=ROOT,
            env=cluster.process_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    cluster._wait_ready(index)
