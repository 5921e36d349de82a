"""GET /api/v1/ops/stats/ (CONTRACT §6): staff only, cluster-wide from live workers."""

from __future__ import annotations

import pytest

from realtime.models import Event
from sessions_app import services

pytestmark = pytest.mark.django_db


def test_anonymous_is_401_and_non_staff_403(api, alice):
    assert api().get("/api/v1/ops/stats/").status_code == 401
    response = api(alice).get("/api/v1/ops/stats/")
    assert response.status_code == 403
    assert "detail" in response.json()


def test_the_stats_add_up_the_live_workers_of_the_registry(api, staff_user, collab, alice, make_worker, settings):
    settings.CHORUS_WORKER_STALE_SECONDS = 20
    other = services.session_create(owner=alice, title="other")
    make_worker(4601, sessions={collab.pk: (2, {"alice": 2}), other.pk: (1, {"alice": 1})}, rss=101.5)
    make_worker(4602, host="node-b", sessions={collab.pk: (3, {"bob": 2, "carol": 1})})
    make_worker(4603, host="node-c", sessions={collab.pk: (7, {"bob": 7})}, age=120)  # gone: not counted
    response = api(staff_user).get("/api/v1/ops/stats/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"sessions", "subscribers", "workers", "sessionStats", "eventsPerMinute", "regenerations"}
    assert body["sessions"] == 2
    assert body["subscribers"] == 6
    workers = sorted(body["workers"], key=lambda w: w["pid"])
    assert [set(w) for w in workers] == [{"id", "pid", "host", "connections", "rssMb", "lastSeen"}] * 2
    assert [(w["pid"], w["host"], w["connections"], w["rssMb"]) for w in workers] == [
        (4601, "node-a", 3, 101.5),
        (4602, "node-b", 3, 80.5),
    ]
    assert workers[0]["lastSeen"].endswith("Z")
    collab_events = Event.objects.filter(session=collab).count()
    assert body["sessionStats"] == {
        str(collab.pk): {"subscribers": 5, "historySize": collab_events, "lastEventId": collab_events},
        str(other.pk): {"subscribers": 1, "historySize": 1, "lastEventId": 1},
    }
    assert body["eventsPerMinute"] == Event.objects.count()
    assert body["regenerations"] == {"running": 0, "queued": 0}


def test_with_no_worker_the_stats_are_empty_not_an_error(api, staff_user):
    body = api(staff_user).get("/api/v1/ops/stats/").json()
    assert (body["sessions"], body["subscribers"], body["workers"], body["sessionStats"]) == (0, 0, [], {})


def test_the_openapi_schema_documents_the_stats(api, staff_user):
    schema = api(staff_user).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/ops/stats/"]["get"]
    assert {"200", "401", "403"} <= set(operation["responses"])
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(component["properties"]) == {
        "sessions",
        "subscribers",
        "workers",
        "sessionStats",
        "eventsPerMinute",
        "regenerations",
    }
