"""The members' pages through Django's test client (the browser tests drive the live parts)."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from sessions_app import services
from sessions_app.models import CollabSession, Role

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_config(response) -> dict:
    match = re.search(r'<script id="session-config" type="application/json">(.*?)</script>', response.content.decode())
    assert match, "the session page carries its configuration"
    return json.loads(match.group(1))


# --- signing in and out -------------------------------------------------------------------
def test_anonymous_home_redirects_to_login_with_next():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_anonymous_session_page_redirects_to_login(collab):
    response = Client().get(f"/sessions/{collab.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/sessions/")


def test_login_form_lands_on_the_session_list(alice):
    client = Client()
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_wrong_password_shows_the_form_again(alice):
    response = Client().post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"did not match" in response.content


def test_logout_is_a_post_that_returns_to_login(alice):
    client = logged_in(alice)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_header_links_staff_to_console_and_admin(alice, staff_user):
    member_page = logged_in(alice).get("/").content.decode()
    assert 'href="/ops/"' not in member_page and 'href="/admin/"' not in member_page
    assert 'href="/api/docs/"' in member_page and "Log out" in member_page
    staff_page = logged_in(staff_user).get("/").content.decode()
    assert 'href="/ops/"' in staff_page and 'href="/admin/"' in staff_page


# --- the session list --------------------------------------------------------------------
def listed_ids(response) -> list[str]:
    return re.findall(r'data-session-id="([0-9a-f-]+)"', response.content.decode())


def test_list_shows_my_sessions_most_recently_active_first(alice, bob):
    first = services.session_create(owner=alice, title="First")
    second = services.session_create(owner=alice, title="Second")
    third = services.session_create(owner=bob, title="Third")
    services.member_add(session=third, username="alice", role=Role.VIEWER)
    services.session_create(owner=bob, title="Not mine")
    # The oldest session becomes the most recently active one.
    services.message_create(session=first, author=alice, content="hello")
    response = logged_in(alice).get("/")
    assert response.status_code == 200
    assert listed_ids(response) == [str(first.pk), str(third.pk), str(second.pk)]
    html = response.content.decode()
    assert "Not mine" not in html
    # My role in each, and who is in it.
    assert re.search(r"Third</span>\s*<span class=\"role role--viewer\">viewer</span>", html)
    assert "bob, alice" in html  # in the order they joined


def test_list_queries_do_not_grow_with_sessions_or_members(alice, make_user):
    client = logged_in(alice)
    services.session_create(owner=alice, title="one")
    with CaptureQueriesContext(connection) as few:
        client.get("/")
    for index in range(6):
        session = services.session_create(owner=alice, title=f"more {index}")
        for other in range(3):
            make_user(f"user{index}x{other}")
            services.member_add(session=session, username=f"user{index}x{other}", role=Role.EDITOR)
        services.message_create(session=session, author=alice, content="hi")
    with CaptureQueriesContext(connection) as many:
        response = client.get("/")
    assert len(listed_ids(response)) == 7
    assert len(many.captured_queries) == len(few.captured_queries)


def test_list_escapes_titles(alice):
    services.session_create(owner=alice, title=HOSTILE)
    html = logged_in(alice).get("/").content.decode()
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_create_form_makes_me_owner_and_opens_the_session(alice):
    response = logged_in(alice).post("/", {"title": "  Launch plan  "})
    session = CollabSession.objects.get(title="Launch plan")
    assert response.status_code == 302
    assert response["Location"] == f"/sessions/{session.pk}/"
    assert session.owner == alice
    assert session.memberships.get().role == Role.OWNER


def test_create_form_rejects_an_empty_title(alice):
    response = logged_in(alice).post("/", {"title": "   "})
    assert response.status_code == 400
    assert b"This field is required" in response.content
    assert not CollabSession.objects.exists()


def test_create_form_needs_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/", {"title": "forged"}).status_code == 403
    assert not CollabSession.objects.exists()
    page = client.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post("/", {"title": "real", "csrfmiddlewaretoken": token}).status_code == 302


# --- the session page --------------------------------------------------------------------
def test_member_gets_the_page_with_its_configuration(collab, alice):
    services.message_create(session=collab, author=alice, content="hi")
    collab.refresh_from_db()
    response = logged_in(alice).get(f"/sessions/{collab.pk}/")
    assert response.status_code == 200
    assert b"Planning" in response.content
    config = page_config(response)
    assert config["sessionId"] == str(collab.pk)
    assert config["role"] == "owner" and config["canWrite"] is True and config["isOwner"] is True
    assert config["lastEventId"] == collab.last_event_id
    assert b'src="/static/chorus/session.js"' in response.content


def test_non_member_gets_404_without_the_title(collab, outsider):
    response = logged_in(outsider).get(f"/sessions/{collab.pk}/")
    assert response.status_code == 404
    assert b"Planning" not in response.content


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_or_malformed_session_is_404(alice, bad_id):
    assert logged_in(alice).get(f"/sessions/{bad_id}/").status_code == 404


def test_viewer_page_has_no_composer(collab, carol):
    html = logged_in(carol).get(f"/sessions/{collab.pk}/").content.decode()
    assert 'id="composer"' not in html
    assert "Ask the assistant" not in html and "<textarea" not in html
    assert "You can read along" in html


def test_editor_page_has_the_composer_with_ask_the_assistant(collab, bob):
    html = logged_in(bob).get(f"/sessions/{collab.pk}/").content.decode()
    assert 'id="composer"' in html
    assert 'data-reply="true"' in html and "Ask the assistant" in html


def test_staff_may_read_any_session_without_composer(collab, staff_user):
    response = logged_in(staff_user).get(f"/sessions/{collab.pk}/")
    assert response.status_code == 200
    assert 'id="composer"' not in response.content.decode()
    assert page_config(response)["role"] is None


def test_session_page_escapes_the_title(alice):
    session = services.session_create(owner=alice, title=HOSTILE)
    html = logged_in(alice).get(f"/sessions/{session.pk}/").content.decode()
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_page_lists_running_regenerations_for_cancel(collab, alice, settings):
    from sessions_app.models import Regeneration, RegenerationStatus

    _message, regeneration = services.message_post(session=collab, author=alice, content="question", reply=True)
    Regeneration.objects.filter(pk=regeneration.pk).update(status=RegenerationStatus.RUNNING)
    config = page_config(logged_in(alice).get(f"/sessions/{collab.pk}/"))
    assert config["activeRegenerations"] == {str(regeneration.message_id): str(regeneration.pk)}


def test_presence_placeholders_are_on_the_page(collab, alice):
    html = logged_in(alice).get(f"/sessions/{collab.pk}/").content.decode()
    assert "data-presence-members" in html and "data-typing-line" in html
    assert 'id="connection-badge"' in html


def test_seed_demo_prints_where_to_go():
    out = StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "http://127.0.0.1:8000/" in text
    assert "alice" in text and "chorus-demo" in text
