"""Who may open `GET /sse/sessions/{id}/` (CONTRACT §2 and §5), through the real ASGI app:
session cookie, `Authorization: Token`, stream ticket; refusals are JSON 401/404 before any
stream starts."""

import asyncio
import json
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from sessions_app import services
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests"


def stream_path(session_id) -> str:
    return f"/sse/sessions/{session_id}/"


@database_sync_to_async
def token_header(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


@database_sync_to_async
def cookie_header(user) -> dict:
    """Log in the way the web app does (/accounts/login/ sets the session cookie)."""
    client = Client()
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, "login failed"
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"}


@database_sync_to_async
def ticket_for(api, user, session) -> str:
    response = api(user).post(f"/api/v1/sessions/{session.pk}/stream-ticket/")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["expiresIn"] == settings.CHORUS_STREAM_TICKET_SECONDS == 60
    assert isinstance(body["ticket"], str) and body["ticket"]
    return body["ticket"]


async def assert_opens(app, session_id, user, *, headers=None, query=None) -> None:
    async with ASGIStream(app, stream_path(session_id), headers=headers, query=query) as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream"
        connected = await s.next_event()
        assert connected.event == "connection"
        assert connected.json["userId"] == user.pk
        assert connected.json["sessionId"] == str(session_id)


async def refusal(app, session_id, *, headers=None, query=None) -> tuple[int, dict, dict]:
    async with ASGIStream(app, stream_path(session_id), headers=headers, query=query) as s:
        await asyncio.wait_for(s.finished.wait(), 5)
        assert s.headers["content-type"] == "application/json"
        assert "text/event-stream" not in s.body.decode()
        return s.status, json.loads(s.body), s.headers


# --- the three ways in ----------------------------------------------------------------------
async def test_session_cookie_opens_the_stream(asgi_app, collab, alice):
    await assert_opens(asgi_app, collab.pk, alice, headers=await cookie_header(alice))


async def test_authorization_token_opens_the_stream(asgi_app, collab, bob):
    await assert_opens(asgi_app, collab.pk, bob, headers=await token_header(bob))


async def test_a_bearer_token_opens_the_stream(asgi_app, collab, bob):
    token = (await token_header(bob))["Authorization"].split()[1]
    await assert_opens(asgi_app, collab.pk, bob, headers={"Authorization": f"Bearer {token}"})


async def test_stream_ticket_opens_the_stream(asgi_app, api, collab, bob):
    ticket = await ticket_for(api, bob, collab)
    await assert_opens(asgi_app, collab.pk, bob, query={"ticket": ticket})


async def test_a_viewer_can_read_the_stream_and_gets_live_events(asgi_app, collab, carol, bob):
    async with ASGIStream(asgi_app, stream_path(collab.pk), headers=await token_header(carol)) as s:
        assert s.status == 200
        await s.next_event()
        await database_sync_to_async(services.message_create)(session=collab, author=bob, content="for the viewer")
        frame = await s.next_event()
        assert frame.event == "message_created"
        assert frame.json["data"]["content"] == "for the viewer"


async def test_staff_who_is_not_a_member_can_read(asgi_app, collab, staff_user):
    await assert_opens(asgi_app, collab.pk, staff_user, headers=await token_header(staff_user))


# --- refusals -------------------------------------------------------------------------------
async def test_no_credentials_is_401_json(asgi_app, collab):
    status, body, headers = await refusal(asgi_app, collab.pk)
    assert status == 401
    assert body["detail"]
    assert headers["www-authenticate"] == "Token"


async def test_an_empty_ticket_is_no_credentials(asgi_app, collab):
    status, _, _ = await refusal(asgi_app, collab.pk, query={"ticket": ""})
    assert status == 401


@pytest.mark.parametrize("header", ["Token nope", "Token ", "Bearer abc", "Basic YWxpY2U6cHc="])
async def test_a_bad_authorization_header_is_401(asgi_app, collab, header):
    status, body, _ = await refusal(asgi_app, collab.pk, headers={"Authorization": header})
    assert status == 401
    assert body["detail"]


async def test_a_token_of_an_inactive_user_is_401(asgi_app, collab, bob):
    headers = await token_header(bob)
    bob.is_active = False
    await database_sync_to_async(bob.save)()
    status, _, _ = await refusal(asgi_app, collab.pk, headers=headers)
    assert status == 401


async def test_a_cookie_after_logout_is_401(asgi_app, collab, alice):
    headers = await cookie_header(alice)

    @database_sync_to_async
    def log_out():
        from django.contrib.sessions.models import Session

        Session.objects.all().delete()

    await log_out()
    status, _, _ = await refusal(asgi_app, collab.pk, headers=headers)
    assert status == 401


async def test_a_forged_cookie_is_401(asgi_app, collab):
    status, _, _ = await refusal(asgi_app, collab.pk, headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}=forged"})
    assert status == 401


async def test_a_tampered_ticket_is_401(asgi_app, api, collab, bob):
    ticket = await ticket_for(api, bob, collab)
    last = ticket[-1]
    tampered = ticket[:-1] + ("A" if last != "A" else "B")
    status, body, _ = await refusal(asgi_app, collab.pk, query={"ticket": tampered})
    assert status == 401
    assert "ticket" in body["detail"].lower()


async def test_a_ticket_with_a_forged_payload_is_401(asgi_app, api, collab, bob, alice):
    """Swapping in another user's id keeps the old signature, which then does not match."""
    from django.core import signing

    ticket = await ticket_for(api, bob, collab)
    forged_payload = signing.b64_encode(json.dumps({"u": alice.pk, "s": collab.pk.hex}).encode()).decode()
    forged = forged_payload + ticket[ticket.index(":") :]
    status, _, _ = await refusal(asgi_app, collab.pk, query={"ticket": forged})
    assert status == 401


async def test_another_sessions_ticket_is_401(asgi_app, api, collab, alice, bob):
    other = await database_sync_to_async(services.session_create)(owner=alice, title="Other")
    await database_sync_to_async(services.member_add)(session=other, username="bob", role="viewer")
    ticket = await ticket_for(api, bob, other)
    status, body, _ = await refusal(asgi_app, collab.pk, query={"ticket": ticket})
    assert status == 401
    assert "session" in body["detail"]


class _ShiftedTime:
    """Stands in for the `time` module inside django.core.signing, `seconds` later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time(self) -> float:
        return time.time() + self.seconds


async def test_an_expired_ticket_is_401(asgi_app, api, collab, bob, monkeypatch):
    ticket = await ticket_for(api, bob, collab)
    monkeypatch.setattr("django.core.signing.time", _ShiftedTime(settings.CHORUS_STREAM_TICKET_SECONDS + 1))
    status, body, _ = await refusal(asgi_app, collab.pk, query={"ticket": ticket})
    assert status == 401
    assert "ticket" in body["detail"].lower()


async def test_a_ticket_is_still_good_just_before_it_expires(asgi_app, api, collab, bob, monkeypatch):
    ticket = await ticket_for(api, bob, collab)
    monkeypatch.setattr("django.core.signing.time", _ShiftedTime(settings.CHORUS_STREAM_TICKET_SECONDS - 5))
    await assert_opens(asgi_app, collab.pk, bob, query={"ticket": ticket})


async def test_a_ticket_lifetime_follows_the_setting(asgi_app, api, collab, bob, settings):
    ticket = await ticket_for(api, bob, collab)
    settings.CHORUS_STREAM_TICKET_SECONDS = -1  # any ticket is now too old
    status, _, _ = await refusal(asgi_app, collab.pk, query={"ticket": ticket})
    assert status == 401


async def test_a_ticket_of_a_removed_member_is_404(asgi_app, api, collab, bob):
    ticket = await ticket_for(api, bob, collab)
    await database_sync_to_async(services.member_remove)(session=collab, username="bob")
    status, _, _ = await refusal(asgi_app, collab.pk, query={"ticket": ticket})
    assert status == 404


@pytest.mark.parametrize("how", ["token", "cookie"])
async def test_a_non_member_gets_404_not_403(asgi_app, collab, outsider, how):
    headers = await (token_header if how == "token" else cookie_header)(outsider)
    status, body, _ = await refusal(asgi_app, collab.pk, headers=headers)
    assert status == 404
    assert body == {"detail": "Not found."}


@pytest.mark.parametrize("who", ["alice", "staff_user"])
async def test_an_unknown_session_is_404(asgi_app, request, collab, who):
    user = await database_sync_to_async(request.getfixturevalue)(who)
    status, body, _ = await refusal(asgi_app, uuid.uuid4(), headers=await token_header(user))
    assert status == 404
    assert body == {"detail": "Not found."}


async def test_an_unknown_session_and_a_non_member_look_the_same(asgi_app, collab, outsider):
    headers = await token_header(outsider)
    assert await refusal(asgi_app, collab.pk, headers=headers) == await refusal(asgi_app, uuid.uuid4(), headers=headers)


async def test_a_malformed_session_id_is_a_json_404(asgi_app):
    # Not a stream route at all: Django answers, with its JSON 404 handler.
    async with ASGIStream(asgi_app, "/sse/sessions/not-a-uuid/") as s:
        await asyncio.wait_for(s.finished.wait(), 5)
        assert s.status == 404
        headers = {name.lower(): value for name, value in s.headers.items()}  # Django's own case
        assert headers["content-type"].startswith("application/json")
        assert json.loads(s.body)["detail"]


# --- tickets over REST ------------------------------------------------------------------------
@pytest.mark.parametrize("who, status", [("carol", 201), ("staff_user", 201), ("outsider", 404)])
def test_who_may_get_a_ticket(api, collab, request, who, status):
    assert api(request.getfixturevalue(who)).post(f"/api/v1/sessions/{collab.pk}/stream-ticket/").status_code == status


def test_a_ticket_needs_credentials(api, collab):
    assert api().post(f"/api/v1/sessions/{collab.pk}/stream-ticket/").status_code == 401
