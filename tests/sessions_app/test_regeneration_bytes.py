"""Bytes written to PostgreSQL per flush of a regeneration do not grow with the answer
(issue 12): a long answer costs in proportion to its length, not to its square. Measured
as WAL bytes (`pg_current_wal_lsn()` before and after a flush) of a flush late in a long
answer against one early in a short answer. WAL is the whole server's, so other writers
may add to a measurement: each is the least of several."""

from __future__ import annotations

import random
import string

import pytest
from django.db import connection

from sessions_app import services
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("WAL is PostgreSQL's")
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)


def wal_lsn() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        return cursor.fetchone()[0]


def text(rng: random.Random, length: int) -> str:
    # Incompressible, as an answer is to TOAST's compression at these sizes.
    return "".join(rng.choice(string.ascii_letters + " ") for _ in range(length))


def least_wal_per_flush(plan, rng: random.Random, content_length: int, delta_length: int, repeats: int = 5) -> int:
    """Stream `content_length` characters, then measure flushes of `delta_length`."""
    offset = 0
    while offset < content_length:
        chunk = text(rng, min(20_000, content_length - offset))
        assert regeneration_services.regeneration_append(plan=plan, offset=offset, delta=chunk, progress=10)
        offset += len(chunk)
    measured = []
    for _ in range(repeats):
        delta = text(rng, delta_length)
        before = wal_lsn()
        assert regeneration_services.regeneration_append(plan=plan, offset=offset, delta=delta, progress=50)
        measured.append(wal_lsn() - before)
        offset += len(delta)
    return min(measured)


def running_plan(session, author, content):
    question = services.message_create(session=session, author=author, content=content)
    regeneration = regeneration_services.regeneration_start(
        session=session, source_message=question, requested_by=author
    )
    return regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="test")


def test_a_flush_late_in_a_long_answer_writes_what_one_early_in_a_short_answer_does(collab, bob):
    rng = random.Random(12)
    short = least_wal_per_flush(running_plan(collab, bob, "Short?"), rng, content_length=100, delta_length=40)
    long = least_wal_per_flush(running_plan(collab, bob, "Long?"), rng, content_length=200_000, delta_length=40)
    # Rewriting the content so far (twice: regeneration and message) would be >= 400 kB.
    assert long < 3 * short + 4_096, f"a 40-character flush wrote {long} B after 200 kB, {short} B after 100 B"


def test_the_rows_get_the_whole_answer_when_it_ends(collab, bob):
    from sessions_app.models import Message, Regeneration

    rng = random.Random(7)
    plan = running_plan(collab, bob, "Tell me")
    parts = [text(rng, n) for n in (5, 500, 50)]
    offset = 0
    for part in parts:
        assert regeneration_services.regeneration_append(plan=plan, offset=offset, delta=part, progress=10)
        offset += len(part)
    assert regeneration_services.regeneration_complete(plan=plan, content="".join(parts))
    assert Regeneration.objects.get(pk=plan.regeneration_id).content == "".join(parts)
    assert Message.objects.get(pk=plan.message_id).content == "".join(parts)
