"""Reads for the members' pages: a bounded number of queries whatever the data size."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from realtime.events import EventType
from realtime.models import Event
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, CollabSession, Membership, Regeneration


def sessions_by_activity(*, user: AbstractBaseUser) -> QuerySet[CollabSession]:
    """The user's sessions, most recently active first, each annotated with
    `last_activity` (the time of its newest event, or its creation when its log is
    empty or pruned), with `unread` (see `unread_messages`), and with its memberships
    and their users prefetched: two queries for any number of sessions and members."""
    newest_event_time = Event.objects.filter(session_id=OuterRef("pk"), seq=OuterRef("last_event_id")).values(
        "created_at"
    )[:1]
    return (
        CollabSession.objects.filter(memberships__user=user)
        .annotate(last_activity=Coalesce(Subquery(newest_event_time), "created_at"))
        .annotate(unread=unread_messages(user=user))
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


def unread_messages(*, user: AbstractBaseUser) -> Coalesce:
    """An annotation for sessions: how many messages from others arrived after `user`'s
    read position — stored `message_created` events past it whose author is not the user,
    and the assistant's finished answers (`message_regenerated`). Counted from the event log
    in one correlated subquery (the (session, seq) index bounds each to the unread range), so
    it adds no query per session; events already pruned are not counted."""
    my_position = Membership.objects.filter(session_id=OuterRef(OuterRef("pk")), user=user).values(
        "last_read_event_id"
    )[:1]
    # A null author (a former member's message) is someone else's too; NOT (NULL = x) is not true.
    not_mine = ~Q(data__author=user.get_username()) | Q(data__author=None)
    from_others = Q(type=EventType.MESSAGE_CREATED.value) & not_mine
    counted = (
        Event.objects.filter(session_id=OuterRef("pk"), seq__gt=Subquery(my_position))
        .filter(from_others | Q(type=EventType.MESSAGE_REGENERATED.value))
        .order_by()
        .values("session_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)
