"""Resource limits of regenerations: bytes written per flush, the output cap, and the
per-process cap on runs at once (CHORUS_REGENERATION_MAX_CHARS / _MAX_CONCURRENT)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app import services
from sessions_app.models import Message, Regeneration
from sessions_app.providers import Turn
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services
from tests.sessions_app.regen_support import (  # noqa: F401 (autouse)
    ScriptedProvider,
    auth,
    call,
    events_until,
    reassemble,
    stop_regeneration_worker,
    stream_of,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

TERMINAL = {"message_regenerated", "regeneration_error", "regeneration_cancelled"}


@pytest.fixture(autouse=True)
def _fast_and_fresh(settings):
    settings.CHORUS_PROGRESS_FLUSH_MS = 10
    settings.CHORUS_REGENERATION_RATE_USER = "1000/minute"
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def use_provider(monkeypatch):
    def install(provider):
        monkeypatch.setattr(runner, "get_provider", lambda name=None: provider)
        return provider

    return install


post_message = database_sync_to_async(services.message_create)


async def regenerate(app, user, session, message):
    body = {"sessionId": str(session.pk), "messageId": str(message.pk)}
    return await call(app, "POST", "/api/v1/chat_actions/regenerate", user, body=body)


def test_a_flush_writes_its_delta_not_the_content_so_far(api, collab, bob, carol, monkeypatch):
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=collab, author=bob, content="Tell me everything")
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    plan = regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="test")
    long_text = "é" * 50_000
    assert regeneration_services.regeneration_append(
        plan=plan, content=long_text, offset=0, delta=long_text, progress=50
    )
    with CaptureQueriesContext(connection) as flush:
        assert regeneration_services.regeneration_append(
            plan=plan, content=long_text + "!", offset=50_000, delta="!", progress=51
        )
    written = sum(len(query["sql"]) for query in flush.captured_queries)
    assert written < 5_000, f"a one-character flush sent {written} characters of SQL"
    # No content column is rewritten at every flush (issue 12: an UPDATE writes a whole
    # row version), only when the text doubled (the first flush's checkpoint here);
    # readers get the content so far from it and the stored deltas after it...
    assert Regeneration.objects.get(pk=plan.regeneration_id).content == long_text
    detail = api(carol).get(f"/api/v1/regenerations/{plan.regeneration_id}/").json()
    assert detail["content"] == long_text + "!" and detail["progress"] == 51
    listed = api(carol).get(f"/api/v1/sessions/{collab.pk}/messages/").json()["results"]
    assert [m["content"] for m in listed if m["id"] == str(plan.message_id)] == [long_text + "!"]
    one = api(carol).get(f"/api/v1/sessions/{collab.pk}/messages/{plan.message_id}/").json()
    assert one["content"] == long_text + "!"
    # ...and the rows get it when the run ends (here: failed, keeping what was streamed).
    assert regeneration_services.regeneration_fail(plan=plan, error="stopped")
    assert Regeneration.objects.get(pk=plan.regeneration_id).content == long_text + "!"
    assert Message.objects.get(pk=plan.message_id).content == long_text + "!"


async def test_a_run_stops_at_the_output_limit_with_a_clear_error(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    settings.CHORUS_REGENERATION_MAX_CHARS = 10
    provider = use_provider(ScriptedProvider(["abcdef", "ghijkl", *(["never read "] * 1000)]))
    question = await post_message(session=collab, author=alice, content="Talk forever")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        frames = await events_until(stream, TERMINAL)
    expected = "The answer reached the limit of 10 characters and was stopped there."
    assert frames[-1].event == "regeneration_error"
    assert frames[-1].json["data"]["error"] == expected
    assert reassemble(frames, response.json()["messageId"]) == "abcdefghij"
    await asyncio.wait_for(provider.closed.wait(), 5)
    assert provider.yielded < 10, "the provider was read on past the limit"
    detail = await call(asgi_app, "GET", f"/api/v1/regenerations/{response.json()['regenerationId']}/", carol)
    assert detail.json() | {"createdAt": None, "finishedAt": None, "progress": None} == {
        "id": response.json()["regenerationId"],
        "sessionId": str(collab.pk),
        "messageId": response.json()["messageId"],
        "status": "failed",
        "progress": None,
        "content": "abcdefghij",
        "error": expected,
        "createdAt": None,
        "finishedAt": None,
    }


class CountingProvider(ScriptedProvider):
    """Counts the streams open at once; each waits on `release` before its chunks."""

    def __init__(self, chunks: Sequence[str]) -> None:
        super().__init__(chunks)
        self.active = 0
        self.most_active = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def stream(self, conversation: Sequence[Turn]) -> AsyncIterator[str]:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.entered.set()
        try:
            await self.release.wait()
            for chunk in self.chunks:
                yield chunk
        finally:
            self.active -= 1


async def test_runs_beyond_the_concurrency_limit_wait_queued_with_their_lease_kept(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    settings.CHORUS_REGENERATION_MAX_CONCURRENT = 1
    provider = use_provider(CountingProvider(["an ", "answer"]))
    first, second = [await post_message(session=collab, author=alice, content=f"Question {i}") for i in range(2)]
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        one = await regenerate(asgi_app, bob, collab, first)
        two = await regenerate(asgi_app, bob, collab, second)
        assert (one.status_code, two.status_code) == (202, 202)
        await asyncio.wait_for(provider.entered.wait(), 5)
        worker = runner.current_worker()
        waiting = worker.tasks[two.json()["regenerationId"]]
        assert not waiting.done()
        queued = await database_sync_to_async(Regeneration.objects.get)(pk=two.json()["regenerationId"])
        assert queued.status == "queued"
        # Waiting for a slot is not a lost run: its lease is renewed, the reaper spares it.
        stale = timezone.now() - timedelta(hours=1)
        await database_sync_to_async(Regeneration.objects.filter(pk=queued.pk).update)(heartbeat_at=stale)
        assert await worker.maintain_once() == []
        renewed = await database_sync_to_async(Regeneration.objects.get)(pk=queued.pk)
        assert renewed.heartbeat_at > stale and renewed.status == "queued"
        provider.release.set()
        done = set()
        async with asyncio.timeout(10):
            while len(done) < 2:
                frame = await stream.next_event()
                if frame.event in TERMINAL:
                    assert frame.event == "message_regenerated"
                    done.add(frame.json["data"]["messageId"])
    assert provider.most_active == 1
