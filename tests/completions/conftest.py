"""A real Chorus HTTP server in the test's process: uvicorn serving config.asgi on
127.0.0.1, on the test's event loop, against the test database. The official `openai`
package talks to it over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest
import uvicorn
from channels.db import database_sync_to_async

from completions.limits import limits_reset
from tests.conftest import token_for
from tests.support.servers import free_port


class LiveServer:
    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", access_log=False)
        )
        self.task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LiveServer:
        self.task = asyncio.ensure_future(self.server.serve())
        async with asyncio.timeout(10):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


@pytest.fixture
def completion_settings(settings):
    """Fast, deterministic defaults: an instant local provider, no coalescing delay."""
    settings.CHORUS_LLM_PROVIDER = "local"
    settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 0
    settings.CHORUS_PROGRESS_FLUSH_MS = 0
    settings.CHORUS_COMPLETIONS_RATE_USER = "1000/minute"
    # Only our counters: with REDIS_URL the cache is a Redis that others share.
    limits_reset(user_ids=range(1, 200))
    yield settings
    limits_reset(user_ids=range(1, 200))


@pytest.fixture
async def chorus_server(transactional_db, asgi_app, completion_settings):
    server = await LiveServer(asgi_app).start()
    yield server
    await server.stop()


async def api_key(user) -> str:
    return await database_sync_to_async(token_for)(user)


async def sdk(server: LiveServer, user=None, *, key: str | None = None) -> openai.AsyncOpenAI:
    """The official client pointed at Chorus; no retries, so each call is one request."""
    if key is None:
        key = await api_key(user) if user is not None else "no-such-token"
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=20)


async def wait_for_logs(count: int, *, timeout: float = 5.0) -> list:
    """The generation log rows once there are `count` (each is written as its call ends,
    just after the caller got its last byte)."""
    from completions.models import GenerationLog

    read = database_sync_to_async(lambda: list(GenerationLog.objects.order_by("id")))
    async with asyncio.timeout(timeout):
        while True:
            rows = await read()
            if len(rows) >= count:
                assert len(rows) == count, rows
                return rows
            await asyncio.sleep(0.02)


def raw_client(server: LiveServer, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=20)
