"""PATCH and DELETE sessions/{id}/messages/{mid}/: the author or the owner, with events."""

from __future__ import annotations

import uuid

import pytest

from realtime.models import Event
from sessions_app import services
from sessions_app.models import Message, MessageRole, Regeneration, RegenerationStatus
from sessions_app.regenerations import services as regeneration_services
from sessions_app.selectors import MessageNotFound

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_runner(monkeypatch):
    """Regenerations here stay queued: these tests are about messages, not runs."""
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)


def path(session, message) -> str:
    return f"/api/v1/sessions/{session.pk}/messages/{message.pk}/"


def newest(session) -> Event:
    return Event.objects.filter(session=session).order_by("-seq").first()


def seq(session) -> int:
    return newest(session).seq


@pytest.fixture
def bobs_message(collab, bob):
    return services.message_create(session=collab, author=bob, content="bob wrote this")


def test_author_edits_own_message_and_everyone_is_told(api, collab, bob, bobs_message):
    response = api(bob).patch(path(collab, bobs_message), {"content": "bob fixed this ✍️"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["content"] == "bob fixed this ✍️"
    assert response.json()["editedAt"] is not None
    event = newest(collab)
    assert event.type == "message_edited"
    assert event.data == {
        "messageId": str(bobs_message.pk),
        "role": "user",
        "author": "bob",
        "content": "bob fixed this ✍️",
    }
    bobs_message.refresh_from_db()
    assert bobs_message.content == "bob fixed this ✍️" and bobs_message.edited_at is not None


def test_owner_edits_and_deletes_anyones_message(api, collab, alice, bobs_message):
    assert api(alice).patch(path(collab, bobs_message), {"content": "moderated"}, format="json").status_code == 200
    assert api(alice).delete(path(collab, bobs_message)).status_code == 204


@pytest.mark.parametrize(("who", "expected"), [("carol", 403), ("mallory", 404), (None, 401), ("dave", 403)], ids=str)
def test_others_may_not_change_a_message(api, collab, bobs_message, make_user, who, expected):
    if who == "dave":  # another editor, not the author
        make_user("dave")
        services.member_add(session=collab, username="dave", role="editor")
    elif who == "mallory":
        make_user("mallory")
    user = None if who is None else type(bobs_message.author).objects.get(username=who)
    before = seq(collab)
    assert api(user).patch(path(collab, bobs_message), {"content": "hijack"}, format="json").status_code == expected
    assert api(user).delete(path(collab, bobs_message)).status_code == expected
    assert seq(collab) == before
    bobs_message.refresh_from_db()
    assert bobs_message.content == "bob wrote this" and bobs_message.deleted_at is None


@pytest.mark.parametrize(
    "body",
    [{}, {"content": 5}, {"content": None}, {"content": ["a"]}, {"content": "x" * 32_001}, {"content": ""}],
    ids=["missing", "number", "null", "list", "too long", "blank"],
)
def test_bad_edit_input_is_400_and_changes_nothing(api, collab, bob, bobs_message, body):
    before = seq(collab)
    response = api(bob).patch(path(collab, bobs_message), body, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert seq(collab) == before
    bobs_message.refresh_from_db()
    assert bobs_message.content == "bob wrote this"


def test_malformed_json_edit_is_400(api, collab, bob, bobs_message):
    response = api(bob).generic("PATCH", path(collab, bobs_message), b'{"content": ', content_type="application/json")
    assert response.status_code == 400 and "detail" in response.json()


def test_unknown_foreign_and_deleted_messages_are_404(api, collab, alice, bob, bobs_message, make_user):
    stranger = make_user("stranger")
    other = services.session_create(owner=stranger, title="Other")
    foreign = services.message_create(session=other, author=stranger, content="theirs")
    client = api(alice)
    assert client.patch(f"/api/v1/sessions/{collab.pk}/messages/{uuid.uuid4()}/", {"content": "x"}).status_code == 404
    assert client.patch(f"/api/v1/sessions/{collab.pk}/messages/nope/", {"content": "x"}).status_code == 404
    assert client.patch(path(collab, foreign), {"content": "x"}, format="json").status_code == 404
    assert client.delete(path(collab, foreign)).status_code == 404
    assert client.delete(path(collab, bobs_message)).status_code == 204
    before = seq(collab)
    assert client.delete(path(collab, bobs_message)).status_code == 404
    assert client.patch(path(collab, bobs_message), {"content": "x"}, format="json").status_code == 404
    assert seq(collab) == before


def test_delete_is_soft_and_takes_the_versions_along(api, collab, alice, bob, bobs_message):
    answer = services.message_create(session=collab, author=None, content="answer", role=MessageRole.ASSISTANT)
    version = Message.objects.create(
        session=collab, role=MessageRole.ASSISTANT, content="answer v2", original_message=answer
    )
    assert api(alice).delete(path(collab, answer)).status_code == 204
    event = newest(collab)
    assert event.type == "message_deleted"
    assert event.data == {"deletedMessageIds": [str(answer.pk), str(version.pk)]}
    assert Message.objects.filter(pk__in=[answer.pk, version.pk], deleted_at__isnull=False).count() == 2
    listed = [m["id"] for m in api(bob).get(f"/api/v1/sessions/{collab.pk}/messages/").json()["results"]]
    assert listed == [str(bobs_message.pk)]


def test_deleting_a_message_cancels_the_regeneration_writing_it(api, collab, alice, bob, bobs_message):
    started = api(bob).post(
        "/api/v1/chat_actions/regenerate",
        {"sessionId": str(collab.pk), "messageId": str(bobs_message.pk)},
        format="json",
    )
    assert started.status_code == 202
    new_message = Message.objects.get(pk=started.json()["messageId"])
    edit = api(alice).patch(path(collab, new_message), {"content": "meddle"}, format="json")
    assert edit.status_code == 409, "a message being written cannot be edited"
    assert api(alice).delete(path(collab, new_message)).status_code == 204
    last_two = list(Event.objects.filter(session=collab).order_by("-seq")[:2])[::-1]
    assert [e.type for e in last_two] == ["regeneration_cancelled", "message_deleted"]
    regeneration = Regeneration.objects.get(pk=started.json()["regenerationId"])
    assert regeneration.status == RegenerationStatus.CANCELLED


def test_regeneration_services_refuse_a_deleted_source(collab, bob, bobs_message):
    services.message_delete(message=bobs_message)
    bobs_message.refresh_from_db()
    with pytest.raises(MessageNotFound):  # 404: it was a ValueError, a 500 when it raced a delete
        regeneration_services.regeneration_start(session=collab, source_message=bobs_message, requested_by=bob)
