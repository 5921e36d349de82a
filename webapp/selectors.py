"""Reads for the members' pages: a bounded number of queries whatever the data size."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce

from realtime.models import Event
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, CollabSession, Membership, Regeneration


def sessions_by_activity(*, user: AbstractBaseUser) -> QuerySet[CollabSession]:
    """The user's sessions, most recently active first, each annotated with
    `last_activity` (the time of its newest event, or its creation when its log is
    empty or pruned) and with its memberships and their users prefetched: two queries
    for any number of sessions and members."""
    newest_event_time = Event.objects.filter(session_id=OuterRef("pk"), seq=OuterRef("last_event_id")).values(
        "created_at"
    )[:1]
    return (
        CollabSession.objects.filter(memberships__user=user)
        .annotate(last_activity=Coalesce(Subquery(newest_event_time), "created_at"))
        .prefetch_related(
            Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("created_at", "id"))
        )
        .order_by("-last_activity", "-created_at", "id")
    )


def regenerations_active(*, session: CollabSession) -> dict[str, str]:
    """{assistant message id: regeneration id} for the session's queued or running
    regenerations, so that a page loaded mid-answer can offer Cancel."""
    rows = Regeneration.objects.filter(session=session, status__in=ACTIVE_REGENERATION_STATUSES).values_list(
        "message_id", "pk"
    )
    return {str(message_id): str(regeneration_id) for message_id, regeneration_id in rows}
