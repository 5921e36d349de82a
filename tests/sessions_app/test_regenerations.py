"""Regenerations end to end, in-process: REST calls and SSE streams on the test's loop,
so the runner runs as it does in a server process."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Message, MessageRole, Regeneration, RegenerationStatus
from sessions_app.providers import ProviderError, Turn
from sessions_app.providers.local import compose_answer
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
REGENERATE = "/api/v1/chat_actions/regenerate"


@pytest.fixture(autouse=True)
def _fast_and_fresh(settings):
    settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 1
    settings.CHORUS_PROGRESS_FLUSH_MS = 10
    settings.CHORUS_LOCAL_THOUGHT_STEPS = 2
    cache.clear()  # throttle counters
    yield
    cache.clear()


@pytest.fixture
def use_provider(monkeypatch):
    """use_provider(p): the runner gets `p` instead of the configured provider."""

    def install(provider):
        monkeypatch.setattr(runner, "get_provider", lambda name=None: provider)
        return provider

    return install


post_message = database_sync_to_async(services.message_create)
last_event_id = database_sync_to_async(lambda session: CollabSession.objects.get(pk=session.pk).last_event_id)
get_regeneration = database_sync_to_async(lambda pk: Regeneration.objects.get(pk=pk))


async def regenerate(app, user, session, message, **extra):
    body = {"sessionId": str(session.pk), "messageId": str(message.pk), **extra}
    return await call(app, "POST", REGENERATE, user, body=body)


async def finished(task: asyncio.Task, timeout: float) -> None:
    """Wait until `task` is done however it ended (cancelled runs end cancelled)."""
    await asyncio.wait([task], timeout=timeout)
    assert task.done(), f"the run did not stop within {timeout} s"


async def all_runs_finished(timeout: float = 10) -> None:
    worker = runner.current_worker()
    tasks = list(worker.tasks.values()) if worker is not None else []
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    assert all(t.done() for t in tasks)


def slow_gate(seconds: float = 0.01):
    async def gate():
        await asyncio.sleep(seconds)

    return gate


# --- the full flow ------------------------------------------------------------------------
async def test_full_regeneration_reaches_a_second_members_stream(asgi_app, collab, alice, bob, carol):
    question = await post_message(session=collab, author=alice, content="How should we plan the café launch? ☕")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()  # connection
        started = time.monotonic()
        response = await regenerate(asgi_app, bob, collab, question)
        assert response.status_code == 202, response.text
        body = response.json()
        frames = await events_until(stream, TERMINAL)
        first_progress_ms = None
    assert body["success"] is True
    assert body["originalMessageId"] == str(question.pk)
    assert body["taskId"] == body["regenerationId"]
    kinds = [f.event for f in frames]
    assert kinds[0] == "message_regenerating"
    assert frames[0].json["data"] == {
        "messageId": body["messageId"],
        "originalMessageId": str(question.pk),
        "taskId": body["taskId"],
        "regenerationId": body["regenerationId"],
        "userQuery": None,
    }
    thoughts = ["thought_process_start", "thought_process_step", "thought_process_step", "thought_process_complete"]
    assert kinds[1:5] == thoughts
    assert set(kinds[5:-1]) == {"regeneration_progress"}
    assert kinds[-1] == "message_regenerated"
    assert [f.id for f in frames] == list(range(frames[0].id, frames[0].id + len(frames)))
    progress = [f.json["data"]["progress"] for f in frames if f.event == "regeneration_progress"]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    content = reassemble(frames, body["messageId"])
    assert content == frames[-1].json["data"]["content"]
    assert content == compose_answer([Turn("user", question.content, "alice")]).text
    first_progress_ms = (time.monotonic() - started) * 1000
    assert first_progress_ms < 10_000

    detail = await call(asgi_app, "GET", f"/api/v1/regenerations/{body['regenerationId']}/", carol)
    assert detail.status_code == 200
    assert detail.json() | {"createdAt": None, "finishedAt": None} == {
        "id": body["regenerationId"],
        "sessionId": str(collab.pk),
        "messageId": body["messageId"],
        "status": "completed",
        "progress": 100,
        "content": content,
        "error": None,
        "createdAt": None,
        "finishedAt": None,
    }
    stored = await database_sync_to_async(Message.objects.get)(pk=body["messageId"])
    assert (stored.content, stored.role, stored.original_message_id) == (content, "assistant", question.pk)
    listed = await call(asgi_app, "GET", f"/api/v1/sessions/{collab.pk}/messages/", carol)
    assert listed.json()["results"][-1]["content"] == content


async def test_reply_true_posts_the_message_and_streams_the_answer(asgi_app, collab, bob, carol):
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await call(
            asgi_app,
            "POST",
            f"/api/v1/sessions/{collab.pk}/messages/",
            bob,
            body={"content": "Summarise the budget discussion", "reply": True},
        )
        assert response.status_code == 201, response.text
        frames = await events_until(stream, TERMINAL)
    body = response.json()
    assert body["content"] == "Summarise the budget discussion" and body["author"] == "bob"
    assert [f.event for f in frames[:2]] == ["message_created", "message_regenerating"]
    assert frames[0].json["data"]["messageId"] == body["id"]
    started = frames[1].json["data"]
    assert started["regenerationId"] == body["regenerationId"]
    assert started["originalMessageId"] is None  # an answer, not a new version of the question
    assert frames[-1].event == "message_regenerated"
    expected = compose_answer([Turn("user", "Summarise the budget discussion", "bob")]).text
    assert reassemble(frames, started["messageId"]) == frames[-1].json["data"]["content"] == expected
    regeneration = await get_regeneration(body["regenerationId"])
    assert regeneration.status == RegenerationStatus.COMPLETED


async def test_reply_false_starts_nothing(asgi_app, collab, bob):
    response = await call(
        asgi_app, "POST", f"/api/v1/sessions/{collab.pk}/messages/", bob, body={"content": "just a note"}
    )
    assert response.status_code == 201
    assert "regenerationId" not in response.json()
    assert await database_sync_to_async(Regeneration.objects.count)() == 0


async def test_query_is_appended_to_the_conversation(asgi_app, collab, alice, bob, carol):
    question = await post_message(session=collab, author=alice, content="Draft the agenda")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question, query="Shorter, with dates")
        frames = await events_until(stream, TERMINAL)
    assert frames[0].json["data"]["userQuery"] == "Shorter, with dates"
    conversation = [Turn("user", "Draft the agenda", "alice"), Turn("user", "Shorter, with dates", "bob")]
    assert frames[-1].json["data"]["content"] == compose_answer(conversation).text
    assert response.status_code == 202


async def test_regenerating_an_assistant_message_answers_the_conversation_before_it(asgi_app, collab, alice, bob):
    question = await post_message(session=collab, author=alice, content="Which venue?")
    old_answer = await post_message(session=collab, author=None, content="The old answer", role=MessageRole.ASSISTANT)
    await post_message(session=collab, author=alice, content="A later remark")
    response = await regenerate(asgi_app, bob, collab, old_answer)
    regeneration_id = response.json()["regenerationId"]
    task = runner.current_worker().tasks[regeneration_id]
    await asyncio.wait_for(task, 10)
    regeneration = await get_regeneration(regeneration_id)
    assert regeneration.status == RegenerationStatus.COMPLETED
    assert regeneration.content == compose_answer([Turn("user", question.content, "alice")]).text
    new_message = await database_sync_to_async(Message.objects.get)(pk=response.json()["messageId"])
    assert new_message.original_message_id == old_answer.pk


# --- reconnect ------------------------------------------------------------------------------
async def test_reconnect_mid_regeneration_with_last_event_id_rebuilds_the_same_content(
    asgi_app, collab, alice, bob, carol, use_provider
):
    resume = asyncio.Event()
    chunks = [f"chunk {i} ✓ " for i in range(10)] + ["👩‍👩‍👧 ", "naïve ", "café ", "end."]
    sent = 0

    async def gate():
        nonlocal sent
        sent += 1
        if sent > 5:
            await resume.wait()
        else:
            await asyncio.sleep(0.002)

    use_provider(ScriptedProvider(chunks, gate=gate))
    question = await post_message(session=collab, author=alice, content="Tell me a story")
    async with stream_of(asgi_app, collab, await auth(alice)) as steady:
        await steady.next_event()
        async with stream_of(asgi_app, collab, await auth(carol)) as flaky:
            await flaky.next_event()
            response = await regenerate(asgi_app, bob, collab, question)
            message_id = response.json()["messageId"]
            before = []
            async with asyncio.timeout(10):
                while reassemble(before, message_id) != "".join(chunks[:5]):
                    frame = await flaky.next_event()
                    if frame.id is not None:
                        before.append(frame)
        # carol is gone; the regeneration goes on and finishes while she is away.
        resume.set()
        steady_frames = await events_until(steady, TERMINAL)
    assert steady_frames[-1].event == "message_regenerated"
    headers = {**await auth(carol), "Last-Event-ID": str(before[-1].id)}
    async with stream_of(asgi_app, collab, headers) as again:
        await again.next_event()
        after = await events_until(again, TERMINAL)
    ids = [f.id for f in before + after]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "no gap, no duplicate"
    rebuilt = reassemble(before + after, message_id)
    assert rebuilt == reassemble(steady_frames, message_id) == "".join(chunks)
    assert rebuilt == after[-1].json["data"]["content"]


# --- cancellation ---------------------------------------------------------------------------
async def test_cancel_stops_the_provider_and_nothing_follows_the_cancelled_event(
    asgi_app, collab, alice, bob, carol, use_provider
):
    provider = use_provider(ScriptedProvider([f"t{i} " for i in range(10_000)], gate=slow_gate()))
    question = await post_message(session=collab, author=alice, content="Go on and on")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        regeneration_id = response.json()["regenerationId"]
        await events_until(stream, {"regeneration_progress"})
        task = runner.current_worker().tasks[regeneration_id]
        refused = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", carol)
        assert refused.status_code == 403
        cancelled_at = time.monotonic()
        cancel = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", bob)
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["status"] == "cancelled"
        await asyncio.wait_for(provider.closed.wait(), 1.0)
        await finished(task, 1.0)
        assert time.monotonic() - cancelled_at < 1.0
        frames = await events_until(stream, {"regeneration_cancelled"})
        assert frames[-1].json["data"] == {"messageId": response.json()["messageId"], "taskId": regeneration_id}
        # Cancelling again changes nothing; the next event is the sentinel, not progress.
        again = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", alice)
        assert again.status_code == 202
        await post_message(session=collab, author=alice, content="sentinel")
        following = await stream.next_event()
        assert (following.event, following.json["data"]["content"]) == ("message_created", "sentinel")
    regeneration = await get_regeneration(regeneration_id)
    assert regeneration.status == RegenerationStatus.CANCELLED
    assert regeneration.finished_at is not None
    assert regeneration.content == "".join(f"t{i} " for i in range(provider.yielded))[: len(regeneration.content)]


def silent_after_first_chunk():
    """A provider gate that lets the first chunk through, then hangs forever (a provider
    that went silent: nothing it does would notice a cancel)."""
    silent = asyncio.Event()  # never set
    calls = 0

    async def gate():
        nonlocal calls
        calls += 1
        if calls > 1:
            await silent.wait()

    return gate


async def test_the_cancel_command_stops_a_silent_provider_at_once(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    """No write would notice the cancel (the provider is silent) and the lease renewal
    is far away: the control message through the hub is what stops the run."""
    settings.CHORUS_REGENERATION_HEARTBEAT_SECONDS = 30
    provider = use_provider(ScriptedProvider(["first ", "never"], gate=silent_after_first_chunk()))
    question = await post_message(session=collab, author=alice, content="Go on")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        await events_until(stream, {"regeneration_progress"})
        regeneration_id = response.json()["regenerationId"]
        task = runner.current_worker().tasks[regeneration_id]
        cancelled_at = time.monotonic()
        cancel = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", bob)
        assert cancel.status_code == 202
        await asyncio.wait_for(provider.closed.wait(), 1.0)
        await finished(task, 1.0)
        assert time.monotonic() - cancelled_at < 1.0
        frames = await events_until(stream, {"regeneration_cancelled"})
    assert [f.event for f in frames] == ["regeneration_cancelled"]


async def test_cancel_is_noticed_through_the_lease_when_the_command_is_lost(
    asgi_app, collab, alice, bob, carol, use_provider, monkeypatch, settings
):
    """A provider that went silent writes nothing, so only the cancel command or the
    lease renewal (which reads the status) can stop it; here the command is lost."""
    settings.CHORUS_REGENERATION_HEARTBEAT_SECONDS = 0.05
    monkeypatch.setattr(regeneration_services, "send_cancel_command", lambda regeneration_id: None)
    provider = use_provider(ScriptedProvider(["first ", "never"], gate=silent_after_first_chunk()))
    question = await post_message(session=collab, author=alice, content="Go on")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        await events_until(stream, {"regeneration_progress"})
    regeneration_id = response.json()["regenerationId"]
    task = runner.current_worker().tasks[regeneration_id]
    assert (await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", bob)).status_code == 202
    await asyncio.wait_for(provider.closed.wait(), 1.0)
    await finished(task, 1.0)


async def test_cancelling_a_finished_regeneration_is_409(asgi_app, collab, alice, bob):
    question = await post_message(session=collab, author=alice, content="Quick one")
    response = await regenerate(asgi_app, bob, collab, question)
    regeneration_id = response.json()["regenerationId"]
    await asyncio.wait_for(runner.current_worker().tasks[regeneration_id], 10)
    before = await last_event_id(collab)
    cancel = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration_id}/cancel/", bob)
    assert cancel.status_code == 409
    assert "completed" in cancel.json()["detail"]
    assert await last_event_id(collab) == before


# --- failures -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (RuntimeError("password=hunter2 in a stack frame"), regeneration_services.GENERIC_ERROR),
        (ProviderError("The assistant service is busy right now."), "The assistant service is busy right now."),
    ],
)
async def test_provider_failure_is_a_user_fit_regeneration_error(
    asgi_app, collab, alice, bob, carol, use_provider, failure, expected
):
    use_provider(ScriptedProvider(["partial ", "text"], fail_with=failure))
    question = await post_message(session=collab, author=alice, content="Break, please")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        frames = await events_until(stream, TERMINAL)
    assert frames[-1].event == "regeneration_error"
    assert frames[-1].json["data"] == {
        "messageId": response.json()["messageId"],
        "taskId": response.json()["taskId"],
        "error": expected,
    }
    assert "hunter2" not in frames[-1].data and "Traceback" not in frames[-1].data
    assert reassemble(frames, response.json()["messageId"]) == "partial text"
    regeneration = await get_regeneration(response.json()["regenerationId"])
    assert (regeneration.status, regeneration.error, regeneration.content) == ("failed", expected, "partial text")
    detail = await call(asgi_app, "GET", f"/api/v1/regenerations/{regeneration.pk}/", carol)
    assert detail.json()["error"] == expected and detail.json()["status"] == "failed"


async def test_a_killed_runner_is_failed_by_the_reaper_of_a_live_worker(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    """Death of the runner's process, simulated: its task vanishes without writing
    anything; the lease expires and the maintenance loop marks the run failed."""
    settings.CHORUS_REGENERATION_HEARTBEAT_SECONDS = 0.05
    settings.CHORUS_REGENERATION_LEASE_SECONDS = 0.3
    use_provider(ScriptedProvider([f"t{i} " for i in range(10_000)], gate=slow_gate()))
    question = await post_message(session=collab, author=alice, content="Run until you die")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        regeneration_id = response.json()["regenerationId"]
        await events_until(stream, {"regeneration_progress"})
        task = runner.current_worker().tasks[regeneration_id]
        task.cancel()  # no cleanup runs for a cancelled run: as if the process were killed
        await asyncio.gather(task, return_exceptions=True)
        killed_at = time.monotonic()
        frames = await events_until(stream, TERMINAL, timeout=5)
    assert frames[-1].event == "regeneration_error"
    assert frames[-1].json["data"]["error"] == regeneration_services.LOST_ERROR
    assert time.monotonic() - killed_at < 3
    regeneration = await get_regeneration(regeneration_id)
    assert regeneration.status == RegenerationStatus.FAILED


async def test_reaper_fails_only_expired_leases_and_only_once(asgi_app, collab, alice, bob, monkeypatch):
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)
    first = await post_message(session=collab, author=alice, content="one")
    second = await post_message(session=collab, author=alice, content="two")
    start = database_sync_to_async(regeneration_services.regeneration_start)
    stale = await start(session=collab, source_message=first, requested_by=bob)
    fresh = await start(session=collab, source_message=second, requested_by=bob)
    old = timezone.now() - timezone.timedelta(seconds=3600)
    await database_sync_to_async(Regeneration.objects.filter(pk=stale.pk).update)(status="running", heartbeat_at=old)
    before = await last_event_id(collab)
    reap = database_sync_to_async(regeneration_services.regenerations_reap_stale)
    assert await reap() == [stale.pk]
    assert await reap() == []
    assert await last_event_id(collab) == before + 1
    assert (await get_regeneration(stale.pk)).status == RegenerationStatus.FAILED
    assert (await get_regeneration(fresh.pk)).status == RegenerationStatus.QUEUED


# --- coalescing and Unicode -----------------------------------------------------------------
async def test_progress_is_coalesced_and_offsets_count_code_points(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    settings.CHORUS_PROGRESS_FLUSH_MS = 50
    tricky = ["👩‍👩‍👧", "é", "e\u0301", "𝄞", "中文", " ", "🇫🇷", "\n", "a"]
    chunks = [tricky[i % len(tricky)] for i in range(300)]
    use_provider(ScriptedProvider(chunks, gate=slow_gate(0.001)))
    question = await post_message(session=collab, author=alice, content="Unicode, please")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        started = time.monotonic()
        response = await regenerate(asgi_app, bob, collab, question)
        frames = await events_until(stream, TERMINAL)
        elapsed = time.monotonic() - started
    progress = [f for f in frames if f.event == "regeneration_progress"]
    assert len(progress) < len(chunks) / 5, "tokens must be coalesced"
    assert len(progress) <= elapsed / 0.05 + 3
    content = reassemble(frames, response.json()["messageId"])  # checks every offset
    assert content == "".join(chunks) == frames[-1].json["data"]["content"]
    detail = await call(asgi_app, "GET", f"/api/v1/regenerations/{response.json()['regenerationId']}/", bob)
    assert detail.json()["content"] == content


async def test_many_regenerations_run_at_once(asgi_app, collab, alice, bob, carol, settings):
    settings.CHORUS_REGENERATION_RATE_USER = "1000/minute"
    settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 5
    questions = [await post_message(session=collab, author=alice, content=f"Question {i}") for i in range(8)]
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        responses = await asyncio.gather(*(regenerate(asgi_app, bob, collab, q) for q in questions))
        assert all(r.status_code == 202 for r in responses)
        done: dict[str, str] = {}
        async with asyncio.timeout(20):
            while len(done) < len(questions):
                frame = await stream.next_event()
                if frame.event in TERMINAL:
                    done[frame.json["data"]["messageId"]] = frame.event
    assert set(done.values()) == {"message_regenerated"}
    # They overlapped: more than one was running at some point.
    rows = await database_sync_to_async(list)(Regeneration.objects.values_list("started_at", "finished_at"))
    assert any(s2 < f1 and s1 < f2 for (s1, f1) in rows for (s2, f2) in rows if (s1, f1) != (s2, f2))


# --- one at a time per message ----------------------------------------------------------------
async def test_one_active_regeneration_per_message(asgi_app, collab, alice, bob, use_provider):
    use_provider(ScriptedProvider([f"t{i} " for i in range(10_000)], gate=slow_gate()))
    question = await post_message(session=collab, author=alice, content="Once")
    first = await regenerate(asgi_app, bob, collab, question)
    assert first.status_code == 202
    count_messages = database_sync_to_async(Message.objects.count)
    before = await count_messages()
    second = await regenerate(asgi_app, alice, collab, question)
    assert second.status_code == 409
    assert "already running" in second.json()["detail"]
    new_message = await database_sync_to_async(Message.objects.get)(pk=first.json()["messageId"])
    third = await regenerate(asgi_app, alice, collab, new_message)
    assert third.status_code == 409
    assert "still being generated" in third.json()["detail"]
    assert await count_messages() == before
    assert await database_sync_to_async(Regeneration.objects.count)() == 1
    assert await database_sync_to_async(Event.objects.filter(type="message_regenerating").count)() == 1

    def second_active_row():
        with transaction.atomic():
            other = Message.objects.create(session=collab, role="assistant", content="")
            Regeneration.objects.create(session=collab, message=other, source_message=question, status="running")

    with pytest.raises(IntegrityError):
        await database_sync_to_async(second_active_row)()


# --- throttling -------------------------------------------------------------------------------
async def test_regenerations_are_throttled_per_user_with_retry_after(asgi_app, collab, alice, bob, settings):
    settings.CHORUS_REGENERATION_RATE_USER = "2/minute"
    questions = [await post_message(session=collab, author=alice, content=f"q{i}") for i in range(3)]
    assert (await regenerate(asgi_app, bob, collab, questions[0])).status_code == 202
    assert (await regenerate(asgi_app, bob, collab, questions[1])).status_code == 202
    await all_runs_finished()
    before = await last_event_id(collab)
    refused = await regenerate(asgi_app, bob, collab, questions[2])
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "throttled" in refused.json()["detail"].lower()
    reply = await call(
        asgi_app, "POST", f"/api/v1/sessions/{collab.pk}/messages/", bob, body={"content": "hi", "reply": True}
    )
    assert reply.status_code == 429
    assert await last_event_id(collab) == before, "a throttled request changes nothing"
    # Another user still may; and plain messages are never throttled.
    assert (await regenerate(asgi_app, alice, collab, questions[2])).status_code == 202
    plain = await call(asgi_app, "POST", f"/api/v1/sessions/{collab.pk}/messages/", bob, body={"content": "hi"})
    assert plain.status_code == 201


async def test_regenerations_are_throttled_per_session(asgi_app, collab, alice, bob, settings):
    settings.CHORUS_REGENERATION_RATE_USER = "100/minute"
    settings.CHORUS_REGENERATION_RATE_SESSION = "3/minute"
    questions = [await post_message(session=collab, author=alice, content=f"q{i}") for i in range(4)]
    assert (await regenerate(asgi_app, alice, collab, questions[0])).status_code == 202
    assert (await regenerate(asgi_app, alice, collab, questions[1])).status_code == 202
    assert (await regenerate(asgi_app, bob, collab, questions[2])).status_code == 202
    refused = await regenerate(asgi_app, bob, collab, questions[3])
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    other = await database_sync_to_async(services.session_create)(owner=bob, title="Elsewhere")
    elsewhere = await post_message(session=other, author=bob, content="free here")
    assert (await regenerate(asgi_app, bob, other, elsewhere)).status_code == 202


async def test_rejected_requests_do_not_use_up_the_quota(asgi_app, collab, alice, bob, carol, settings):
    settings.CHORUS_REGENERATION_RATE_USER = "1/minute"
    question = await post_message(session=collab, author=alice, content="q")
    bad = await call(asgi_app, "POST", REGENERATE, bob, body={"sessionId": str(collab.pk), "messageId": 7})
    assert bad.status_code == 400
    unknown = await regenerate(asgi_app, bob, collab, type("M", (), {"pk": uuid.uuid4()}))
    assert unknown.status_code == 404
    assert (await regenerate(asgi_app, carol, collab, question)).status_code == 403
    assert (await regenerate(asgi_app, bob, collab, question)).status_code == 202


# --- roles ------------------------------------------------------------------------------------
async def test_role_rules(asgi_app, collab, alice, bob, carol, outsider, staff_user):
    question = await post_message(session=collab, author=alice, content="Who may?")
    assert (await regenerate(asgi_app, None, collab, question)).status_code == 401
    assert (await regenerate(asgi_app, outsider, collab, question)).status_code == 404
    assert (await regenerate(asgi_app, carol, collab, question)).status_code == 403
    viewer_reply = await call(
        asgi_app, "POST", f"/api/v1/sessions/{collab.pk}/messages/", carol, body={"content": "x", "reply": True}
    )
    assert viewer_reply.status_code == 403
    started = await regenerate(asgi_app, bob, collab, question)
    assert started.status_code == 202
    path = f"/api/v1/regenerations/{started.json()['regenerationId']}/"
    await asyncio.wait_for(runner.current_worker().tasks[started.json()["regenerationId"]], 10)
    assert (await call(asgi_app, "GET", path, carol)).status_code == 200
    assert (await call(asgi_app, "GET", path, staff_user)).status_code == 200
    assert (await call(asgi_app, "GET", path, outsider)).status_code == 404
    assert (await call(asgi_app, "GET", path, None)).status_code == 401
    assert (await call(asgi_app, "POST", path + "cancel/", outsider)).status_code == 404
    assert (await call(asgi_app, "POST", path + "cancel/", carol)).status_code == 403
    assert (await call(asgi_app, "POST", path + "cancel/", None)).status_code == 401
    assert (await call(asgi_app, "GET", "/api/v1/regenerations/not-a-uuid/", bob)).status_code == 404
    assert (await call(asgi_app, "GET", f"/api/v1/regenerations/{uuid.uuid4()}/", bob)).status_code == 404
    assert (await call(asgi_app, "POST", f"/api/v1/regenerations/{uuid.uuid4()}/cancel/", bob)).status_code == 404


async def test_both_spellings_of_the_regenerate_path(asgi_app, collab, alice, bob):
    first = await post_message(session=collab, author=alice, content="a")
    second = await post_message(session=collab, author=alice, content="b")
    body = {"sessionId": str(collab.pk), "messageId": str(first.pk)}
    assert (await call(asgi_app, "POST", REGENERATE, bob, body=body)).status_code == 202
    body = {"sessionId": str(collab.pk), "messageId": str(second.pk)}
    assert (await call(asgi_app, "POST", REGENERATE + "/", bob, body=body)).status_code == 202


# --- bad input --------------------------------------------------------------------------------
def _cases():
    ok = lambda c: {"sessionId": c["session"], "messageId": c["message"]}  # noqa: E731
    long_query = "x" * 32_001
    return {
        "malformed JSON": (b'{"sessionId": ', 400),
        "a JSON list": (lambda c: [ok(c)], 400),
        "an empty object": (lambda c: {}, 400),
        "sessionId as a number": (lambda c: {**ok(c), "sessionId": 12}, 400),
        "messageId as a number": (lambda c: {**ok(c), "messageId": 12}, 400),
        "messageId null": (lambda c: {**ok(c), "messageId": None}, 400),
        "sessionId not a uuid": (lambda c: {**ok(c), "sessionId": "../../etc"}, 400),
        "query as a number": (lambda c: {**ok(c), "query": 5}, 400),
        "query too long": (lambda c: {**ok(c), "query": long_query}, 400),
        "unknown session": (lambda c: {**ok(c), "sessionId": str(uuid.uuid4())}, 404),
        "unknown message": (lambda c: {**ok(c), "messageId": str(uuid.uuid4())}, 404),
        "a message of another session": (lambda c: {**ok(c), "messageId": c["foreign_message"]}, 404),
        "a session bob is not in": (lambda c: {"sessionId": c["foreign"], "messageId": c["foreign_message"]}, 404),
        "a deleted message": (lambda c: {**ok(c), "messageId": c["deleted"]}, 404),
    }


@pytest.mark.parametrize("case", list(_cases()))
async def test_bad_regenerate_input_is_rejected_and_emits_nothing(asgi_app, collab, alice, bob, make_user, case):
    question = await post_message(session=collab, author=alice, content="fine")
    gone = await post_message(session=collab, author=alice, content="gone")
    await database_sync_to_async(services.message_delete)(message=gone)
    stranger = await database_sync_to_async(make_user)("stranger")
    foreign = await database_sync_to_async(services.session_create)(owner=stranger, title="Not yours")
    foreign_message = await post_message(session=foreign, author=stranger, content="private")
    context = {
        "session": str(collab.pk),
        "message": str(question.pk),
        "deleted": str(gone.pk),
        "foreign": str(foreign.pk),
        "foreign_message": str(foreign_message.pk),
    }
    body, expected = _cases()[case]
    before = (await last_event_id(collab), await last_event_id(foreign))
    if isinstance(body, bytes):
        response = await call(asgi_app, "POST", REGENERATE, bob, raw=body)
    else:
        response = await call(asgi_app, "POST", REGENERATE, bob, body=body(context))
    assert response.status_code == expected, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert (await last_event_id(collab), await last_event_id(foreign)) == before
    assert await database_sync_to_async(Regeneration.objects.count)() == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"content": "hi", "reply": "yes"}, 400),
        ({"content": "hi", "reply": 1}, 400),
        ({"reply": True}, 400),
        ({"content": "x" * 32_001, "reply": True}, 400),
        ({"content": 42, "reply": True}, 400),
    ],
)
async def test_bad_reply_input_is_rejected_and_emits_nothing(asgi_app, collab, bob, body, expected):
    before = await last_event_id(collab)
    response = await call(asgi_app, "POST", f"/api/v1/sessions/{collab.pk}/messages/", bob, body=body)
    assert response.status_code == expected
    assert "detail" in response.json()
    assert await last_event_id(collab) == before
    assert await database_sync_to_async(Regeneration.objects.count)() == 0


async def test_reap_command_and_counts(collab, alice, bob, monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    from sessions_app.regenerations.selectors import regeneration_counts

    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)
    question = await post_message(session=collab, author=alice, content="one")
    start = database_sync_to_async(regeneration_services.regeneration_start)
    regeneration = await start(session=collab, source_message=question, requested_by=bob)
    assert (await database_sync_to_async(regeneration_counts)())["queued"] == 1
    out = StringIO()
    reap = database_sync_to_async(call_command)
    await reap("reap_regenerations", "--lease-seconds", "3600", stdout=out, stderr=StringIO())
    assert out.getvalue() == ""
    await reap("reap_regenerations", "--lease-seconds", "0", stdout=out, stderr=StringIO())
    assert out.getvalue().split() == [str(regeneration.pk)]
    counts = await database_sync_to_async(regeneration_counts)()
    assert counts == {"queued": 0, "running": 0, "completed": 0, "failed": 1, "cancelled": 0}


async def test_split_surrogates_and_nul_from_a_provider_are_made_storable(
    asgi_app, collab, alice, bob, carol, use_provider
):
    use_provider(ScriptedProvider(["a\ud83d", "\ude00b", "\x00c", "\udfff", "d"]))
    question = await post_message(session=collab, author=alice, content="odd bytes")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        frames = await events_until(stream, TERMINAL)
    assert frames[-1].event == "message_regenerated"
    expected = "a😀bc\ufffdd"
    assert reassemble(frames, response.json()["messageId"]) == frames[-1].json["data"]["content"] == expected
    assert (await get_regeneration(response.json()["regenerationId"])).content == expected


async def test_a_run_that_never_ends_is_failed_after_the_maximum_duration(
    asgi_app, collab, alice, bob, carol, use_provider, settings
):
    settings.CHORUS_REGENERATION_MAX_SECONDS = 0.3
    provider = use_provider(ScriptedProvider([f"t{i} " for i in range(100_000)], gate=slow_gate()))
    question = await post_message(session=collab, author=alice, content="Never stop")
    async with stream_of(asgi_app, collab, await auth(carol)) as stream:
        await stream.next_event()
        response = await regenerate(asgi_app, bob, collab, question)
        frames = await events_until(stream, TERMINAL, timeout=5)
    assert frames[-1].event == "regeneration_error"
    assert frames[-1].json["data"]["error"] == regeneration_services.TOO_LONG_ERROR
    assert provider.closed.is_set()
    assert (await get_regeneration(response.json()["regenerationId"])).status == RegenerationStatus.FAILED
