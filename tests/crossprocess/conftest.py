"""Clusters of real server processes on PostgreSQL and Redis."""

import httpx
import pytest

from tests.support.servers import Cluster, drop_templates

pytestmark = pytest.mark.services


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases():
    yield
    drop_templates()


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def cluster(request, postgres_url, redis_url):
    """Two server processes of each kind, one fresh database per test module."""
    running = Cluster(postgres_url=postgres_url, redis_url=redis_url, server=request.param).start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


def client_for(cluster, index: int, user: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Token {cluster.tokens[user]}"} if user else {}
    return httpx.Client(base_url=cluster.urls[index], headers=headers, timeout=20)


def async_client_for(cluster, index: int, user: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Token {cluster.tokens[user]}"} if user else {}
    return httpx.AsyncClient(base_url=cluster.urls[index], headers=headers, timeout=20)


def new_session(cluster, *, editors=("bob",), viewers=("carol",)) -> dict:
    with client_for(cluster, 0, "alice") as api:
        session = api.post("/api/v1/sessions/", json={"title": "cross-process"}).json()
        members = [(name, "editor") for name in editors] + [(name, "viewer") for name in viewers]
        for name, role in members:
            body = {"username": name, "role": role}
            assert api.post(f"/api/v1/sessions/{session['id']}/members/", json=body).status_code == 201
        return api.get(f"/api/v1/sessions/{session['id']}/").json()
