"""Typing, read positions and the presence list over REST (CONTRACT §3 and §7)."""

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.utils import timezone

from realtime.models import Worker
from sessions_app import services
from sessions_app.models import CollabSession, Membership
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()
    yield
    cache.clear()


def url(collab, what: str) -> str:
    return f"/api/v1/sessions/{collab.pk}/{what}/"


@database_sync_to_async
def headers(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


async def signals(stream: ASGIStream, name: str, *, until_message: bool = True) -> list:
    """The `name` frames a stream receives until the next message_created (the marker)."""
    found = []
    async with asyncio.timeout(5):
        while True:
            frame = await stream.next_event(5)
            assert frame is not None
            if frame.event == name:
                found.append(frame)
            elif frame.event == "message_created" and until_message:
                return found


async def test_typing_reaches_the_others_not_the_typist_and_stops_on_delete(asgi_app, api, collab, alice, bob):
    path = f"/sse/sessions/{collab.pk}/"
    async with (
        ASGIStream(asgi_app, path, headers=await headers(alice), ephemeral=True) as alice_stream,
        ASGIStream(asgi_app, path, headers=await headers(bob), ephemeral=True) as bob_stream,
    ):
        for stream in (alice_stream, bob_stream):
            assert (await stream.next_event()).event == "connection"

        def act():
            assert api(bob).post(url(collab, "typing")).status_code == 204
            assert api(bob).delete(url(collab, "typing")).status_code == 204
            services.message_create(session=collab, author=alice, content="marker")

        await database_sync_to_async(act)()
        seen = await signals(alice_stream, "typing")
        assert [(f.json, f.id) for f in seen] == [
            ({"username": "bob", "typing": True, "expiresIn": 6.0}, None),
            ({"username": "bob", "typing": False}, None),
        ]
        assert await signals(bob_stream, "typing") == []


def test_typing_is_for_writers_and_members(api, collab, carol, outsider):
    assert api(carol).post(url(collab, "typing")).status_code == 403
    assert api(outsider).post(url(collab, "typing")).status_code == 404
    assert api().post(url(collab, "typing")).status_code == 401


def test_typing_is_rate_limited_per_user(api, collab, bob, settings):
    settings.CHORUS_TYPING_RATE_USER = "3/minute"
    answers = [api(bob).post(url(collab, "typing")).status_code for _ in range(4)]
    assert answers == [204, 204, 204, 429]
    response = api(bob).post(url(collab, "typing"))
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "detail" in response.json()


def test_a_typing_notice_writes_nothing(api, collab, bob, django_assert_max_num_queries):
    # Authentication and the role: two reads; no write, no event.
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    client = api(bob)
    with django_assert_max_num_queries(2):
        assert client.post(url(collab, "typing")).status_code == 204
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == before


def test_read_positions_only_move_forward_and_are_clamped(api, collab, bob, alice):
    services.message_create(session=collab, author=alice, content="one")
    newest = CollabSession.objects.get(pk=collab.pk).last_event_id
    put = api(bob).put
    assert put(url(collab, "read-position"), {"lastEventId": 2}, format="json").json() == {"lastEventId": 2}
    assert put(url(collab, "read-position"), {"lastEventId": 1}, format="json").json() == {"lastEventId": 2}
    assert put(url(collab, "read-position"), {"lastEventId": 10**6}, format="json").json() == {"lastEventId": newest}
    members = api(alice).get(f"/api/v1/sessions/{collab.pk}/").json()["members"]
    assert {m["username"]: m["lastReadEventId"] for m in members} == {"alice": 0, "bob": newest, "carol": 0}


@pytest.mark.parametrize("body", [{}, {"lastEventId": -1}, {"lastEventId": "3"}, {"lastEventId": 2**64}, []])
def test_a_bad_read_position_is_400_and_changes_nothing(api, collab, bob, body):
    response = api(bob).put(url(collab, "read-position"), body, format="json")
    assert response.status_code == 400 and "detail" in response.json()
    assert Membership.objects.get(session=collab, user=bob).last_read_event_id == 0


def test_staff_who_are_not_members_have_no_read_position(api, collab, staff_user):
    response = api(staff_user).put(url(collab, "read-position"), {"lastEventId": 1}, format="json")
    assert response.status_code == 403


async def test_other_members_streams_get_read_position(asgi_app, api, collab, alice, bob):
    path = f"/sse/sessions/{collab.pk}/"
    async with (
        ASGIStream(asgi_app, path, headers=await headers(alice), ephemeral=True) as alice_stream,
        ASGIStream(asgi_app, path, headers=await headers(bob), ephemeral=True) as bob_stream,
    ):
        for stream in (alice_stream, bob_stream):
            assert (await stream.next_event()).event == "connection"

        def act():
            assert api(bob).put(url(collab, "read-position"), {"lastEventId": 2}, format="json").status_code == 200
            assert api(bob).put(url(collab, "read-position"), {"lastEventId": 1}, format="json").status_code == 200
            services.message_create(session=collab, author=alice, content="marker")

        await database_sync_to_async(act)()
        seen = await signals(alice_stream, "read_position")
        assert [(f.json, f.id) for f in seen] == [({"username": "bob", "lastEventId": 2}, None)]  # once: no move back
        assert await signals(bob_stream, "read_position") == []


def test_presence_lists_users_of_live_processes(api, collab, alice, carol):
    now = timezone.now()
    since = (now - dt.timedelta(minutes=5)).timestamp()
    key = str(collab.pk)
    Worker.objects.create(
        id="h:1:a", host="h", pid=1, started_at=now, last_seen=now,
        sessions={key: {"streams": 2, "users": {"alice": 1, "bob": 1}, "since": {"alice": since}, "v": 2}},
    )  # fmt: skip
    Worker.objects.create(
        id="h:2:b", host="h", pid=2, started_at=now, last_seen=now,
        sessions={key: {"streams": 1, "users": {"alice": 1}, "since": {"alice": since + 60}, "v": 1}},
    )  # fmt: skip
    Worker.objects.create(
        id="h:3:c", host="h", pid=3, started_at=now, last_seen=now - dt.timedelta(hours=1),
        sessions={key: {"streams": 1, "users": {"mallory": 1}, "v": 1}},
    )  # fmt: skip
    body = api(carol).get(url(collab, "presence")).json()
    assert [(u["username"], u["streams"]) for u in body["online"]] == [("alice", 2), ("bob", 1)]
    assert dt.datetime.fromisoformat(body["online"][0]["since"]).timestamp() == pytest.approx(since, abs=0.01)


def test_presence_is_for_members(api, collab, outsider):
    assert api(outsider).get(url(collab, "presence")).status_code == 404
    assert api().get(url(collab, "presence")).status_code == 401
