"""A message post as one statement on PostgreSQL (sessions_app.services.message_post):
it stores exactly the rows of the general path, keeps the lock order, and hands the post
to the general path when a writer of the session committed while it waited for the lock
(the role re-check under that lock). SQLite always takes the general path."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Message
from tests.support.interleave import interleave

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement post is PostgreSQL's; SQLite takes the general path")


@pytest.fixture
def statements(monkeypatch):
    """What each one-statement attempt returned (None: it handed over to the general path)."""
    seen = []
    attempt = services._message_post_one_statement

    def spy(**kwargs):
        result = attempt(**kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(services, "_message_post_one_statement", spy)
    return seen


def stored(session: CollabSession) -> tuple[dict, dict, int]:
    """The newest message and event of the session, with what differs between two posts
    of the same content (ids, times, the session) taken out, and the session's counter."""
    message = Message.objects.filter(session=session).order_by("-created_at").values().first()
    event = Event.objects.filter(session=session).order_by("-seq").values().first()
    envelope = json.loads(event.pop("envelope"))
    assert envelope["id"] == event["seq"]
    assert envelope["sessionId"] == str(session.pk)
    assert envelope["data"] == event["data"]
    assert envelope["data"]["messageId"] == str(message["id"])
    assert envelope["timestamp"][:19] == event["created_at"].strftime("%Y-%m-%dT%H:%M:%S")
    for row, keys in ((message, ("id", "session_id", "created_at")), (event, ("id", "session_id", "created_at"))):
        for key in keys:
            row.pop(key)
    event["data"] = {k: v for k, v in event["data"].items() if k != "messageId"}
    envelope = {k: v for k, v in envelope.items() if k not in ("id", "sessionId", "timestamp", "data")}
    return message, {**event, "envelope": envelope}, CollabSession.objects.get(pk=session.pk).last_event_id


@pytest.mark.parametrize("content", ["Ship it on Friday?", "  spaces kept \n", 'émoji 🚀 and "quotes" \\ ok'])
def test_the_one_statement_post_stores_the_rows_of_the_general_path(settings, alice, bob, statements, content):
    one = services.session_create(owner=alice, title="one statement")
    general = services.session_create(owner=alice, title="general path")
    for session in (one, general):
        services.member_add(session=session, username="bob", role="editor")

    settings.CHORUS_ONE_STATEMENT_WRITES = True
    posted, _ = services.message_post(session=one, author=bob, content=content)
    settings.CHORUS_ONE_STATEMENT_WRITES = False
    services.message_post(session=general, author=bob, content=content)

    assert len(statements) == 1 and statements[0] is not None  # the first post was one statement
    assert stored(one) == stored(general)
    assert Message.objects.get(pk=posted.pk).content == content
    assert not posted._state.adding


def test_a_member_removed_while_the_statement_waits_for_the_lock_cannot_write(api, collab, alice, bob, statements):
    """The removal holds the session lock; the post's statement reads bob as an editor in
    its snapshot, then waits for the lock. When it gets it, the counter has moved: it
    writes nothing, and the general path re-reads the role under the lock (404)."""
    owner, editor = api(alice), api(bob)
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    one, two = interleave(
        lambda: owner.delete(f"/api/v1/sessions/{collab.pk}/members/bob/"),
        lambda: editor.post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "too late"}, format="json"),
    )
    assert one.value().status_code == 204
    assert two.value().status_code == 404
    assert statements == [None]  # the statement waited, then handed over (the general path: 404)
    assert not Message.objects.filter(session=collab, content="too late").exists()
    session = CollabSession.objects.get(pk=collab.pk)
    assert session.last_event_id == before + 1  # member_left only: no gap, no stray number
    assert list(Event.objects.filter(session=collab).order_by("seq").values_list("seq", flat=True)) == list(
        range(1, session.last_event_id + 1)
    )


def test_a_post_that_waited_for_another_post_is_written_after_it(api, collab, alice, bob, statements):
    """Two posts of one session: the second waits for the first's lock, hands over, and
    the general path writes it as the next event (nothing lost, no gap)."""
    one, two = interleave(
        lambda: services.message_create(session=collab, author=alice, content="first"),
        lambda: api(bob).post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "second"}, format="json"),
    )
    first = one.value()
    assert two.value().status_code == 201
    # It waited and handed over; the general path's own attempt then ran after the first
    # post had committed (one statement again, or the transaction).
    assert statements[0] is None and len(statements) <= 2
    rows = list(Event.objects.filter(session=collab).order_by("seq").values_list("seq", "type", "data"))
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert [(kind, data["content"]) for _, kind, data in rows[-2:]] == [
        ("message_created", "first"),
        ("message_created", "second"),
    ]
    assert rows[-2][2]["messageId"] == str(first.pk)


@pytest.mark.parametrize(("who", "status"), [("carol", 403), ("outsider", 404)])
def test_viewers_and_strangers_write_nothing(api, collab, request, statements, who, status):
    """session_for refuses them first; a role lost between that read and the statement
    is refused by the statement itself (it matches no row) and then by the general path."""
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    response = api(request.getfixturevalue(who)).post(
        f"/api/v1/sessions/{collab.pk}/messages/", {"content": "no"}, format="json"
    )
    assert response.status_code == status
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == before


def test_an_editor_demoted_after_the_request_was_checked_is_refused_by_the_statement(collab, bob, statements):
    from sessions_app.models import Membership
    from sessions_app.services import WriteNotAllowed

    Membership.objects.filter(session=collab, user=bob).update(role="viewer")  # after session_for said "editor"
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    with pytest.raises(WriteNotAllowed):
        services.message_post(session=collab, author=bob, content="stale role")
    assert statements == [None]
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == before
    assert not Message.objects.filter(content="stale role").exists()
