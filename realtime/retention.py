"""Retention of the event log. Pruning never touches ids: a session's `last_event_id`
stays, so new events continue the sequence and streams report `history_truncated`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from realtime.models import Event


@dataclass(frozen=True)
class PruneResult:
    by_age: int
    by_count: int


def events_prune(
    *, session_id: UUID | str | None = None, keep: int | None = None, ttl_seconds: int | None = None
) -> PruneResult:
    """Delete events older than the TTL and all but the newest `keep` of each session."""
    keep = settings.CHORUS_HISTORY_MAX_EVENTS if keep is None else keep
    ttl_seconds = settings.CHORUS_EVENT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    events = Event.objects.all() if session_id is None else Event.objects.filter(session_id=session_id)
    with transaction.atomic():
        cutoff = timezone.now() - dt.timedelta(seconds=ttl_seconds)
        by_age, _ = events.filter(created_at__lt=cutoff).delete()
        by_count = 0
        over = events.values("session_id").annotate(n=Count("id"), newest=Max("seq")).filter(n__gt=keep)
        for row in over:
            deleted, _ = Event.objects.filter(session_id=row["session_id"], seq__lte=row["newest"] - keep).delete()
            by_count += deleted
    return PruneResult(by_age=by_age, by_count=by_count)
