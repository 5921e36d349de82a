"""/metrics shows every family from the start, with every known label value at 0, in a
process that has done nothing yet (a fresh interpreter, as a server right after start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from realtime.events import EventType
from realtime.metrics import STREAM_END_REASONS
from sessions_app import services
from sessions_app.models import RegenerationStatus
from sessions_app.regenerations import services as regeneration_services

ROOT = Path(__file__).resolve().parents[2]

FRESH_PROCESS = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.test import Client
response = Client(HTTP_HOST="localhost").get("/metrics")
assert response.status_code == 200, response.status_code
print(response.content.decode())
"""


def test_a_fresh_process_serves_every_family_with_zeros():
    env = {**os.environ, "DJANGO_DEBUG": "0"}
    env.pop("DATABASE_URL", None)  # /metrics needs no database
    env.pop("REDIS_URL", None)
    body = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    lines = set(body.splitlines())
    for status in RegenerationStatus.values:
        assert f'chorus_regenerations_total{{status="{status}"}} 0.0' in lines, status
    for reason in STREAM_END_REASONS:
        assert f'chorus_streams_ended_total{{reason="{reason}"}} 0.0' in lines, reason
    for event_type in EventType:
        assert f'chorus_events_published_total{{type="{event_type.value}"}} 0.0' in lines, event_type
    assert "chorus_open_streams 0.0" in lines
    assert "chorus_events_delivered_total 0.0" in lines
    assert 'chorus_publish_to_deliver_seconds_bucket{le="+Inf"} 0.0' in lines


@pytest.mark.django_db(transaction=True)  # the counters move when the change commits
def test_regenerations_are_counted_by_status_as_they_change(collab, alice, bob, monkeypatch):
    monkeypatch.setattr("sessions_app.regenerations.runner.regeneration_launch", lambda regeneration_id: None)

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("chorus_regenerations_total", {"status": status})

    before = {status: count(status) for status in RegenerationStatus.values}
    question = services.message_create(session=collab, author=alice, content="q")
    first = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    plan = regeneration_services.regeneration_claim(regeneration_id=first.pk, worker="w")
    regeneration_services.regeneration_complete(plan=plan, content="done")
    second = regeneration_services.regeneration_start(session=collab, source_message=question, requested_by=bob)
    regeneration_services.regeneration_cancel(regeneration=second)
    regeneration_services.regeneration_cancel(regeneration=second)  # a no-op: counted once
    moved = {status: count(status) - before[status] for status in RegenerationStatus.values}
    assert moved == {"queued": 2, "running": 1, "completed": 1, "failed": 0, "cancelled": 1}
