"""The `openai` provider against a local OpenAI-compatible streaming server."""

from __future__ import annotations

import asyncio
import time

import pytest

from sessions_app.providers import ProviderError, Turn
from sessions_app.providers.openai_compatible import FAILED, TIMED_OUT, UNREACHABLE, OpenAICompatibleProvider
from tests.sessions_app.fake_openai import FakeOpenAI

CONVERSATION = [Turn("user", "What's the plan? 🗺️", "alice"), Turn("assistant", "Let me think."), Turn("user", "Go")]


def provider(server: FakeOpenAI, model: str, *, timeout: float = 5.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url=server.base_url, api_key="sk-test", model=model, timeout=timeout)


async def collect(p: OpenAICompatibleProvider, received: list[str], first: asyncio.Event | None = None) -> None:
    async for chunk in p.stream(CONVERSATION):
        received.append(chunk)
        if first is not None:
            first.set()


async def test_normal_stream_yields_every_chunk_in_order():
    async with FakeOpenAI() as server:
        received: list[str] = []
        await asyncio.wait_for(collect(provider(server, "normal"), received), 5)
    assert received == FakeOpenAI.answer
    request = server.requests[0]
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["json"]["stream"] is True
    assert request["json"]["model"] == "normal"
    assert request["json"]["messages"][0]["role"] == "system"
    assert request["json"]["messages"][1:] == [
        {"role": "user", "content": "What's the plan? 🗺️", "name": "alice"},
        {"role": "assistant", "content": "Let me think."},
        {"role": "user", "content": "Go"},
    ]


@pytest.mark.parametrize("model", ["error-mid", "drop-mid"])
async def test_error_in_the_middle_of_the_stream_is_a_provider_error_after_the_first_chunks(model):
    async with FakeOpenAI() as server:
        received: list[str] = []
        with pytest.raises(ProviderError) as raised:
            await asyncio.wait_for(collect(provider(server, model), received), 5)
    assert received == FakeOpenAI.answer[:2]
    assert raised.value.user_message in (FAILED, UNREACHABLE)
    assert "Traceback" not in raised.value.user_message and "token 3" not in raised.value.user_message


@pytest.mark.parametrize("model", ["hang", "hang-mid"])
async def test_an_upstream_that_hangs_times_out(model):
    async with FakeOpenAI() as server:
        received: list[str] = []
        started = time.monotonic()
        with pytest.raises(ProviderError) as raised:
            await asyncio.wait_for(collect(provider(server, model, timeout=0.3), received), 5)
        elapsed = time.monotonic() - started
    assert raised.value.user_message == TIMED_OUT
    assert 0.25 <= elapsed < 2.0
    assert received == (FakeOpenAI.answer[:1] if model == "hang-mid" else [])


@pytest.mark.parametrize(("model", "fragment"), [("status-429", "busy"), ("status-500", "failed")])
async def test_error_statuses_become_user_messages(model, fragment):
    async with FakeOpenAI() as server:
        with pytest.raises(ProviderError) as raised:
            await asyncio.wait_for(collect(provider(server, model), []), 5)
    assert fragment in raised.value.user_message


async def test_unreachable_server_is_a_provider_error():
    async with FakeOpenAI() as server:
        url = server.base_url
    p = OpenAICompatibleProvider(base_url=url, api_key="k", model="normal", timeout=1)
    with pytest.raises(ProviderError) as raised:
        await asyncio.wait_for(collect(p, []), 5)
    assert raised.value.user_message == UNREACHABLE


async def test_cancelling_the_consumer_closes_the_upstream_connection():
    async with FakeOpenAI() as server:
        received: list[str] = []
        first = asyncio.Event()
        task = asyncio.ensure_future(collect(provider(server, "slow"), received, first))
        await asyncio.wait_for(first.wait(), 5)
        cancelled_at = time.monotonic()
        task.cancel()
        await asyncio.wait_for(server.disconnected.wait(), 1.0)
        assert server.disconnected_at - cancelled_at < 1.0
        sent = server.chunks_sent
    assert sent < 100  # the server stopped generating
