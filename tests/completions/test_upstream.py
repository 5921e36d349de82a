"""The `openai` provider behind /v1/: a fake OpenAI-compatible upstream on 127.0.0.1
passes tokens through, fails, hangs and drops as real ones do (CONTRACT §8)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from sessions_app.providers.openai_compatible import FAILED, TIMED_OUT
from tests.completions.conftest import api_key, raw_client, sdk, wait_for_logs
from tests.sessions_app.fake_openai import FakeOpenAI

MODELS = ["normal", "slow", "error-mid", "drop-mid", "hang", "hang-mid", "status-429", "status-500"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


@pytest.fixture
async def upstream(completion_settings):
    async with FakeOpenAI() as server:
        completion_settings.CHORUS_LLM_PROVIDER = "openai"
        completion_settings.CHORUS_LLM_BASE_URL = server.base_url
        completion_settings.CHORUS_LLM_API_KEY = "sk-upstream"
        completion_settings.CHORUS_LLM_MODEL = "chorus-default"
        completion_settings.CHORUS_LLM_TIMEOUT_SECONDS = 0.5
        completion_settings.CHORUS_COMPLETIONS_MODEL_MAP = "fast=normal," + ",".join(MODELS)
        yield server


async def test_models_are_the_configured_model_and_the_map(upstream, chorus_server, alice):
    models = await (await sdk(chorus_server, alice)).models.list()
    assert [m.id for m in models.data] == ["chorus-default", "fast", *MODELS]


async def test_tokens_pass_through_with_the_upstreams_usage(upstream, chorus_server, alice):
    client = await sdk(chorus_server, alice)
    stream = await client.chat.completions.create(
        model="fast", messages=MESSAGES, stream=True, temperature=0.2, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(FakeOpenAI.answer)
    assert chunks[-1].usage.prompt_tokens == FakeOpenAI.prompt_tokens
    assert chunks[-1].usage.completion_tokens == len(FakeOpenAI.answer)
    sent = upstream.requests[0]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream"
    assert sent["json"]["model"] == "normal"  # "fast" maps to it
    assert sent["json"]["messages"] == MESSAGES  # as given: no system prompt of ours
    assert sent["json"]["temperature"] == 0.2 and sent["json"]["max_tokens"] == 4096
    [log] = await wait_for_logs(1)
    assert (log.status, log.provider, log.prompt_tokens) == ("completed", "openai", FakeOpenAI.prompt_tokens)


async def test_upstream_length_is_passed_on(upstream, chorus_server, alice):
    completion = await (await sdk(chorus_server, alice)).chat.completions.create(
        model="normal", messages=MESSAGES, max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "".join(FakeOpenAI.answer[:3])
    assert upstream.requests[0]["json"]["max_tokens"] == 3


@pytest.mark.parametrize(
    ("model", "received", "message"),
    [
        ("error-mid", FakeOpenAI.answer[:2], FAILED),
        ("drop-mid", FakeOpenAI.answer[:2], FAILED),
        ("hang-mid", FakeOpenAI.answer[:1], TIMED_OUT),
    ],
)
async def test_failure_after_the_first_token_is_an_in_band_error(
    upstream, chorus_server, alice, model, received, message
):
    client = await sdk(chorus_server, alice)
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    text = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "".join(received)
    assert raised.value.message == message
    assert raised.value.body["type"] == "server_error"
    [log] = await wait_for_logs(1)
    assert (log.status, log.http_status, log.error) == ("failed", 200, message)
    assert log.completion_chars == len("".join(received))


async def test_the_in_band_error_is_followed_by_done(upstream, chorus_server, alice):
    async with raw_client(chorus_server, await api_key(alice)) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "error-mid", "messages": MESSAGES, "stream": True}
        )
    frames = [line for line in response.text.split("\n\n") if line]
    assert frames[-2].startswith('data: {"error":') and frames[-1] == "data: [DONE]"
    assert "Traceback" not in response.text and "token 3" not in response.text


@pytest.mark.parametrize(
    ("model", "error", "status", "code"),
    [
        ("hang", openai.InternalServerError, 504, "upstream_timeout"),
        ("status-500", openai.InternalServerError, 502, "upstream_error"),
        ("status-429", openai.RateLimitError, 429, "upstream_rate_limited"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_failure_before_the_first_token_is_a_status(
    upstream, chorus_server, alice, model, error, status, code, stream
):
    client = await sdk(chorus_server, alice)
    started = time.monotonic()
    with pytest.raises(error) as raised:
        response = await client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        if stream:
            [chunk async for chunk in response]
    assert raised.value.status_code == status
    assert raised.value.body["code"] == code
    assert time.monotonic() - started < 5
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"
    [log] = await wait_for_logs(1)
    assert (log.status, log.http_status) == ("failed", status)


async def test_a_caller_that_goes_away_closes_the_upstream_within_a_second(upstream, chorus_server, alice):
    async with raw_client(chorus_server, await api_key(alice)) as client:
        body = {"model": "slow", "messages": MESSAGES, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            received = b""
            async for data in response.aiter_bytes():
                received += data
                if b"tick1" in received:
                    break
            gone_at = time.monotonic()
    await asyncio.wait_for(upstream.disconnected.wait(), 1.0)
    assert upstream.disconnected_at - gone_at < 1.0
    [log] = await wait_for_logs(1)
    assert log.status == "cancelled" and log.completion_tokens >= 2
    assert log.duration_seconds < 5
