"""The direct stream on real server processes (PostgreSQL, Redis): the mirror reaches a
member connected to another process, the concurrency limit holds across processes, and
a server shutting down ends its open completions cleanly."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import openai
import pytest

from tests.crossprocess.conftest import async_client_for, new_session
from tests.sessions_app.regen_support import reassemble
from tests.support.http_sse import HttpStream
from tests.support.servers import Cluster, drop_templates

pytestmark = pytest.mark.services

QUESTION = "Draft the launch announcement for the new release"
MESSAGES = [{"role": "user", "content": QUESTION}]
ENV = {
    "CHORUS_LOCAL_TOKEN_DELAY_MS": "20",
    "CHORUS_COMPLETIONS_MAX_CONCURRENT": "1",
    "CHORUS_COMPLETIONS_RATE_USER": "1000/minute",
}


@pytest.fixture(scope="session", autouse=True)
def _drop_template_databases():
    yield
    drop_templates()


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def cluster(request, postgres_url, redis_url):
    running = Cluster(postgres_url=postgres_url, redis_url=redis_url, server=request.param, env=ENV).start()
    running.tokens = running.create_users("alice", "bob", "carol", "mallory")
    yield running
    running.stop()


def sdk(cluster: Cluster, index: int, user: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=cluster.urls[index] + "/v1", api_key=cluster.tokens[user], max_retries=0, timeout=30
    )


async def frames_until(stream: HttpStream, types: set[str], timeout: float = 20) -> list:
    found = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await stream.next_event(timeout)
            assert frame is not None, f"stream ended after {[f.event for f in found]}"
            if frame.id is not None:
                found.append(frame)
                if frame.event in types:
                    return found


async def test_a_member_on_another_process_sees_the_same_text(cluster):
    session = new_session(cluster)
    async with (
        async_client_for(cluster, 1, "alice") as member_http,
        HttpStream(member_http, f"/sse/sessions/{session['id']}/") as member,
    ):
        assert member.status == 200
        stream = await sdk(cluster, 0, "bob").chat.completions.create(
            model="chorus-local", messages=MESSAGES, stream=True, extra_body={"session": session["id"]}
        )
        received = "".join([c.choices[0].delta.content or "" async for c in stream])
        frames = await frames_until(member, {"message_regenerated", "regeneration_error", "regeneration_cancelled"})
    assert frames[0].event == "message_regenerating" and frames[-1].event == "message_regenerated"
    message_id = frames[0].json["data"]["messageId"]
    assert received and reassemble(frames, message_id) == received == frames[-1].json["data"]["content"]
    async with async_client_for(cluster, 1, "carol") as viewer:
        messages = (await viewer.get(f"/api/v1/sessions/{session['id']}/messages/")).json()["results"]
    assert [m["content"] for m in messages if m["id"] == message_id] == [received]


async def test_a_caller_going_away_is_seen_by_both_servers(cluster):
    session = new_session(cluster)
    body = {"model": "chorus-local", "messages": MESSAGES, "stream": True, "session": session["id"]}
    async with (
        async_client_for(cluster, 1, "alice") as member_http,
        HttpStream(member_http, f"/sse/sessions/{session['id']}/") as member,
        async_client_for(cluster, 0, "bob") as caller,
    ):
        async with caller.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                if b'"content":"' in data.replace(b'"content":""', b""):
                    break
        frames = await frames_until(member, {"message_regenerated", "regeneration_error", "regeneration_cancelled"})
    assert frames[-1].event == "regeneration_cancelled"


async def test_the_concurrency_limit_holds_across_processes(cluster):
    first = await sdk(cluster, 0, "carol").chat.completions.create(model="chorus-local", messages=MESSAGES, stream=True)
    chunks = first.__aiter__()  # held: a dropped iterator is closed, and the call with it
    await anext(chunks)
    with pytest.raises(openai.RateLimitError):
        await sdk(cluster, 1, "carol").chat.completions.create(model="chorus-local", messages=MESSAGES)
    await first.close()


def _log_rows(cluster: Cluster) -> list[dict]:
    code = (
        "import json\n"
        "from completions.models import GenerationLog\n"
        "from sessions_app.models import Regeneration\n"
        "rows = list(GenerationLog.objects.order_by('id').values('status', 'error', 'message_id'))\n"
        "for row in rows:\n"
        "    row['regeneration'] = Regeneration.objects.filter(message_id=row['message_id'])"
        ".values_list('status', flat=True).first()\n"
        "    row['message_id'] = str(row['message_id'])\n"
        "print(json.dumps(rows))\n"
    )
    return json.loads(cluster.manage_script(code).strip().splitlines()[-1])


async def test_shutdown_ends_open_completions_cleanly(postgres_url, redis_url):
    cluster = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        processes=1,
        env={**ENV, "CHORUS_LOCAL_TOKEN_DELAY_MS": "200"},
    ).start()
    try:
        cluster.tokens = cluster.create_users("alice", "bob", "carol")
        session = new_session(cluster)
        body = {"model": "chorus-local", "messages": MESSAGES, "stream": True, "session": session["id"]}
        async with (
            httpx.AsyncClient(
                base_url=cluster.urls[0], headers={"Authorization": f"Bearer {cluster.tokens['bob']}"}, timeout=30
            ) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            chunks = response.aiter_text()
            received = await anext(chunks)
            cluster.procs[0].send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                async for text in chunks:
                    received += text
        assert received.rstrip().endswith("data: [DONE]")
        last_error = json.loads(received.rstrip().split("\n\n")[-2].removeprefix("data: "))["error"]
        assert last_error["code"] == "shutting_down"
        # uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert cluster.procs[0].wait(15) in (0, -signal.SIGTERM)
        assert "Traceback" not in cluster.log_text(0)
        [row] = _log_rows(cluster)
        assert (row["status"], row["regeneration"]) == ("cancelled", "cancelled")
    finally:
        cluster.stop()
