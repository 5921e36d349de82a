"""The admin: list pages cost a fixed number of queries, saving a session never writes
`last_event_id`, and people's text shows as text."""

from __future__ import annotations

import pytest

from ops.models import AuditEntry
from realtime.models import Event, Worker
from sessions_app import services
from sessions_app.admin import CollabSessionAdmin
from sessions_app.models import CollabSession, Role
from sessions_app.regenerations import services as regeneration_services
from tests.support.html import injected_images
from tests.support.registry import worker_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client, make_user):
    root = make_user("root", staff=True)
    root.is_superuser = True
    root.save()
    client.force_login(root)
    return client


@pytest.fixture
def many_rows(make_user, monkeypatch):
    """40 sessions, each with a member, two messages and a regeneration; registry rows."""
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    owner, member = make_user("owner1"), make_user("member1")
    for i in range(40):
        session = services.session_create(owner=owner, title=f"session {i}")
        services.member_add(session=session, username="member1", role=Role.EDITOR)
        question = services.message_create(session=session, author=member, content=f"question {i}")
        regeneration_services.regeneration_start(session=session, source_message=question, requested_by=member)
        AuditEntry.objects.create(
            actor=owner, actor_username="owner1", action="history_prune", target_type="session", target_id=str(i)
        )
    for pid in range(10):
        worker_row(5000 + pid)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/sessions_app/collabsession/",
        "/admin/sessions_app/membership/",
        "/admin/sessions_app/message/",
        "/admin/sessions_app/regeneration/",
        "/admin/realtime/event/",
        "/admin/realtime/worker/",
        "/admin/ops/auditentry/",
    ],
)
def test_list_pages_cost_a_fixed_number_of_queries(superuser_client, many_rows, path, django_assert_max_num_queries):
    # Session, user, count, rows, and a few for filters: not one per row (40+ rows each).
    with django_assert_max_num_queries(12):
        response = superuser_client.get(path)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 10


def test_saving_a_session_in_the_admin_never_rolls_its_event_counter_back(superuser_client, collab, bob, monkeypatch):
    """The admin reads the row, an event is published meanwhile, then the admin saves:
    the counter must keep the published id, and the next publish must not collide."""
    original_save_model = CollabSessionAdmin.save_model
    published = []

    def save_model_after_a_publish(self, request, obj, form, change):
        published.append(services.message_create(session=collab, author=bob, content="meanwhile"))
        original_save_model(self, request, obj, form, change)

    monkeypatch.setattr(CollabSessionAdmin, "save_model", save_model_after_a_publish)
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    response = superuser_client.post(
        f"/admin/sessions_app/collabsession/{collab.pk}/change/",
        {
            "title": "Renamed in the admin",
            "owner": collab.owner_id,
            "created_at_0": "2026-01-01",
            "created_at_1": "10:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(published) == 1
    session = CollabSession.objects.get(pk=collab.pk)
    assert session.title == "Renamed in the admin"
    assert session.last_event_id == before + 1
    following = services.message_create(session=collab, author=bob, content="after the admin's save")
    assert Event.objects.get(session=collab, data__messageId=str(following.pk)).seq == before + 2


def test_a_stale_copy_saved_anywhere_keeps_the_counter(collab, bob):
    stale = CollabSession.objects.get(pk=collab.pk)
    services.message_create(session=collab, author=bob, content="moves the counter")
    newest = CollabSession.objects.get(pk=collab.pk).last_event_id
    stale.title = "stale copy"
    stale.save()
    stale.save(update_fields=["title", "last_event_id"])
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == newest


def test_titles_and_messages_render_as_text_in_the_admin(superuser_client, alice, monkeypatch):
    hostile = "<img src=x onerror=alert(1)>"
    session = services.session_create(owner=alice, title=hostile)
    message = services.message_create(session=session, author=alice, content=hostile)
    pages = [
        "/admin/sessions_app/collabsession/",
        f"/admin/sessions_app/collabsession/{session.pk}/change/",
        "/admin/sessions_app/message/",
        f"/admin/sessions_app/message/{message.pk}/change/",
        "/admin/realtime/event/",
    ]
    for path in pages:
        html = superuser_client.get(path).content.decode()
        assert injected_images(html) == [], path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path


def test_the_worker_registry_is_read_only_in_the_admin(superuser_client):
    worker = worker_row(5101)
    assert superuser_client.get("/admin/realtime/worker/").status_code == 200
    assert superuser_client.get("/admin/realtime/worker/add/").status_code == 403
    assert superuser_client.post(f"/admin/realtime/worker/{worker.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Worker.objects.filter(pk=worker.pk).exists()
