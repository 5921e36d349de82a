"""Messages over REST (CONTRACT §3): list with `lastEventId` beside the page, create."""

import datetime as dt

import pytest
from django.utils import timezone

from realtime.models import Event
from sessions_app import services
from sessions_app.models import Message

pytestmark = pytest.mark.django_db

MESSAGE_FIELDS = {"id", "sessionId", "role", "author", "content", "createdAt", "editedAt", "originalMessageId"}


def messages_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/messages/"


# --- create -----------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_owner_and_editor_post_and_message_created_is_emitted(api, collab, request, who):
    before = collab.last_event_id
    response = api(request.getfixturevalue(who)).post(messages_url(collab), {"content": "héllo 👋"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == MESSAGE_FIELDS
    assert body["sessionId"] == str(collab.pk)
    assert body["role"] == "user"
    assert body["author"] == who
    assert body["content"] == "héllo 👋"
    assert body["editedAt"] is None and body["originalMessageId"] is None
    assert dt.datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00")).tzinfo is not None
    event = Event.objects.get(session=collab, seq=before + 1)
    assert event.type == "message_created"
    assert event.data == {"messageId": body["id"], "role": "user", "author": who, "content": "héllo 👋"}
    collab.refresh_from_db()
    assert collab.last_event_id == before + 1


def test_content_is_kept_verbatim_with_its_whitespace(api, collab, bob):
    content = "  indented\n\n\tand tabbed  "
    body = api(bob).post(messages_url(collab), {"content": content}, format="json").json()
    assert body["content"] == content
    assert Message.objects.get(pk=body["id"]).content == content


def test_reply_false_is_accepted(api, collab, bob):
    response = api(bob).post(messages_url(collab), {"content": "no reply", "reply": False}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("who, status", [("carol", 403), ("outsider", 404), ("staff_user", 403)])
def test_viewers_strangers_and_staff_cannot_post(api, collab, request, who, status):
    before = collab.last_event_id
    response = api(request.getfixturevalue(who)).post(messages_url(collab), {"content": "nope"}, format="json")
    assert response.status_code == status
    assert "detail" in response.json()
    assert not Message.objects.filter(session=collab).exists()
    collab.refresh_from_db()
    assert collab.last_event_id == before


def test_posting_needs_credentials(api, collab):
    assert api().post(messages_url(collab), {"content": "x"}, format="json").status_code == 401
    assert not Message.objects.exists()


# --- list -------------------------------------------------------------------------------
def test_list_is_a_page_in_order_with_last_event_id_beside_it(api, collab, carol, bob):
    posted = [services.message_create(session=collab, author=bob, content=f"m{i}") for i in range(3)]
    collab.refresh_from_db()
    body = api(carol).get(messages_url(collab)).json()
    assert set(body) == {"count", "next", "previous", "results", "lastEventId"}
    assert body["count"] == 3 and body["next"] is None and body["previous"] is None
    assert body["lastEventId"] == collab.last_event_id
    assert [m["id"] for m in body["results"]] == [str(m.pk) for m in posted]
    assert [m["content"] for m in body["results"]] == ["m0", "m1", "m2"]
    assert all(set(m) == MESSAGE_FIELDS for m in body["results"])
    assert body["results"][0]["author"] == "bob"


def test_list_is_paginated_and_every_page_carries_last_event_id(api, collab, bob):
    for i in range(55):
        services.message_create(session=collab, author=bob, content=f"m{i}")
    collab.refresh_from_db()
    first = api(bob).get(messages_url(collab)).json()
    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"]
    second = api(bob).get(first["next"]).json()
    assert [m["content"] for m in second["results"]] == [f"m{i}" for i in range(50, 55)]
    assert first["lastEventId"] == second["lastEventId"] == collab.last_event_id


def test_empty_list_still_says_where_the_log_is(api, collab, carol):
    body = api(carol).get(messages_url(collab)).json()
    assert body["results"] == [] and body["count"] == 0
    assert body["lastEventId"] == collab.last_event_id == 3


def test_deleted_messages_are_not_listed(api, collab, bob):
    kept = services.message_create(session=collab, author=bob, content="kept")
    gone = services.message_create(session=collab, author=bob, content="gone")
    Message.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())
    body = api(bob).get(messages_url(collab)).json()
    assert [m["id"] for m in body["results"]] == [str(kept.pk)]


def test_an_author_who_was_deleted_shows_as_null(api, collab, bob, make_user):
    dave = make_user("dave")
    services.message_create(session=collab, author=dave, content="orphan")
    dave.delete()
    body = api(bob).get(messages_url(collab)).json()
    assert body["results"][0]["author"] is None


def test_messages_of_other_sessions_are_not_listed(api, collab, alice, bob):
    other = services.session_create(owner=alice, title="Other")
    services.message_create(session=other, author=alice, content="elsewhere")
    services.message_create(session=collab, author=bob, content="here")
    body = api(alice).get(messages_url(collab)).json()
    assert [m["content"] for m in body["results"]] == ["here"]


@pytest.mark.parametrize("who, status", [("carol", 200), ("staff_user", 200), ("outsider", 404)])
def test_who_may_read_messages(api, collab, request, who, status):
    assert api(request.getfixturevalue(who)).get(messages_url(collab)).status_code == status


def test_reading_needs_credentials(api, collab):
    assert api().get(messages_url(collab)).status_code == 401
