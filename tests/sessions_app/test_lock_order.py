"""Writers that race on PostgreSQL (sessions_app.services, "Lock order"): each pair runs
for real, in two threads with their own connections, in the interleaving that deadlocked
or answered 500 before every writer took the session row first (tests/support/interleave).

SQLite serializes writers, so these pairs cannot interleave there; test_races.py covers
the same outcomes with stale reads on both databases.
"""

from __future__ import annotations

import pytest
from django.db import connection

from realtime.models import Event
from sessions_app import services
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, CollabSession, Message, Regeneration, RegenerationStatus
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services
from tests.support.interleave import interleave

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("writers interleave only on PostgreSQL (SQLite serializes them): see test_races.py")


@pytest.fixture(autouse=True)
def _no_runner(monkeypatch, settings):
    """Regenerations are driven by the test, step by step, not by the runner."""
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)
    settings.CHORUS_REGENERATION_RATE_USER = None
    settings.CHORUS_REGENERATION_RATE_SESSION = None


@pytest.fixture
def question(collab, bob):
    return services.message_create(session=collab, author=bob, content="How do we ship?")


@pytest.fixture
def plan(collab, bob, question):
    """A running regeneration answering `question`, claimed as a runner would."""
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    return regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="test")


def message_path(session, message_id) -> str:
    return f"/api/v1/sessions/{session.pk}/messages/{message_id}/"


def append(plan):
    return lambda: regeneration_services.regeneration_append(
        plan=plan, content="Hello", offset=0, delta="Hello", progress=10
    )


def assert_log_is_gapless(session_id) -> list[str]:
    session = CollabSession.objects.get(pk=session_id)
    events = list(Event.objects.filter(session_id=session_id).order_by("seq").values_list("seq", "type"))
    assert [seq for seq, _ in events] == list(range(1, session.last_event_id + 1))
    return [kind for _, kind in events]


@pytest.mark.parametrize("first", ["append", "delete"])
def test_deleting_a_message_while_its_regeneration_appends_neither_deadlocks_nor_fails(api, collab, alice, plan, first):
    owner = api(alice)
    delete = lambda: owner.delete(message_path(collab, plan.message_id)).status_code  # noqa: E731
    steps = {"append": append(plan), "delete": delete}
    second = "delete" if first == "append" else "append"
    one, two = interleave(steps[first], steps[second])
    outcomes = {first: one.value(), second: two.value()}  # raises what a writer raised (a deadlock)

    assert outcomes["delete"] == 204
    assert outcomes["append"] is (first == "append"), "an append after the cancel must write nothing"
    assert Message.objects.get(pk=plan.message_id).deleted_at is not None
    regeneration = Regeneration.objects.get(pk=plan.regeneration_id)
    assert regeneration.status == RegenerationStatus.CANCELLED
    kinds = assert_log_is_gapless(collab.pk)
    assert kinds[-2:] == ["regeneration_cancelled", "message_deleted"]
    assert ("regeneration_progress" in kinds) is outcomes["append"]


@pytest.mark.parametrize(
    "first, second", [("delete", "post"), ("post", "delete"), ("delete", "append"), ("append", "delete")]
)
def test_deleting_a_session_during_a_post_or_a_regeneration_deletes_everything(
    api, collab, alice, bob, plan, first, second
):
    owner, editor = api(alice), api(bob)
    session_id = collab.pk
    steps = {
        "delete": lambda: owner.delete(f"/api/v1/sessions/{session_id}/").status_code,
        "post": lambda: (
            editor.post(f"/api/v1/sessions/{session_id}/messages/", {"content": "one more"}, format="json").status_code
        ),
        "append": append(plan),
    }
    one, two = interleave(steps[first], steps[second])
    outcomes = {first: one.value(), second: two.value()}  # raises what a writer raised

    assert outcomes["delete"] == 204
    if "post" in outcomes:
        assert outcomes["post"] == (201 if first == "post" else 404)
    if "append" in outcomes:
        assert outcomes["append"] is (first == "append")
    assert not CollabSession.objects.filter(pk=session_id).exists()
    assert not Message.objects.filter(session_id=session_id).exists()
    assert not Regeneration.objects.filter(session_id=session_id).exists()
    assert not Event.objects.filter(session_id=session_id).exists()


def test_two_deletes_of_one_message_answer_204_and_404(api, collab, alice, bob, question):
    path = message_path(collab, question.pk)
    owner, author = api(alice), api(bob)
    one, two = interleave(lambda: owner.delete(path), lambda: author.delete(path))
    answers = sorted([one.value(), two.value()], key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [204, 404]
    assert answers[1].json() == {"detail": "Not found."}
    assert assert_log_is_gapless(collab.pk).count("message_deleted") == 1


@pytest.mark.parametrize("first", ["delete", "regenerate"])
def test_a_regeneration_started_while_its_message_is_deleted_is_refused_or_cancelled(
    api, collab, alice, bob, question, first
):
    owner, editor = api(alice), api(bob)
    steps = {
        "delete": lambda: owner.delete(message_path(collab, question.pk)),
        "regenerate": lambda: editor.post(
            "/api/v1/chat_actions/regenerate",
            {"sessionId": str(collab.pk), "messageId": str(question.pk)},
            format="json",
        ),
    }
    second = "regenerate" if first == "delete" else "delete"
    one, two = interleave(steps[first], steps[second])
    answers = {first: one.value(), second: two.value()}
    assert answers["delete"].status_code == 204
    if first == "delete":
        assert answers["regenerate"].status_code == 404
        assert answers["regenerate"].json() == {"detail": "Not found."}
    else:
        assert answers["regenerate"].status_code == 202
    # Whatever the order: nothing answers a deleted message.
    assert not Regeneration.objects.filter(
        status__in=ACTIVE_REGENERATION_STATUSES, source_message__deleted_at__isnull=False
    ).exists()
    assert_log_is_gapless(collab.pk)


def test_a_member_removed_while_posting_cannot_write(api, collab, alice, bob):
    owner, editor = api(alice), api(bob)
    one, two = interleave(
        lambda: owner.delete(f"/api/v1/sessions/{collab.pk}/members/bob/"),
        lambda: editor.post(f"/api/v1/sessions/{collab.pk}/messages/", {"content": "too late"}, format="json"),
    )
    assert one.value().status_code == 204
    assert two.value().status_code == 404
    assert not Message.objects.filter(session=collab, content="too late").exists()
    assert assert_log_is_gapless(collab.pk)[-1] == "member_left"
