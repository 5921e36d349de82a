"""The console's first screen: staff only, workers from the registry, live JSON, escaping."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from realtime.models import Event
from sessions_app import services
from sessions_app.models import Regeneration, RegenerationStatus
from sessions_app.regenerations import services as regeneration_services
from tests.support.html import elements, injected_images

pytestmark = pytest.mark.django_db

PAGES = ["/ops/", "/ops/sessions/", "/ops/audit/"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_signed_in_users_who_are_not_staff_get_403(client, alice, path):
    client.force_login(alice)
    assert client.get(path).status_code == 403


def test_session_pages_are_staff_only_too(client, alice, collab):
    client.force_login(alice)  # the session's owner, but not staff
    for path in (f"/ops/sessions/{collab.pk}/", f"/ops/sessions/{collab.pk}/clear/"):
        assert client.get(path).status_code == 403
    assert Client().get(f"/ops/sessions/{collab.pk}/").status_code == 302


def test_the_live_endpoint_answers_json_401_and_403(client, alice):
    assert client.get("/ops/live/").status_code == 401
    client.force_login(alice)
    response = client.get("/ops/live/")
    assert response.status_code == 403
    assert response.json() == {"detail": "Staff only."}


def test_the_first_screen_shows_the_workers_of_the_registry_and_marks_a_silent_one_gone(
    staff_client, collab, make_worker, settings
):
    settings.CHORUS_WORKER_STALE_SECONDS = 20
    make_worker(4101, sessions={collab.pk: (2, {"alice": 1, "bob": 1})}, rss=91.2)
    make_worker(4102, host="node-b", sessions={collab.pk: (1, {"carol": 1})})
    make_worker(4103, host="node-c", sessions={collab.pk: (5, {"mallory": 5})}, age=60)  # stopped heartbeating
    response = staff_client.get("/ops/")
    assert response.status_code == 200
    workers = {w["pid"]: w for w in response.context["live"]["workers"]}
    assert set(workers) == {4101, 4102, 4103}
    assert workers[4101]["state"] == "alive" and workers[4103]["state"] == "gone"
    assert workers[4101]["memory"] == "91.2 MB"
    html = response.content.decode()
    rows = {attrs["data-worker-id"]: attrs["class"] for attrs in elements(html, "tr") if "data-worker-id" in attrs}
    assert rows == {
        "node-a:4101:abc4101": "worker worker-alive",
        "node-b:4102:abc4102": "worker worker-alive",
        "node-c:4103:abc4103": "worker worker-gone",
    }
    # The gone process's streams no longer count: 3 subscribers, not 8.
    summary = response.context["live"]["summary"]
    assert (summary["sessions"], summary["subscribers"], summary["workers"]) == (1, 3, 2)
    assert response.context["live"]["sessions"][0]["users"] == "alice, bob, carol"


def test_a_process_silent_past_the_forget_time_is_dropped(staff_client, make_worker, settings):
    settings.CHORUS_WORKER_FORGET_SECONDS = 600
    make_worker(4201)
    make_worker(4202, age=601)
    pids = [w["pid"] for w in staff_client.get("/ops/live/").json()["workers"]]
    assert pids == [4201]


def test_the_live_endpoint_returns_what_the_page_renders(staff_client, collab, alice, make_worker):
    make_worker(4301, sessions={collab.pk: (1, {"alice": 1})})
    services.message_create(session=collab, author=alice, content="counted")
    live = staff_client.get("/ops/live/").json()
    assert set(live) == {"generatedAt", "summary", "workers", "chart", "sessions", "regenerations", "errors"}
    assert len(live["chart"]["bars"]) == 60
    events_now = Event.objects.filter(session=collab).count()
    assert live["chart"]["bars"][-1]["count"] == events_now
    assert live["summary"]["eventsPerMinute"] == events_now
    assert live["sessions"] == [
        {
            "id": str(collab.pk),
            "title": "Planning",
            "subscribers": 1,
            "historySize": events_now,
            "lastEventId": events_now,
            "users": "alice",
        }
    ]


def test_the_chart_is_inline_svg_with_one_bar_per_minute(staff_client, collab, alice):
    Event.objects.filter(session=collab).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    html = staff_client.get("/ops/").content.decode()
    svgs = elements(html, "svg")
    assert [s.get("id") for s in svgs] == ["chart"]
    rects = elements(html, "rect")
    assert len(rects) == 60
    assert sum(float(r["height"]) > 0 for r in rects) == 1  # the minute with events


def test_running_regenerations_are_listed_with_progress(staff_client, collab, alice, bob, monkeypatch):
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=collab, author=alice, content="q")
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    Regeneration.objects.filter(pk=regeneration.pk).update(status=RegenerationStatus.RUNNING, progress=42)
    response = staff_client.get("/ops/")
    bars = [b for b in elements(response.content.decode(), "div") if b.get("role") == "progressbar"]
    assert [b["aria-valuenow"] for b in bars] == ["42"]
    summary = response.context["live"]["summary"]
    assert (summary["running"], summary["queued"]) == (1, 0)
    [row] = response.context["live"]["regenerations"]
    assert (row["id"], row["progress"], row["requestedBy"]) == (str(regeneration.pk), 42, "bob")


def test_failed_regenerations_are_recent_errors_counted_once(staff_client, collab, alice, bob, monkeypatch):
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=collab, author=alice, content="q")
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    plan = regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="w")
    regeneration_services.regeneration_fail(plan=plan, error="The model is unavailable")
    live = staff_client.get("/ops/live/").json()
    assert live["summary"]["errorsLastHour"] == 1  # the row and its regeneration_error event: one failure
    [error] = live["errors"]
    assert (error["source"], error["message"], error["sessionId"]) == (
        "regeneration",
        "The model is unavailable",
        str(collab.pk),
    )


def test_the_page_loads_its_script_as_a_module_and_no_cdn(staff_client):
    html = staff_client.get("/ops/").content.decode()
    scripts = elements(html, "script")
    assert [s.get("type") for s in scripts] == ["module"]
    assert all(s["src"].startswith("/static/ops/") for s in scripts)
    assert "http://" not in html and "https://" not in html


def test_titles_and_errors_render_as_text_not_markup(staff_client, alice, make_worker, monkeypatch):
    hostile = "<img src=x onerror=alert(1)>"
    session = services.session_create(owner=alice, title=hostile)
    make_worker(4401, sessions={session.pk: (1, {"alice": 1})})
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)
    question = services.message_create(session=session, author=alice, content=hostile)
    regeneration = regeneration_services.regeneration_start(
        session=session, source_message=question, requested_by=alice
    )
    plan = regeneration_services.regeneration_claim(regeneration_id=regeneration.pk, worker="w")
    regeneration_services.regeneration_fail(plan=plan, error=hostile)
    for path in ("/ops/", "/ops/sessions/", f"/ops/sessions/{session.pk}/", f"/ops/sessions/{session.pk}/clear/"):
        html = staff_client.get(path).content.decode()
        assert injected_images(html) == [], path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path
