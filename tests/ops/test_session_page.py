"""A session's page in the console: members, regenerations, the event log (paginated,
filtered by type) and the sessions list with search."""

from __future__ import annotations

import pytest

from sessions_app import services
from sessions_app.models import CollabSession

pytestmark = pytest.mark.django_db


def test_staff_see_every_session_with_members_and_roles(staff_client, collab, make_worker):
    make_worker(4501, sessions={collab.pk: (2, {"bob": 2})})
    response = staff_client.get(f"/ops/sessions/{collab.pk}/")
    assert response.status_code == 200
    assert [(m.user.username, m.role, streams) for m, streams in response.context["members"]] == [
        ("alice", "owner", 0),
        ("bob", "editor", 2),
        ("carol", "viewer", 0),
    ]
    assert response.context["load"].streams == 2


def test_an_unknown_session_is_404(staff_client):
    assert staff_client.get("/ops/sessions/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert staff_client.get("/ops/sessions/not-a-uuid/").status_code == 404


def test_the_event_log_is_paginated_newest_first(staff_client, collab, bob):
    for i in range(60):
        services.message_create(session=collab, author=bob, content=f"m{i}")
    newest = CollabSession.objects.get(pk=collab.pk).last_event_id
    first = staff_client.get(f"/ops/sessions/{collab.pk}/")
    seqs = [e.seq for e in first.context["events"]]
    assert seqs == list(range(newest, newest - 50, -1))
    second = staff_client.get(f"/ops/sessions/{collab.pk}/", {"page": 2})
    assert [e.seq for e in second.context["events"]] == list(range(newest - 50, 0, -1))
    assert 'rel="next"' in first.content.decode() and 'rel="prev"' in second.content.decode()
    assert '"messageId": "' in first.content.decode().replace("&quot;", '"')  # data shown as JSON


def test_the_event_log_filters_by_type_and_keeps_the_filter_across_pages(staff_client, collab, bob):
    for i in range(55):
        services.message_create(session=collab, author=bob, content=f"m{i}")
    services.session_update(session=collab, title="Renamed")
    only = staff_client.get(f"/ops/sessions/{collab.pk}/", {"type": "session_updated"})
    assert [e.type for e in only.context["events"]] == ["session_updated"]
    created = staff_client.get(f"/ops/sessions/{collab.pk}/", {"type": "message_created"})
    assert created.context["events"].paginator.count == 55
    assert "type=message_created&amp;page=2" in created.content.decode()
    unknown = staff_client.get(f"/ops/sessions/{collab.pk}/", {"type": "nonsense"})
    assert unknown.context["event_type"] == ""  # an unknown type shows everything


def test_the_sessions_list_searches_titles_usernames_and_ids(staff_client, collab, alice, outsider):
    other = services.session_create(owner=outsider, title="Quarterly numbers")
    found = staff_client.get("/ops/sessions/", {"q": "quarterly"})
    assert [s.pk for s, _ in found.context["rows"]] == [other.pk]
    by_member = staff_client.get("/ops/sessions/", {"q": "carol"})
    assert [s.pk for s, _ in by_member.context["rows"]] == [collab.pk]
    by_id = staff_client.get("/ops/sessions/", {"q": str(collab.pk)})
    assert [s.pk for s, _ in by_id.context["rows"]] == [collab.pk]
    everything = staff_client.get("/ops/sessions/")
    assert {s.pk for s, _ in everything.context["rows"]} == {collab.pk, other.pk}
    assert dict((s.pk, s.member_count) for s, _ in everything.context["rows"]) == {collab.pk: 3, other.pk: 1}


def test_the_sessions_list_costs_a_fixed_number_of_queries(staff_client, alice, django_assert_max_num_queries):
    for i in range(40):
        services.session_create(owner=alice, title=f"s{i}")
    with django_assert_max_num_queries(8):
        response = staff_client.get("/ops/sessions/")
    assert len(response.context["rows"]) == 40
