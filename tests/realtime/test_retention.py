"""Scheduled retention in-process: the scheduler prunes by itself; 0 disables it."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime.models import Event
from realtime.retention import RetentionScheduler, events_prune_exclusive
from sessions_app import services

pytestmark = [pytest.mark.django_db(transaction=True)]


def event_ids(session) -> list[int]:
    return list(Event.objects.filter(session=session).order_by("seq").values_list("seq", flat=True))


def test_exclusive_prune_applies_the_settings(collab, bob, settings):
    for n in range(6):
        services.message_create(session=collab, author=bob, content=f"m{n}")
    settings.CHORUS_HISTORY_MAX_EVENTS = 3
    result = events_prune_exclusive()
    assert result is not None and result.by_count > 0
    assert len(event_ids(collab)) == 3


async def test_the_scheduler_prunes_by_itself(collab, bob, settings):
    for n in range(6):
        await database_sync_to_async(services.message_create)(session=collab, author=bob, content=f"m{n}")
    settings.CHORUS_HISTORY_MAX_EVENTS = 2
    settings.CHORUS_PRUNE_INTERVAL_SECONDS = 0.05
    scheduler = RetentionScheduler(asyncio.get_running_loop())
    scheduler.start()
    try:
        async with asyncio.timeout(10):
            while len(await database_sync_to_async(event_ids)(collab)) > 2:
                await asyncio.sleep(0.05)
    finally:
        scheduler.stop()


async def test_an_interval_of_zero_disables_the_scheduler(settings):
    settings.CHORUS_PRUNE_INTERVAL_SECONDS = 0
    scheduler = RetentionScheduler(asyncio.get_running_loop())
    scheduler.start()
    assert scheduler.task is None
