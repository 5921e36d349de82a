"""The admin lists regenerations and cancels them through the service (with the event)."""

import pytest

from realtime.models import Event
from sessions_app import services
from sessions_app.models import Regeneration
from sessions_app.regenerations import services as regeneration_services

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_admin_cancel_action_publishes_regeneration_cancelled(client, collab, alice, bob, make_user, monkeypatch):
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=collab, author=alice, content="q")
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    admin_user = make_user("root", staff=True)
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    for model in ("regeneration", "collabsession", "message"):
        assert client.get(f"/admin/sessions_app/{model}/").status_code == 200
    response = client.post(
        "/admin/sessions_app/regeneration/", {"action": "cancel_selected", "_selected_action": [str(regeneration.pk)]}
    )
    assert response.status_code == 302
    assert Regeneration.objects.get(pk=regeneration.pk).status == "cancelled"
    assert Event.objects.filter(session=collab).order_by("-seq").first().type == "regeneration_cancelled"
