"""The `openai` provider against a local OpenAI-compatible streaming server."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from sessions_app.providers import ProviderError, Turn
from sessions_app.providers.openai_compatible import FAILED, TIMED_OUT, UNREACHABLE, OpenAICompatibleProvider
from sessions_app.regenerations import runner
from tests.sessions_app.fake_openai import FakeOpenAI
from tests.sessions_app.regen_support import auth, call, events_until, reassemble, stream_of

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


# --- through the runner: the events a session sees ----------------------------------------
@pytest.fixture
def openai_settings(settings):
    settings.CHORUS_LLM_PROVIDER = "openai"
    settings.CHORUS_LLM_API_KEY = "sk-test"
    settings.CHORUS_LLM_TIMEOUT_SECONDS = 0.5
    settings.CHORUS_PROGRESS_FLUSH_MS = 0
    return settings


@pytest.fixture
async def stop_worker():
    yield
    if runner.current_worker() is not None:
        await runner.current_worker().stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("model", "last_event", "content"),
    [
        ("normal", "message_regenerated", "".join(FakeOpenAI.answer)),
        ("error-mid", "regeneration_error", "".join(FakeOpenAI.answer[:2])),
        ("hang-mid", "regeneration_error", FakeOpenAI.answer[0]),
    ],
)
async def test_regeneration_with_the_openai_provider(
    asgi_app, collab, alice, bob, carol, openai_settings, stop_worker, model, last_event, content
):
    async with FakeOpenAI() as server:
        openai_settings.CHORUS_LLM_BASE_URL = server.base_url
        openai_settings.CHORUS_LLM_MODEL = model
        post = database_sync_to_async(services.message_create)
        question = await post(session=collab, author=alice, content="Hi there")
        async with stream_of(asgi_app, collab, await auth(carol)) as stream:
            await stream.next_event()
            response = await call(
                asgi_app,
                "POST",
                "/api/v1/chat_actions/regenerate",
                bob,
                body={"sessionId": str(collab.pk), "messageId": str(question.pk)},
            )
            assert response.status_code == 202
            frames = await events_until(stream, {"message_regenerated", "regeneration_error", "regeneration_cancelled"})
    assert frames[-1].event == last_event
    assert reassemble(frames, response.json()["messageId"]) == content
    if last_event == "regeneration_error":
        assert frames[-1].json["data"]["error"] in (FAILED, TIMED_OUT)
    else:
        assert frames[-1].json["data"]["content"] == content
    sent = server.requests[0]["json"]["messages"]
    assert sent[-1] == {"role": "user", "content": "Hi there", "name": "alice"}


@pytest.mark.django_db(transaction=True)
async def test_cancelling_an_openai_regeneration_closes_the_upstream_stream(
    asgi_app, collab, alice, bob, openai_settings, stop_worker
):
    async with FakeOpenAI() as server:
        openai_settings.CHORUS_LLM_BASE_URL = server.base_url
        openai_settings.CHORUS_LLM_MODEL = "slow"
        question = await database_sync_to_async(services.message_create)(session=collab, author=alice, content="Go")
        async with stream_of(asgi_app, collab, await auth(alice)) as stream:
            await stream.next_event()
            body = {"sessionId": str(collab.pk), "messageId": str(question.pk)}
            response = await call(asgi_app, "POST", "/api/v1/chat_actions/regenerate", bob, body=body)
            await events_until(stream, {"regeneration_progress"})
            cancelled_at = time.monotonic()
            cancel = await call(
                asgi_app, "POST", f"/api/v1/regenerations/{response.json()['regenerationId']}/cancel/", bob
            )
            assert cancel.status_code == 202
            await asyncio.wait_for(server.disconnected.wait(), 1.0)
            assert server.disconnected_at - cancelled_at < 1.0
