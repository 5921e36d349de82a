"""Unread counts on the session list (webapp.selectors.unread_messages): messages from
others after my read position, counted in the list's own queries."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from sessions_app import presence, services
from sessions_app.models import Role
from webapp import selectors

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def unread_on_page(response) -> dict[str, int]:
    html = response.content.decode()
    return {sid: int(n) for sid, n in re.findall(r'data-session-id="([0-9a-f-]+)" data-unread="(\d+)"', html)}


def unread_of(user, session) -> int:
    return selectors.sessions_by_activity(user=user).get(pk=session.pk).unread


def test_unread_counts_messages_from_others_after_my_position(collab, alice, bob):
    services.message_create(session=collab, author=alice, content="mine, never unread")
    services.message_create(session=collab, author=bob, content="one")
    services.message_create(session=collab, author=bob, content="two")
    assert unread_of(alice, collab) == 2
    assert unread_of(bob, collab) == 1  # alice's message; not his own two
    collab.refresh_from_db()
    presence.read_position_update(session=collab, user=alice, last_event_id=collab.last_event_id - 1)
    assert unread_of(alice, collab) == 1
    presence.read_position_update(session=collab, user=alice, last_event_id=collab.last_event_id)
    assert unread_of(alice, collab) == 0


def test_unread_ignores_edits_and_membership_events_but_counts_a_former_members_message(collab, alice, bob):
    message = services.message_create(session=collab, author=alice, content="hello")
    collab.refresh_from_db()
    presence.read_position_update(session=collab, user=alice, last_event_id=collab.last_event_id)
    services.message_edit(message=message, content="hello again")
    services.member_remove(session=collab, username="carol")
    assert unread_of(alice, collab) == 0
    services.message_create(session=collab, author=None, content="from someone gone")
    assert unread_of(alice, collab) == 1


def test_list_shows_the_unread_badge(collab, alice, bob):
    quiet = services.session_create(owner=alice, title="Quiet")
    services.message_create(session=collab, author=bob, content="are you there?")
    response = logged_in(alice).get("/")
    assert unread_on_page(response) == {str(collab.pk): 1, str(quiet.pk): 0}
    html = response.content.decode()
    assert html.count('class="unread-badge"') == 1
    assert "1 unread message" in html


def test_unread_counts_add_no_query_per_session(alice, bob, make_user):
    client = logged_in(alice)
    services.session_create(owner=alice, title="one")
    with CaptureQueriesContext(connection) as few:
        client.get("/")
    for index in range(6):
        session = services.session_create(owner=alice, title=f"more {index}")
        services.member_add(session=session, username="bob", role=Role.EDITOR)
        for n in range(index + 1):
            services.message_create(session=session, author=bob, content=f"from bob {n}")
    with CaptureQueriesContext(connection) as many:
        response = client.get("/")
    assert sorted(unread_on_page(response).values()) == [0, 1, 2, 3, 4, 5, 6]
    assert len(many.captured_queries) == len(few.captured_queries)
