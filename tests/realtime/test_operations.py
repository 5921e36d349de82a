"""Health, readiness, metrics and retention."""

import datetime as dt

import pytest
from django.core.management import call_command
from django.test import AsyncClient
from django.utils import timezone

from realtime.models import Event
from sessions_app import services


@pytest.mark.django_db(transaction=True)
async def test_healthz_and_readyz_answer_when_database_and_layer_do():
    client = AsyncClient()
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "channelLayer": "ok"}


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_503_when_the_channel_layer_does_not_answer(monkeypatch):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def broken_send(channel, message):
        raise ConnectionError("layer down")

    monkeypatch.setattr(layer, "send", broken_send)
    response = await AsyncClient().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["channelLayer"].startswith("error")


@pytest.mark.django_db(transaction=True)  # the counter moves after commit
def test_metrics_exposes_publish_counters(client, collab, bob):
    services.message_create(session=collab, author=bob, content="counted")
    body = client.get("/metrics").content.decode()
    assert 'chorus_events_published_total{type="message_created"}' in body
    assert "chorus_open_streams" in body
    assert "chorus_publish_to_deliver_seconds_bucket" in body


@pytest.mark.django_db
def test_prune_events_applies_count_cap_and_ttl_without_touching_ids(collab, bob, settings):
    for i in range(10):
        services.message_create(session=collab, author=bob, content=f"m{i}")
    collab.refresh_from_db()
    newest = collab.last_event_id
    Event.objects.filter(session=collab, seq=1).update(created_at=timezone.now() - dt.timedelta(days=30))
    settings.CHORUS_HISTORY_MAX_EVENTS = 4
    settings.CHORUS_EVENT_TTL_SECONDS = 7 * 24 * 3600
    call_command("prune_events")
    assert list(Event.objects.filter(session=collab).values_list("seq", flat=True)) == list(
        range(newest - 3, newest + 1)
    )
    collab.refresh_from_db()
    assert collab.last_event_id == newest
    following = services.message_create(session=collab, author=bob, content="after pruning")
    assert Event.objects.get(session=collab, data__messageId=str(following.pk)).seq == newest + 1
