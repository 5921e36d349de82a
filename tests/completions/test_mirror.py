"""`"session": "<uuid>"` mirrors a completion into the session as an assistant message
that members see being written like any regeneration (CONTRACT §8)."""

from __future__ import annotations

import asyncio

import openai
import pytest
from channels.db import database_sync_to_async

from completions.asgi import CANCELLED_IN_SESSION
from realtime.models import Event
from sessions_app.models import Message, Regeneration
from sessions_app.providers.openai_compatible import FAILED
from tests.completions.conftest import api_key, raw_client, sdk, wait_for_logs
from tests.sessions_app.fake_openai import FakeOpenAI
from tests.sessions_app.regen_support import auth, call, events_until, reassemble, stream_of

QUESTION = "What should the launch checklist contain?"
MESSAGES = [{"role": "user", "content": QUESTION}]
ENDINGS = {"message_regenerated", "regeneration_error", "regeneration_cancelled"}


def _regeneration(message_id) -> Regeneration:
    return Regeneration.objects.select_related("message").get(message_id=message_id)


async def test_members_see_the_completion_written_with_the_same_text(chorus_server, asgi_app, collab, alice, bob):
    async with stream_of(asgi_app, collab, await auth(alice)) as member:
        await member.next_event()  # connection
        client = await sdk(chorus_server, bob)
        stream = await client.chat.completions.create(
            model="chorus-local", messages=MESSAGES, stream=True, extra_body={"session": str(collab.pk)}
        )
        received = "".join([c.choices[0].delta.content or "" async for c in stream])
        frames = await events_until(member, ENDINGS)
    start = frames[0]
    assert start.event == "message_regenerating"
    assert start.json["data"]["userQuery"] == QUESTION and start.json["data"]["originalMessageId"] is None
    message_id = start.json["data"]["messageId"]
    assert [f.event for f in frames][-1] == "message_regenerated"
    assert any(f.event == "regeneration_progress" for f in frames)
    assert reassemble(frames, message_id) == received
    assert frames[-1].json["data"]["content"] == received
    regeneration = await database_sync_to_async(_regeneration)(message_id)
    assert (regeneration.status, regeneration.content, regeneration.message.content) == (
        "completed",
        received,
        received,
    )
    assert regeneration.requested_by_id == bob.pk and regeneration.message.role == "assistant"
    listed = await call(asgi_app, "GET", f"/api/v1/sessions/{collab.pk}/messages/", alice)
    assert [m["content"] for m in listed.json()["results"] if m["id"] == message_id] == [received]
    [log] = await wait_for_logs(1)
    assert (log.status, log.session_id, str(log.message_id)) == ("completed", collab.pk, message_id)


@pytest.mark.parametrize(
    ("user", "error", "status"),
    [
        ("carol", openai.PermissionDeniedError, 403),  # a viewer
        ("operator", openai.PermissionDeniedError, 403),  # staff, who may read but is no member
        ("mallory", openai.NotFoundError, 404),  # not a member: the session is not revealed
    ],
)
async def test_only_owners_and_editors_may_mirror(
    chorus_server, collab, carol, outsider, staff_user, user, error, status
):
    member = {"carol": carol, "mallory": outsider, "operator": staff_user}[user]
    events_before = await database_sync_to_async(Event.objects.count)()
    client = await sdk(chorus_server, member)
    with pytest.raises(error) as raised:
        await client.chat.completions.create(
            model="chorus-local", messages=MESSAGES, stream=True, extra_body={"session": str(collab.pk)}
        )
    assert raised.value.status_code == status and raised.value.body["param"] == "session"
    assert await database_sync_to_async(Event.objects.count)() == events_before
    assert await database_sync_to_async(Message.objects.filter(role="assistant").count)() == 0
    [log] = await wait_for_logs(1)
    assert (log.status, log.http_status, log.session_id) == ("failed", status, None)


async def test_a_caller_going_away_cancels_the_mirrored_message(
    chorus_server, asgi_app, collab, alice, bob, completion_settings
):
    completion_settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 50
    async with stream_of(asgi_app, collab, await auth(alice)) as member:
        await member.next_event()
        async with raw_client(chorus_server, await api_key(bob)) as client:
            body = {"model": "chorus-local", "messages": MESSAGES, "stream": True, "session": str(collab.pk)}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for data in response.aiter_bytes():
                    if b'"content":"' in data and b'"content":""' not in data:
                        break
        frames = await events_until(member, ENDINGS)
    assert frames[-1].event == "regeneration_cancelled"
    message_id = frames[0].json["data"]["messageId"]
    regeneration = await database_sync_to_async(_regeneration)(message_id)
    assert regeneration.status == "cancelled"
    [log] = await wait_for_logs(1)
    assert log.status == "cancelled"


async def test_a_member_cancelling_ends_the_callers_stream(
    chorus_server, asgi_app, collab, alice, bob, completion_settings
):
    completion_settings.CHORUS_LOCAL_TOKEN_DELAY_MS = 50
    client = await sdk(chorus_server, bob)
    stream = await client.chat.completions.create(
        model="chorus-local", messages=MESSAGES, stream=True, extra_body={"session": str(collab.pk)}
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            if len(received) == 3:
                message_id = (await database_sync_to_async(Message.objects.get)(role="assistant")).pk
                regeneration = await database_sync_to_async(_regeneration)(message_id)
                cancel = await call(asgi_app, "POST", f"/api/v1/regenerations/{regeneration.pk}/cancel/", alice)
                assert cancel.status_code == 202
    assert raised.value.message == CANCELLED_IN_SESSION
    [log] = await wait_for_logs(1)
    assert (log.status, log.error) == ("cancelled", CANCELLED_IN_SESSION)
    assert (await database_sync_to_async(_regeneration)(message_id)).status == "cancelled"


async def test_an_upstream_failure_is_a_regeneration_error_with_the_text_so_far(
    chorus_server, asgi_app, collab, alice, bob, completion_settings
):
    async with FakeOpenAI() as upstream:
        completion_settings.CHORUS_LLM_PROVIDER = "openai"
        completion_settings.CHORUS_LLM_BASE_URL = upstream.base_url
        completion_settings.CHORUS_LLM_MODEL = "error-mid"
        async with stream_of(asgi_app, collab, await auth(alice)) as member:
            await member.next_event()
            client = await sdk(chorus_server, bob)
            stream = await client.chat.completions.create(
                model="error-mid", messages=MESSAGES, stream=True, extra_body={"session": str(collab.pk)}
            )
            with pytest.raises(openai.APIError):
                [chunk async for chunk in stream]
            frames = await asyncio.wait_for(events_until(member, ENDINGS), 10)
    assert frames[-1].event == "regeneration_error" and frames[-1].json["data"]["error"] == FAILED
    message_id = frames[0].json["data"]["messageId"]
    assert reassemble(frames, message_id) == "".join(FakeOpenAI.answer[:2])
    regeneration = await database_sync_to_async(_regeneration)(message_id)
    assert (regeneration.status, regeneration.message.content) == ("failed", "".join(FakeOpenAI.answer[:2]))
