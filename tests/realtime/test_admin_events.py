"""Staff can read the event log in the admin; nobody can change it there."""

import pytest

from realtime.models import Event
from sessions_app import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client, make_user):
    root = make_user("root", staff=True)
    root.is_superuser = True
    root.save()
    client.force_login(root)
    return client


def test_the_admin_lists_events_filtered_by_type_and_searched_by_session(superuser_client, collab, alice):
    services.message_post(session=collab, author=alice, content="findable text")
    response = superuser_client.get("/admin/realtime/event/", {"type__exact": "message_created"})
    assert response.status_code == 200
    assert {event.type for event in response.context["cl"].result_list} == {"message_created"}
    by_session = superuser_client.get("/admin/realtime/event/", {"q": str(collab.pk)})
    assert by_session.status_code == 200
    assert by_session.context["cl"].result_count == Event.objects.filter(session=collab).count()


def test_the_event_log_is_read_only_in_the_admin(superuser_client, collab):
    event = Event.objects.filter(session=collab).first()
    page = superuser_client.get(f"/admin/realtime/event/{event.pk}/change/")
    assert page.status_code == 200  # viewable
    assert superuser_client.get("/admin/realtime/event/add/").status_code == 403
    posted = superuser_client.post(f"/admin/realtime/event/{event.pk}/delete/", {"post": "yes"})
    assert posted.status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()
