"""ops.selectors: recent errors from several sources, and the per-minute series."""

from __future__ import annotations

import datetime as dt

import pytest
from django.apps import apps
from django.utils import timezone

from ops.selectors import ErrorItem, events_per_minute_series, recent_errors
from realtime.models import Event
from sessions_app import services

pytestmark = pytest.mark.django_db


def test_recent_errors_take_more_sources_newest_first_and_drop_repeats():
    now = timezone.now()

    def source_a(*, since, limit):
        return [ErrorItem(at=now - dt.timedelta(minutes=5), source="a", message="old", ref="x")]

    def source_b(*, since, limit):
        return [
            ErrorItem(at=now - dt.timedelta(minutes=1), source="b", message="same failure", ref="x"),
            ErrorItem(at=now, source="b", message="new"),
        ]

    items = recent_errors(since=now - dt.timedelta(hours=1), sources=[source_a, source_b])
    assert [(i.source, i.message) for i in items] == [("b", "new"), ("a", "old")]
    assert recent_errors(since=now, limit=1, sources=[source_a, source_b])[0].message == "new"


def test_the_configured_sources_include_the_completions_log_when_installed(settings):
    assert "ops.selectors.errors_failed_completions" in settings.CHORUS_OPS_ERROR_SOURCES
    if not apps.is_installed("completions"):
        pytest.skip("the completions app (POST /v1/chat/completions) is not installed in this tree")
    log = apps.get_model("completions", "GenerationLog")
    log.objects.create(model="chorus-local", status="failed", error="upstream timed out")
    [item] = recent_errors(since=timezone.now() - dt.timedelta(minutes=1))
    assert (item.source, item.message) == ("completion", "chorus-local: upstream timed out")


def test_the_series_counts_each_minute_and_caches_finished_ones(collab, bob, django_assert_max_num_queries):
    services.message_create(session=collab, author=bob, content="now")
    now = timezone.now()
    Event.objects.filter(session=collab, seq=1).update(created_at=now - dt.timedelta(minutes=30))
    series = events_per_minute_series(now=now)
    assert len(series) == 60
    assert series[-1].count == Event.objects.filter(session=collab).count() - 1
    assert series[-31].count == 1
    assert sum(m.count for m in series) == Event.objects.filter(session=collab).count()
    with django_assert_max_num_queries(1):  # finished minutes come from the cache
        assert events_per_minute_series(now=now) == series
