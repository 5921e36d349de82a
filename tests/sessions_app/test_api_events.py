"""The polling fallback `GET sessions/{id}/events/?after=N&limit=L` (CONTRACT §3)."""

import json
import re

import pytest

from realtime.models import Event
from realtime.replay import replay_rows
from sessions_app import services

pytestmark = pytest.mark.django_db

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def events_url(session) -> str:
    return f"/api/v1/sessions/{session.pk}/events/"


def post_many(session, author, count: int) -> int:
    for i in range(count):
        services.message_create(session=session, author=author, content=f"m{i}")
    session.refresh_from_db()
    return session.last_event_id


def poll(client, session, **params):
    response = client.get(events_url(session), params)
    assert response.status_code == 200, response.content
    return response.json()


def test_without_parameters_returns_the_whole_log(api, collab, carol):
    body = poll(api(carol), collab)
    assert set(body) == {"events", "lastId", "truncated"}
    assert [e["id"] for e in body["events"]] == [1, 2, 3]
    assert [e["type"] for e in body["events"]] == ["member_joined"] * 3
    assert body["lastId"] == 3
    assert body["truncated"] is False


def test_envelopes_are_the_same_as_in_the_stream(api, collab, bob):
    message = services.message_create(session=collab, author=bob, content="héllo\nworld")
    body = poll(api(bob), collab, after=3)
    [event] = body["events"]
    assert set(event) == {"id", "type", "sessionId", "timestamp", "data"}
    assert event["id"] == 4 and event["type"] == "message_created"
    assert event["sessionId"] == str(collab.pk)
    assert TIMESTAMP_RE.match(event["timestamp"])
    assert event["data"] == {"messageId": str(message.pk), "role": "user", "author": "bob", "content": "héllo\nworld"}
    [(seq, name, streamed)] = replay_rows(session_id=collab.pk, after=3, limit=10)
    assert (seq, name) == (4, "message_created")
    assert json.loads(streamed) == event


def test_after_returns_exactly_the_later_events(api, collab, bob):
    newest = post_many(collab, bob, 5)
    body = poll(api(bob), collab, after=4)
    assert [e["id"] for e in body["events"]] == list(range(5, newest + 1))
    assert body["lastId"] == newest
    assert body["truncated"] is False


def test_limit_caps_the_page_and_the_next_poll_continues(api, collab, bob):
    newest = post_many(collab, bob, 7)
    client = api(bob)
    seen, after = [], 0
    while True:
        body = poll(client, collab, after=after, limit=3)
        assert len(body["events"]) <= 3
        assert body["lastId"] == newest and body["truncated"] is False
        if not body["events"]:
            break
        seen += [e["id"] for e in body["events"]]
        after = seen[-1]
    assert seen == list(range(1, newest + 1))


def test_default_limit_is_100(api, collab, bob):
    newest = post_many(collab, bob, 100)
    body = poll(api(bob), collab)
    assert [e["id"] for e in body["events"]] == list(range(1, 101))
    assert body["lastId"] == newest == 103


def test_limit_500_is_allowed(api, collab, bob):
    body = poll(api(bob), collab, limit=500)
    assert [e["id"] for e in body["events"]] == [1, 2, 3]


def test_after_the_newest_is_empty_and_not_truncated(api, collab, bob):
    for after in (3, 4, 10**12):
        body = poll(api(bob), collab, after=after)
        assert body == {"events": [], "lastId": 3, "truncated": False}


@pytest.mark.parametrize(
    "params",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"after": "1.5"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "-5"},
        {"limit": "many"},
    ],
)
def test_bad_parameters_are_400_json(api, collab, bob, params):
    response = api(bob).get(events_url(collab), params)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


# --- truncated: events after N were already pruned ---------------------------------------
def test_truncated_when_the_events_after_n_were_pruned(api, collab, bob):
    newest = post_many(collab, bob, 6)
    Event.objects.filter(session=collab, seq__lte=5).delete()
    body = poll(api(bob), collab, after=1)
    assert body["truncated"] is True
    assert [e["id"] for e in body["events"]] == list(range(6, newest + 1))
    assert body["lastId"] == newest


def test_not_truncated_when_the_next_event_is_still_stored(api, collab, bob):
    newest = post_many(collab, bob, 6)
    Event.objects.filter(session=collab, seq__lte=5).delete()
    body = poll(api(bob), collab, after=5)
    assert body["truncated"] is False
    assert [e["id"] for e in body["events"]] == list(range(6, newest + 1))


def test_truncated_when_everything_after_n_was_pruned(api, collab, bob):
    post_many(collab, bob, 2)
    Event.objects.filter(session=collab).delete()
    body = poll(api(bob), collab, after=2)
    assert body == {"events": [], "lastId": 5, "truncated": True}
    assert poll(api(bob), collab, after=5) == {"events": [], "lastId": 5, "truncated": False}


def test_truncated_with_a_limit_still_starts_at_the_oldest_kept(api, collab, bob):
    post_many(collab, bob, 6)
    Event.objects.filter(session=collab, seq__lte=4).delete()
    body = poll(api(bob), collab, after=0, limit=2)
    assert body["truncated"] is True
    assert [e["id"] for e in body["events"]] == [5, 6]


def test_events_never_pass_last_id(api, collab, bob, monkeypatch):
    """lastId and the page are one snapshot: an event published between the two reads
    must not appear after lastId (the client would resume from lastId and see it twice)."""
    import realtime.replay
    from sessions_app import api as api_module

    real_position = realtime.replay.log_position

    def position_then_publish(**kwargs):
        position = real_position(**kwargs)
        services.message_create(session=collab, author=bob, content="racing")
        return position

    monkeypatch.setattr(api_module, "log_position", position_then_publish)
    body = poll(api(bob), collab, after=0)
    assert body["events"][-1]["id"] <= body["lastId"]


# --- who may poll -----------------------------------------------------------------------
@pytest.mark.parametrize("who, status", [("carol", 200), ("staff_user", 200), ("outsider", 404)])
def test_who_may_poll(api, collab, request, who, status):
    response = api(request.getfixturevalue(who)).get(events_url(collab))
    assert response.status_code == status


def test_polling_needs_credentials(api, collab):
    response = api().get(events_url(collab))
    assert response.status_code == 401
    assert "detail" in response.json()
