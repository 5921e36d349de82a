"""The text so far of a running answer survives retention (issue 12): the regeneration's
row holds a checkpoint of the whole text whenever its length doubled, and readers rebuild
the text from it and the deltas after it, so pruning early `regeneration_progress`
events loses nothing. Checkpoints stay linear in the answer; flushes leave progress and
lease to the lease renewal."""

from __future__ import annotations

import pytest

from realtime.models import Event
from realtime.retention import events_prune
from sessions_app import services
from sessions_app.models import Message, Regeneration
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_runner(monkeypatch):
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)


def running_plan(session, author):
    question = services.message_create(session=session, author=author, content="Tell me everything")
    regeneration = regeneration_services.regeneration_start(
        session=session, source_message=question, requested_by=author
    )
    return regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="test")


def stream(plan, pieces: list[str], *, pass_content: bool = True) -> str:
    """Flush `pieces` in order, as the runner does (the text so far with each)."""
    text = ""
    for number, piece in enumerate(pieces):
        offset, text = len(text), text + piece
        content = text if pass_content else None
        assert regeneration_services.regeneration_append(
            plan=plan, offset=offset, delta=piece, progress=number, content=content
        )
    return text


@pytest.mark.parametrize("pass_content", [True, False], ids=["runner", "read-back"])
def test_pruned_early_deltas_do_not_shorten_the_text_so_far(api, collab, bob, carol, pass_content):
    plan = running_plan(collab, bob)
    # Code points of every width, so offsets and checkpoint lengths are counted alike.
    pieces = [f"{i}é🚀 word{i} " for i in range(60)]
    text = stream(plan, pieces, pass_content=pass_content)
    progress_events = Event.objects.filter(session=collab, type="regeneration_progress")
    checkpoint = len(Regeneration.objects.get(pk=plan.regeneration_id).content)
    after = progress_events.filter(data__offset__gte=checkpoint).count()
    # Retention takes every delta the checkpoint holds (the early ones: at least half the
    # text), and keeps the newer ones.
    events_prune(session_id=collab.pk, keep=after)
    assert progress_events.count() == after < 30

    detail = api(carol).get(f"/api/v1/regenerations/{plan.regeneration_id}/").json()
    assert detail["status"] == "running" and detail["content"] == text
    one = api(carol).get(f"/api/v1/sessions/{collab.pk}/messages/{plan.message_id}/").json()
    assert one["content"] == text
    listed = api(carol).get(f"/api/v1/sessions/{collab.pk}/messages/").json()["results"]
    assert [m["content"] for m in listed if m["id"] == str(plan.message_id)] == [text]
    # A run that ends without its own final text (failed, cancelled, reaped) keeps it all too.
    assert regeneration_services.regeneration_fail(plan=plan, error="stopped")
    assert Regeneration.objects.get(pk=plan.regeneration_id).content == text
    assert Message.objects.get(pk=plan.message_id).content == text


def test_checkpoints_are_at_least_half_the_text_and_linear_in_total():
    for flush_length in (1, 7, 40, 1000):
        length = written = checkpoints = 0
        while length < 200_000:
            if regeneration_services.checkpoint_due(offset=length, length=flush_length):
                written += length + flush_length
                checkpoints += 1
            length += flush_length
            # What a reader rebuilds from deltas (the rest comes from the checkpoint) is
            # less than the checkpoint: pruning loses nothing while the newest half stays.
        assert written < 4 * length, (flush_length, written, length)
        assert checkpoints <= length.bit_length()


def test_the_api_shows_the_newest_progress_and_the_lease_renewal_records_it(api, collab, bob, carol):
    plan = running_plan(collab, bob)
    stream(plan, ["a" * 10, "b" * 3])  # progress 0 with the checkpoint, then 1 without one
    detail = api(carol).get(f"/api/v1/regenerations/{plan.regeneration_id}/").json()
    assert detail["progress"] == 1 and detail["content"] == "a" * 10 + "b" * 3
    before = Regeneration.objects.get(pk=plan.regeneration_id).heartbeat_at
    alive = regeneration_services.regenerations_renew_leases(
        regeneration_ids=[plan.regeneration_id], progress={plan.task_id: 7}
    )
    assert alive == {plan.task_id}
    row = Regeneration.objects.get(pk=plan.regeneration_id)
    assert row.progress == 7 and row.heartbeat_at > before
