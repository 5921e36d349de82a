"""Bad input gets an OpenAI-shaped 4xx and changes nothing but the generation log."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from realtime.models import Event
from sessions_app.models import Message, Regeneration
from tests.completions.conftest import api_key, raw_client, wait_for_logs

GOOD = {"model": "chorus-local", "messages": [{"role": "user", "content": "hello"}]}


def _body(**changes) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


CASES = [
    ("malformed json", b'{"model": "chorus-local", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("no model", _body(model=...), 400, "model"),
    ("model not a string", _body(model=3), 400, "model"),
    ("no messages", _body(messages=...), 400, "messages"),
    ("empty messages", _body(messages=[]), 400, "messages"),
    ("messages not a list", _body(messages="hi"), 400, "messages"),
    ("message not an object", _body(messages=["hi"]), 400, "messages.[0]"),
    ("unknown role", _body(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.[0].role"),
    ("content a number", _body(messages=[{"role": "user", "content": 5}]), 400, "messages.[0].content"),
    (
        "image content",
        _body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "messages.[0].content",
    ),
    ("stream not a bool", _body(stream="yes"), 400, "stream"),
    ("max_tokens a string", _body(max_tokens="10"), 400, "max_tokens"),
    ("max_tokens zero", _body(max_tokens=0), 400, "max_tokens"),
    ("max_tokens over the cap", _body(max_tokens=10**9), 400, "max_tokens"),
    ("temperature out of range", _body(temperature=3), 400, "temperature"),
    ("stream_options without stream", _body(stream_options={"include_usage": True}), 400, "stream_options"),
    ("n > 1", _body(n=2), 400, "n"),
    ("tools", _body(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    ("session not a uuid", _body(session="../etc"), 400, "session"),
    ("unknown model", _body(model="gpt-17"), 404, "model"),
    ("unknown session", _body(session="00000000-0000-0000-0000-000000000001"), 404, "session"),
]


def _counts() -> tuple[int, int, int]:
    return Message.objects.count(), Regeneration.objects.count(), Event.objects.count()


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_an_openai_error_and_only_a_log_row(chorus_server, alice, collab, name, body, status, param):
    before = await database_sync_to_async(_counts)()
    async with raw_client(chorus_server, await api_key(alice)) as client:
        response = await client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    [log] = await wait_for_logs(1)
    assert (log.status, log.http_status, log.user_id) == ("failed", status, alice.pk)
    assert log.error == error["message"]
    assert await database_sync_to_async(_counts)() == before


async def test_huge_body_is_refused_before_it_is_read(chorus_server, alice, completion_settings):
    completion_settings.CHORUS_COMPLETIONS_MAX_BODY_BYTES = 10_000
    huge = _body(messages=[{"role": "user", "content": "x" * 20_000}])
    async with raw_client(chorus_server, await api_key(alice)) as client:
        response = await client.post("/v1/chat/completions", content=huge)

        async def chunks():  # no Content-Length: the cap applies while reading
            for start in range(0, len(huge), 4096):
                yield huge[start : start + 4096]

        streamed = await client.post("/v1/chat/completions", content=chunks())
    for answer in (response, streamed):
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
    logs = await wait_for_logs(2)
    assert [(log.status, log.http_status) for log in logs] == [("failed", 413), ("failed", 413)]


async def test_no_credentials_is_401_whatever_the_body(chorus_server):
    async with raw_client(chorus_server) as client:
        response = await client.post("/v1/chat/completions", content=b"not json")
        models = await client.get("/v1/models")
    assert response.status_code == 401 and models.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_path_and_method_are_openai_errors(chorus_server, alice):
    async with raw_client(chorus_server, await api_key(alice)) as client:
        unknown = await client.post("/v1/embeddings", json={})
        wrong_method = await client.get("/v1/chat/completions")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
