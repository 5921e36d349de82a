"""Message posts are throttled per user (CHORUS_MESSAGE_RATE_USER): 429 with Retry-After."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from sessions_app.models import CollabSession, Message

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _fresh_counters(monkeypatch):
    from sessions_app import throttles

    monkeypatch.setattr(throttles, "_tally", throttles._Tally())  # earlier tests' posts, not yet added
    cache.clear()
    yield
    cache.clear()


def post(client, session, content="hi", **extra):
    return client.post(f"/api/v1/sessions/{session.pk}/messages/", {"content": content, **extra}, format="json")


def test_posts_beyond_the_rate_get_429_with_retry_after_and_store_nothing(api, collab, bob, alice, settings):
    settings.CHORUS_MESSAGE_RATE_USER = "3/minute"
    editor = api(bob)
    assert [post(editor, collab, f"m{i}").status_code for i in range(3)] == [201, 201, 201]
    before = CollabSession.objects.get(pk=collab.pk).last_event_id
    refused = post(editor, collab, "one too many")
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert "detail" in refused.json()
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert CollabSession.objects.get(pk=collab.pk).last_event_id == before
    assert not Message.objects.filter(content="one too many").exists()
    assert post(api(alice), collab, "someone else").status_code == 201, "the limit is per user"


def test_refused_posts_do_not_use_up_the_quota(api, collab, bob, carol, settings):
    settings.CHORUS_MESSAGE_RATE_USER = "2/minute"
    editor = api(bob)
    for _ in range(3):
        assert post(editor, collab, "").status_code == 400
    assert post(api(carol), collab, "viewer").status_code == 403
    assert [post(editor, collab, f"m{i}").status_code for i in range(2)] == [201, 201]


def test_an_empty_rate_means_no_limit(api, collab, bob, settings):
    settings.CHORUS_MESSAGE_RATE_USER = ""
    editor = api(bob)
    assert {post(editor, collab, f"m{i}").status_code for i in range(20)} == {201}


def test_the_default_rate_lets_the_benchmark_publisher_through():
    """bench/ posts up to 100 messages/s as one user (sessions-500x2): the default fits."""
    from config import settings as config

    limit, seconds = SimpleRateThrottle.parse_rate(None, config.CHORUS_MESSAGE_RATE_USER)
    assert limit / seconds >= 100


def test_processes_share_the_count_within_one_batch_of_the_limit(settings):
    """Two processes (two tallies) posting for one user against one shared counter: far
    from the limit they add in batches (1% of it), near it every post, so together they
    accept the limit, give or take one batch per other process."""
    from sessions_app.throttles import _Tally

    one, two = _Tally(), _Tally()
    window, limit = (12345, 60), 200  # batches of 2
    accepted = 0
    for i in range(300):
        tally = one if i % 3 else two
        if tally.add(7, window=window, limit=limit) <= limit:
            accepted += 1
    assert limit <= accepted <= limit + 1
    assert cache.get("throttle_message_user_7_12345") >= limit
