"""Regeneration flushes on PostgreSQL (regenerations.services.regeneration_append_many): a
lone flush in one statement, a batch (or a flush with a checkpoint) in one transaction;
the rows of the general path, and nothing written once the run was cancelled, even by a
cancel that held the session lock while the flush waited for it."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Regeneration
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services
from tests.support.interleave import interleave

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement flush is PostgreSQL's; SQLite takes the general path")
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)


@pytest.fixture
def attempts(monkeypatch):
    """What each path returned: `one` the lone flush's statement, `many` the transaction."""
    seen = {"one": [], "many": []}
    one, many = regeneration_services._append_one_statement, regeneration_services._append_many_postgresql

    def spy_one(flush):
        seen["one"].append(one(flush))
        return seen["one"][-1]

    def spy_many(flushes):
        seen["many"].append(many(flushes))
        return seen["many"][-1]

    monkeypatch.setattr(regeneration_services, "_append_one_statement", spy_one)
    monkeypatch.setattr(regeneration_services, "_append_many_postgresql", spy_many)
    return seen


def running(session, author):
    question = services.message_create(session=session, author=author, content="Why?")
    regeneration = regeneration_services.regeneration_start(
        session=session, source_message=question, requested_by=author
    )
    return regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="test")


def newest_event(session) -> dict:
    row = Event.objects.filter(session=session).order_by("-seq").values("seq", "type", "data", "envelope").first()
    envelope = json.loads(row.pop("envelope"))
    assert envelope["id"] == row["seq"] and envelope["data"] == row["data"] and envelope["type"] == row["type"]
    return {"type": row["type"], "data": {k: v for k, v in row["data"].items() if k not in ("messageId", "taskId")}}


def test_the_one_statement_flush_stores_the_rows_of_the_general_path(settings, alice, bob, attempts):
    results = []
    for one_statement in (True, False):
        settings.CHORUS_ONE_STATEMENT_WRITES = one_statement
        session = services.session_create(owner=alice, title=f"one statement: {one_statement}")
        plan = running(session, alice)
        before = CollabSession.objects.get(pk=session.pk).last_event_id
        written = []
        # The first flush is a checkpoint (the text's length doubled), the second is not.
        for offset, delta in ((0, 'Hé 🚀 "x"'), (9, "é")):
            assert regeneration_services.regeneration_append(plan=plan, offset=offset, delta=delta, progress=42)
            written.append((newest_event(session), Regeneration.objects.get(pk=plan.regeneration_id).content))
        results.append((written, CollabSession.objects.get(pk=session.pk).last_event_id - before))
    # The first flush (a checkpoint) took the transaction, the second one statement.
    assert attempts == {"one": [False, True], "many": [[True]]}
    assert results[0] == results[1]
    assert results[0][0][1][1] == 'Hé 🚀 "x"'  # the checkpoint, not rewritten by the second flush


def test_a_batch_numbers_each_session_s_events_in_order(alice, attempts):
    sessions = [services.session_create(owner=alice, title=f"batch {i}") for i in range(2)]
    plans = [running(sessions[0], alice), running(sessions[0], alice), running(sessions[1], alice)]
    regeneration_services.regeneration_cancel(
        regeneration=Regeneration.objects.get(pk=plans[1].regeneration_id), by=alice
    )
    flushes = [regeneration_services.Flush(plan, 0, f"run {i}", 5, f"run {i}") for i, plan in enumerate(plans)]
    assert regeneration_services.regeneration_append_many(flushes=flushes) == [True, False, True]
    for session in sessions:
        seqs = list(Event.objects.filter(session=session).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, CollabSession.objects.get(pk=session.pk).last_event_id + 1))
    assert Regeneration.objects.get(pk=plans[1].regeneration_id).content == ""  # cancelled: no checkpoint
    assert Regeneration.objects.get(pk=plans[2].regeneration_id).content == "run 2"


@pytest.mark.parametrize("checkpoint", [True, False], ids=["transaction", "one-statement"])
def test_a_flush_waiting_for_a_cancel_writes_nothing(collab, alice, attempts, checkpoint):
    plan = running(collab, alice)
    offset = 0
    if not checkpoint:  # a first flush, so that the next one is not a checkpoint
        assert regeneration_services.regeneration_append(plan=plan, offset=0, delta="ab", progress=1)
        offset = 2
    regeneration = Regeneration.objects.get(pk=plan.regeneration_id)
    one, two = interleave(
        lambda: regeneration_services.regeneration_cancel(regeneration=regeneration, by=alice),
        lambda: regeneration_services.regeneration_append(plan=plan, offset=offset, delta="c", progress=5),
    )
    assert one.value().status == "cancelled"
    assert two.value() is False
    # It waited for the session lock; one statement then saw the counter move and handed
    # over to the transaction, which found it cancelled.
    assert attempts["many"][-1] == [False]
    assert attempts["one"][-1] is False
    kinds = list(Event.objects.filter(session=collab).order_by("seq").values_list("type", flat=True))
    assert kinds[-1] == "regeneration_cancelled" and kinds.count("regeneration_progress") == (0 if checkpoint else 1)
    session = CollabSession.objects.get(pk=collab.pk)
    assert list(Event.objects.filter(session=collab).order_by("seq").values_list("seq", flat=True)) == list(
        range(1, session.last_event_id + 1)
    )
