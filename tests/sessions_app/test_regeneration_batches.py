"""The flushes of a process's runs that fall due together are written as one batch
(runner.RegenerationWorker.flush, services.regeneration_append_many), without changing
what any stream sees; a batch that fails is written again one flush at a time, so one
bad flush does not fail the other runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache

from sessions_app import services
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

RUNS = 3
CHUNKS = [f"word{i} é🚀 " for i in range(30)]


@pytest.fixture(autouse=True)
def _fast_and_fresh(settings):
    settings.CHORUS_PROGRESS_FLUSH_MS = 20
    settings.CHORUS_REGENERATION_RATE_USER = "1000/minute"
    cache.clear()
    yield
    cache.clear()


class PacedProvider(ScriptedProvider):
    """Yields its chunks a few milliseconds apart, so every run has text at every flush."""

    async def stream(self, conversation: Sequence[Turn]) -> AsyncIterator[str]:
        for chunk in self.chunks:
            await asyncio.sleep(0.004)
            yield chunk


@pytest.fixture
def batches(monkeypatch):
    """The size of every batch the worker writes; `fail_batches` makes batches of more
    than one flush raise."""
    sizes: list[int] = []
    real = regeneration_services.regeneration_append_many

    def spy(*, flushes):
        sizes.append(len(flushes))
        if spy.fail_batches and len(flushes) > 1:
            raise RuntimeError("a batch that fails")
        return real(flushes=flushes)

    spy.fail_batches = False
    spy.sizes = sizes
    monkeypatch.setattr(regeneration_services, "regeneration_append_many", spy)
    return spy


async def run_at_once(asgi_app, collab, alice, bob, carol, monkeypatch) -> list[tuple[str, str]]:
    """Start RUNS regenerations in one session at once; (final event, reassembled text) of each."""
    monkeypatch.setattr(runner, "get_provider", lambda name=None: PacedProvider(CHUNKS))
    post = database_sync_to_async(services.message_create)
    questions = [await post(session=collab, author=alice, content=f"Question {i}?") for i in range(RUNS)]
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        body = [{"sessionId": str(collab.pk), "messageId": str(q.pk)} for q in questions]
        responses = await asyncio.gather(
            *(call(asgi_app, "POST", "/api/v1/chat_actions/regenerate", bob, body=b) for b in body)
        )
        message_ids = [r.json()["messageId"] for r in responses]
        frames, ended = [], set()
        while len(ended) < RUNS:
            found = await events_until(stream, {"message_regenerated", "regeneration_error"})
            frames += found
            ended.add(found[-1].json["data"]["messageId"])
    finals = {
        f.json["data"]["messageId"]: f.event for f in frames if f.event in ("message_regenerated", "regeneration_error")
    }
    ids = [f.id for f in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap or a duplicate in the stream"
    return [(finals[m], reassemble(frames, m)) for m in message_ids]


async def test_flushes_that_fall_due_together_leave_as_one_batch(
    asgi_app, collab, alice, bob, carol, monkeypatch, batches
):
    results = await run_at_once(asgi_app, collab, alice, bob, carol, monkeypatch)
    assert results == [("message_regenerated", "".join(CHUNKS))] * RUNS
    assert max(batches.sizes) >= 2, batches.sizes
    assert sum(batches.sizes) < RUNS * len(CHUNKS)  # coalesced too


async def test_a_failed_batch_is_written_again_one_flush_at_a_time(
    asgi_app, collab, alice, bob, carol, monkeypatch, batches
):
    batches.fail_batches = True
    results = await run_at_once(asgi_app, collab, alice, bob, carol, monkeypatch)
    assert results == [("message_regenerated", "".join(CHUNKS))] * RUNS
    assert max(batches.sizes) >= 2, "no batch was tried, so none failed"
