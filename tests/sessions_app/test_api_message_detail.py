"""GET sessions/{id}/messages/{mid}/ (CONTRACT §3): any member reads one message, in the
message shape; unknown, malformed, deleted and other sessions' ids are a JSON 404."""

from __future__ import annotations

import uuid

import pytest

from sessions_app import services

pytestmark = pytest.mark.django_db

MESSAGE_FIELDS = {"id", "sessionId", "role", "author", "content", "createdAt", "editedAt", "originalMessageId"}


def url(session_id, message_id) -> str:
    return f"/api/v1/sessions/{session_id}/messages/{message_id}/"


@pytest.fixture
def bobs_message(collab, bob):
    return services.message_create(session=collab, author=bob, content="bob wrote this 👋")


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "staff_user"])
def test_members_and_staff_read_one_message_in_the_message_shape(api, request, collab, bobs_message, who):
    response = api(request.getfixturevalue(who)).get(url(collab.pk, bobs_message.pk))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == MESSAGE_FIELDS
    assert body["id"] == str(bobs_message.pk)
    assert body["sessionId"] == str(collab.pk)
    assert (body["author"], body["role"], body["content"]) == ("bob", "user", "bob wrote this 👋")
    listed = api(request.getfixturevalue(who)).get(f"/api/v1/sessions/{collab.pk}/messages/").json()["results"]
    assert listed == [body]  # the same representation as in the list


def test_a_non_member_gets_404_as_if_it_did_not_exist(api, outsider, collab, bobs_message):
    response = api(outsider).get(url(collab.pk, bobs_message.pk))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_reading_needs_credentials(api, collab, bobs_message):
    assert api().get(url(collab.pk, bobs_message.pk)).status_code == 401


@pytest.mark.parametrize(
    "message_id",
    [str(uuid.UUID(int=1)), "not-a-uuid", "123", "%20", "00000000-0000-0000-0000-00000000000g", "x" * 300],
)
def test_unknown_and_malformed_message_ids_are_a_json_404(api, carol, collab, message_id):
    response = api(carol).get(url(collab.pk, message_id))
    assert response.status_code == 404, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_another_sessions_message_is_404_even_to_its_author(api, alice, bob, collab, bobs_message):
    other = services.session_create(owner=bob, title="Bob's own")
    services.member_add(session=other, username="alice", role="viewer")
    response = api(bob).get(url(other.pk, bobs_message.pk))  # bob may read both sessions
    assert response.status_code == 404
    assert api(bob).get(url(collab.pk, bobs_message.pk)).status_code == 200


def test_a_deleted_message_is_404(api, bob, collab, bobs_message):
    services.message_delete(message=bobs_message)
    assert api(bob).get(url(collab.pk, bobs_message.pk)).status_code == 404


def test_an_edit_shows_in_the_next_read(api, bob, collab, bobs_message):
    api(bob).patch(url(collab.pk, bobs_message.pk), {"content": "fixed"}, format="json")
    body = api(bob).get(url(collab.pk, bobs_message.pk)).json()
    assert body["content"] == "fixed" and body["editedAt"] is not None
