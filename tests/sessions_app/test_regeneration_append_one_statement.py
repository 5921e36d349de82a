"""A regeneration's flush as one statement on PostgreSQL (regenerations.services.
regeneration_append): the rows of the general path, and nothing written once the run was
cancelled, even by a cancel that held the session lock while the flush waited for it."""

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
    seen = []
    attempt = regeneration_services._append_one_statement

    def spy(**kwargs):
        seen.append(attempt(**kwargs))
        return seen[-1]

    monkeypatch.setattr(regeneration_services, "_append_one_statement", spy)
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
        assert regeneration_services.regeneration_append(plan=plan, offset=0, delta='Hé 🚀 "x"', progress=42)
        regeneration = Regeneration.objects.get(pk=plan.regeneration_id)
        results.append(
            (
                newest_event(session),
                CollabSession.objects.get(pk=session.pk).last_event_id - before,
                regeneration.progress,
                regeneration.content,
                regeneration.heartbeat_at > regeneration.started_at,
            )
        )
    assert attempts == [True]  # the first flush was one statement, the second the general path
    assert results[0] == results[1]


def test_a_flush_waiting_for_a_cancel_writes_nothing(collab, alice, attempts):
    plan = running(collab, alice)
    regeneration = Regeneration.objects.get(pk=plan.regeneration_id)
    one, two = interleave(
        lambda: regeneration_services.regeneration_cancel(regeneration=regeneration, by=alice),
        lambda: regeneration_services.regeneration_append(plan=plan, offset=0, delta="late", progress=5),
    )
    assert one.value().status == "cancelled"
    assert two.value() is False
    assert attempts == [False]  # it waited, then handed over; the general path found it cancelled
    kinds = list(Event.objects.filter(session=collab).order_by("seq").values_list("type", flat=True))
    assert kinds[-1] == "regeneration_cancelled" and "regeneration_progress" not in kinds
    session = CollabSession.objects.get(pk=collab.pk)
    assert list(Event.objects.filter(session=collab).order_by("seq").values_list("seq", flat=True)) == list(
        range(1, session.last_event_id + 1)
    )
