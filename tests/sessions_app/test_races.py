"""What a request finds when the state changed after its checks: a stale read of the
message, or of the caller's role (the view checks before the transaction; the service
checks again under the session lock). Deterministic on both databases: the race is
replayed by acting on what the view read before another request changed it.
test_lock_order.py runs the same races for real on PostgreSQL."""

from __future__ import annotations

import pytest

from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Message, Regeneration, RegenerationStatus
from sessions_app.regenerations import runner
from sessions_app.regenerations import services as regeneration_services
from sessions_app.selectors import MessageNotFound, SessionNotFound

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_runner(monkeypatch):
    monkeypatch.setattr(runner, "regeneration_launch", lambda regeneration_id: None)


@pytest.fixture
def bobs_message(collab, bob):
    return services.message_create(session=collab, author=bob, content="bob wrote this")


def newest(session) -> int:
    return CollabSession.objects.get(pk=session.pk).last_event_id


def test_a_message_deleted_meanwhile_is_not_found_by_delete_edit_or_regenerate(collab, alice, bob, bobs_message):
    seen_by_the_view = Message.objects.get(pk=bobs_message.pk)
    services.message_delete(message=bobs_message, by=alice)
    before = newest(collab)
    with pytest.raises(MessageNotFound):
        services.message_delete(message=seen_by_the_view, by=bob)
    with pytest.raises(MessageNotFound):
        services.message_edit(message=seen_by_the_view, content="x", by=bob)
    with pytest.raises(MessageNotFound):
        regeneration_services.regeneration_start(session=collab, source_message=seen_by_the_view, requested_by=bob)
    assert newest(collab) == before
    assert not Regeneration.objects.exists()


def test_a_session_deleted_meanwhile_is_not_found_by_writers(collab, alice, bob, bobs_message):
    seen_by_the_view = CollabSession.objects.get(pk=collab.pk)
    services.session_delete(session=collab)
    with pytest.raises(SessionNotFound):
        services.message_post(session=seen_by_the_view, author=bob, content="late")
    with pytest.raises(SessionNotFound):
        services.session_update(session=seen_by_the_view, title="late")
    with pytest.raises(SessionNotFound):
        services.message_delete(message=bobs_message, by=alice)
    assert not Message.objects.exists() and not Event.objects.exists()


@pytest.fixture
def removed_bob(collab, bob, bobs_message):
    """bob's regeneration, then bob removed: every later request of his was checked
    (by the view) while he was still an editor."""
    regeneration = regeneration_services.regeneration_start(
        session=collab, source_message=bobs_message, requested_by=bob
    )
    services.member_remove(session=collab, username="bob")
    return regeneration


def test_a_removed_member_cannot_post(collab, bob, removed_bob):
    before = newest(collab)
    with pytest.raises(SessionNotFound):
        services.message_post(session=collab, author=bob, content="too late")
    with pytest.raises(SessionNotFound):
        services.message_post(session=collab, author=bob, content="too late", reply=True)
    assert newest(collab) == before
    assert not Message.objects.filter(content="too late").exists()


def test_a_removed_member_cannot_edit_delete_regenerate_or_cancel(collab, bob, bobs_message, removed_bob):
    before = newest(collab)
    with pytest.raises(SessionNotFound):
        services.message_edit(message=bobs_message, content="changed", by=bob)
    with pytest.raises(SessionNotFound):
        services.message_delete(message=bobs_message, by=bob)
    with pytest.raises(SessionNotFound):
        regeneration_services.regeneration_start(session=collab, source_message=bobs_message, requested_by=bob)
    with pytest.raises(SessionNotFound):
        regeneration_services.regeneration_cancel(regeneration=removed_bob, by=bob)
    assert newest(collab) == before
    bobs_message.refresh_from_db()
    assert bobs_message.content == "bob wrote this" and bobs_message.deleted_at is None
    assert Regeneration.objects.get(pk=removed_bob.pk).status == RegenerationStatus.QUEUED


def test_a_viewer_is_refused_by_the_services_too(collab, carol, bobs_message):
    from sessions_app.services import WriteNotAllowed

    with pytest.raises(WriteNotAllowed):
        services.message_post(session=collab, author=carol, content="viewers do not write")
    with pytest.raises(WriteNotAllowed):
        regeneration_services.regeneration_start(session=collab, source_message=bobs_message, requested_by=carol)
