"""The operator's actions: each a POST with CSRF and a confirmation step, each audited."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from ops.models import AuditAction, AuditEntry
from realtime.models import Event
from sessions_app import services
from sessions_app.models import CollabSession, Regeneration
from sessions_app.regenerations import services as regeneration_services

pytestmark = pytest.mark.django_db(transaction=True)  # event counters and on_commit sends


@pytest.fixture
def csrf_client(staff_user) -> Client:
    """A staff client that, like a browser, must send the CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    return client


def csrf_token(client: Client, path: str) -> str:
    html = client.get(path).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


@pytest.fixture
def regeneration(collab, alice, bob, monkeypatch):
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=collab, author=alice, content="q")
    return regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)


def with_history(collab, bob, count: int = 12) -> int:
    for i in range(count):
        services.message_create(session=collab, author=bob, content=f"m{i}")
    return CollabSession.objects.get(pk=collab.pk).last_event_id


def action_paths(collab, regeneration) -> dict[str, tuple[str, dict]]:
    return {
        "prune": (f"/ops/sessions/{collab.pk}/prune/", {"keep": "3"}),
        "clear": (f"/ops/sessions/{collab.pk}/clear/", {}),
        "notice": (f"/ops/sessions/{collab.pk}/notice/", {"message": "Maintenance at 18:00 UTC"}),
        "cancel": (f"/ops/regenerations/{regeneration.pk}/cancel/", {}),
    }


def snapshot(collab) -> tuple:
    return (
        list(Event.objects.filter(session=collab).values_list("seq", "type")),
        CollabSession.objects.get(pk=collab.pk).last_event_id,
        list(Regeneration.objects.values_list("status", flat=True)),
        AuditEntry.objects.count(),
    )


@pytest.mark.parametrize("action", ["prune", "clear", "notice", "cancel"])
def test_without_csrf_token_or_confirmation_nothing_changes(csrf_client, collab, bob, regeneration, action):
    with_history(collab, bob)
    path, data = action_paths(collab, regeneration)[action]
    before = snapshot(collab)
    assert csrf_client.post(path, {**data, "confirm": "yes"}).status_code == 403  # no CSRF token
    page = csrf_client.get(path)  # the confirmation page
    assert page.status_code == 200
    assert 'name="confirm" value="yes"' in page.content.decode()
    token = csrf_token(csrf_client, path)
    unconfirmed = csrf_client.post(path, {**data, "csrfmiddlewaretoken": token})
    assert unconfirmed.status_code == 200  # shown again, to confirm
    assert 'name="confirm" value="yes"' in unconfirmed.content.decode()
    assert snapshot(collab) == before


def confirm(client: Client, path: str, data: dict):
    response = client.post(path, {**data, "confirm": "yes", "csrfmiddlewaretoken": csrf_token(client, path)})
    assert response.status_code == 302, response.content.decode()[:500]
    return response


def test_prune_keeps_the_newest_events_and_ids_continue(csrf_client, collab, bob, regeneration, staff_user):
    newest = with_history(collab, bob)
    confirm(csrf_client, *action_paths(collab, regeneration)["prune"])
    assert list(Event.objects.filter(session=collab).values_list("seq", flat=True)) == [
        newest - 2,
        newest - 1,
        newest,
    ]
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == newest
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target_type, entry.target_id) == (
        staff_user,
        AuditAction.HISTORY_PRUNE,
        "session",
        str(collab.pk),
    )
    assert entry.details == {"keep": 3, "deletedByAge": 0, "deletedByCount": newest - 3}


def test_clear_deletes_every_stored_event_but_keeps_the_counter(csrf_client, collab, bob, regeneration):
    newest = with_history(collab, bob)
    response = confirm(csrf_client, *action_paths(collab, regeneration)["clear"])
    assert response["Location"] == f"/ops/sessions/{collab.pk}/"
    assert not Event.objects.filter(session=collab).exists()
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == newest
    following = services.message_create(session=collab, author=bob, content="after clearing")
    assert Event.objects.get(session=collab, data__messageId=str(following.pk)).seq == newest + 1
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.details) == (AuditAction.HISTORY_CLEAR, {"deleted": newest, "lastEventId": newest})


def test_notice_publishes_a_system_event(csrf_client, collab, bob, regeneration):
    newest = with_history(collab, bob, 1)
    path, data = action_paths(collab, regeneration)["notice"]
    preview = csrf_client.post(path, {**data, "csrfmiddlewaretoken": csrf_token(csrf_client, path)})
    assert "Maintenance at 18:00 UTC" in preview.content.decode()  # shown before it is sent
    confirm(csrf_client, path, data)
    event = Event.objects.get(session=collab, seq=newest + 1)
    assert (event.type, event.data) == ("system", {"message": "Maintenance at 18:00 UTC"})
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.details) == (
        AuditAction.SYSTEM_NOTICE,
        {"message": "Maintenance at 18:00 UTC", "eventId": newest + 1},
    )


def test_an_empty_notice_is_refused(csrf_client, collab, regeneration):
    path = f"/ops/sessions/{collab.pk}/notice/"
    before = snapshot(collab)
    token = csrf_token(csrf_client, path)
    response = csrf_client.post(path, {"message": "   ", "confirm": "yes", "csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert snapshot(collab) == before


def test_cancel_goes_through_the_service_and_is_audited(csrf_client, collab, regeneration, staff_user):
    confirm(csrf_client, *action_paths(collab, regeneration)["cancel"])
    assert Regeneration.objects.get(pk=regeneration.pk).status == "cancelled"
    assert Event.objects.filter(session=collab).order_by("-seq").first().type == "regeneration_cancelled"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target_type, entry.target_id, entry.session_id, entry.actor_username) == (
        AuditAction.REGENERATION_CANCEL,
        "regeneration",
        str(regeneration.pk),
        collab.pk,
        staff_user.username,
    )


def test_cancelling_an_ended_regeneration_says_so_and_audits_nothing(csrf_client, collab, regeneration):
    regeneration_services.regeneration_cancel(regeneration=regeneration)
    Regeneration.objects.filter(pk=regeneration.pk).update(status="completed")
    path, data = action_paths(collab, regeneration)["cancel"]
    response = confirm(csrf_client, path, data)
    page = csrf_client.get(response["Location"]).content.decode()
    assert "already completed" in page
    assert not AuditEntry.objects.exists()


def test_audit_entries_show_on_the_console_and_in_the_admin(csrf_client, collab, regeneration, staff_user):
    confirm(csrf_client, *action_paths(collab, regeneration)["notice"])
    assert "sent a system notice" in csrf_client.get("/ops/audit/").content.decode()
    assert "sent a system notice" in csrf_client.get(f"/ops/sessions/{collab.pk}/").content.decode()
    staff_user.is_superuser = True
    staff_user.save()
    admin_page = csrf_client.get("/admin/ops/auditentry/")
    assert admin_page.status_code == 200
    assert admin_page.context["cl"].result_count == 1
    entry = AuditEntry.objects.get()
    assert csrf_client.get(f"/admin/ops/auditentry/{entry.pk}/delete/").status_code == 403
