"""Per-user limits and cancellation of the direct stream (CONTRACT §8)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.completions.conftest import api_key, raw_client, sdk, wait_for_logs

MESSAGES = [{"role": "user", "content": "Tell me about the roadmap for next quarter"}]


async def test_concurrent_completions_per_user_are_capped(chorus_server, alice, bob, completion_settings):
    completion_settings.CHORUS_COMPLETIONS_MAX_CONCURRENT = 1
    completion_settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 20
    client = await sdk(chorus_server, alice)
    first = await client.chat.completions.create(model="chorus-local", messages=MESSAGES, stream=True)
    chunks = first.__aiter__()  # held: a dropped iterator is closed, and the call with it
    await anext(chunks)  # the first call is running
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model="chorus-local", messages=MESSAGES)
    assert "at most 1" in raised.value.message and raised.value.response.headers["retry-after"] == "1"
    # Another user has slots of their own.
    other = await (await sdk(chorus_server, bob)).chat.completions.create(
        model="chorus-local", messages=MESSAGES, max_tokens=2
    )
    assert other.choices[0].finish_reason == "length"
    [_ async for _ in chunks]
    await wait_for_logs(3)
    # The slot is given back when a call ends.
    again = await client.chat.completions.create(model="chorus-local", messages=MESSAGES, max_tokens=2)
    assert again.choices[0].finish_reason == "length"


async def test_a_caller_that_gives_up_on_a_non_streamed_call_cancels_it(chorus_server, alice, completion_settings):
    completion_settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 50
    async with raw_client(chorus_server, await api_key(alice)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json={"model": "chorus-local", "messages": MESSAGES}, timeout=0.3)
    [log] = await wait_for_logs(1)
    assert (log.status, log.stream) == ("cancelled", False)
    assert 0 < log.completion_tokens < 20 and log.duration_seconds < 1.5


async def test_the_total_time_limit_ends_a_completion(chorus_server, alice, completion_settings):
    completion_settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 50
    completion_settings.CHORUS_COMPLETIONS_MAX_SECONDS = 0.3
    client = await sdk(chorus_server, alice)
    stream = await client.chat.completions.create(model="chorus-local", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as raised:
        [_ async for _ in stream]
    assert "too long" in raised.value.message
    [log] = await wait_for_logs(1)
    assert log.status == "failed" and 0.3 <= log.duration_seconds < 2


async def test_streams_and_logs_of_many_callers_at_once(chorus_server, alice, bob, carol):
    async def one(user) -> str:
        client = await sdk(chorus_server, user)
        stream = await client.chat.completions.create(model="chorus-local", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    texts = await asyncio.wait_for(asyncio.gather(*(one(u) for u in (alice, bob, carol, alice, bob))), 20)
    assert len(set(texts)) == 1 and texts[0]
    logs = await wait_for_logs(5)
    assert {log.status for log in logs} == {"completed"}
