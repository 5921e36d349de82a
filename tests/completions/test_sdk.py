"""The official `openai` package against a live Chorus server (CONTRACT §8)."""

from __future__ import annotations

import openai
import pytest

from sessions_app.providers import Turn
from sessions_app.providers.local import compose_answer
from tests.completions.conftest import sdk, wait_for_logs

QUESTION = "How should we plan the launch of the new product?"
MESSAGES = [{"role": "user", "content": QUESTION}]
ANSWER = compose_answer([Turn("user", QUESTION)]).text


async def test_models_lists_the_local_model(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["chorus-local"]
    assert models.data[0].object == "model" and models.data[0].owned_by == "chorus"
    assert (await client.models.retrieve("chorus-local")).id == "chorus-local"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-17")


async def test_streamed_completion_reads_the_whole_answer(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    stream = await client.chat.completions.create(model="chorus-local", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == "chorus-local" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    [log] = await wait_for_logs(1)
    assert (log.status, log.stream, log.model, log.http_status) == ("completed", True, "chorus-local", 200)
    assert log.user_id == alice.pk and log.message_count == 1 and log.prompt_chars == len(QUESTION)
    assert log.completion_chars == len(ANSWER) and log.completion_tokens == len(chunks) - 2
    assert log.first_token_seconds is not None and 0 <= log.first_token_seconds <= log.duration_seconds


async def test_non_streaming_completion_has_usage(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    completion = await client.chat.completions.create(model="chorus-local", messages=MESSAGES)
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", ANSWER, "stop")
    usage = completion.usage
    assert usage.completion_tokens > 10 and usage.prompt_tokens == len(QUESTION.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    [log] = await wait_for_logs(1)
    assert (log.status, log.stream, log.completion_tokens) == ("completed", False, usage.completion_tokens)


@pytest.mark.parametrize("stream", [True, False])
async def test_max_tokens_gives_finish_reason_length(chorus_server, alice, stream):
    client = await sdk(chorus_server, alice)
    response = await client.chat.completions.create(
        model="chorus-local", messages=MESSAGES, max_tokens=4, stream=stream
    )
    if stream:
        chunks = [chunk async for chunk in response]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        reason = chunks[-1].choices[0].finish_reason
    else:
        text, reason = response.choices[0].message.content, response.choices[0].finish_reason
        assert response.usage.completion_tokens == 4
    assert reason == "length"
    assert text == "".join(ANSWER.split(" ")[i] + " " for i in range(4))
    [log] = await wait_for_logs(1)
    assert (log.status, log.finish_reason, log.completion_tokens) == ("completed", "length", 4)


async def test_include_usage_sends_a_usage_chunk_with_no_choices(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    stream = await client.chat.completions.create(
        model="chorus-local", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert last.usage.completion_tokens == len(content_chunks)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_unknown_token_is_an_authentication_error(chorus_server, alice):
    client = await sdk(chorus_server, key="not-a-real-token")
    with pytest.raises(openai.AuthenticationError) as raised:
        await client.chat.completions.create(model="chorus-local", messages=MESSAGES)
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "invalid_api_key" and raised.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    [log] = await wait_for_logs(1)
    assert (log.status, log.http_status, log.user_id) == ("failed", 401, None)


async def test_unknown_model_is_not_found(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(model="gpt-17", messages=MESSAGES, stream=True)
    assert raised.value.body == {
        "message": "The model 'gpt-17' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_bad_request_names_the_parameter(chorus_server, alice):
    client = await sdk(chorus_server, alice)
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="chorus-local", messages=MESSAGES, temperature=7)
    assert raised.value.body["param"] == "temperature"


async def test_rate_limit_is_a_rate_limit_error_with_retry_after(chorus_server, alice, completion_settings):
    completion_settings.CHORUS_COMPLETIONS_RATE_USER = "2/minute"
    client = await sdk(chorus_server, alice)
    for _ in range(2):
        await client.chat.completions.create(model="chorus-local", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model="chorus-local", messages=MESSAGES)
    assert raised.value.status_code == 429
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60
    assert raised.value.body["code"] == "rate_limit_exceeded"
    # A completion's row is written as it ends, so the refusal's may come before the second's.
    statuses = sorted((log.status, log.http_status) for log in await wait_for_logs(3))
    assert statuses == [("completed", 200), ("completed", 200), ("failed", 429)]
