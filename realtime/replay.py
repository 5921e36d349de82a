"""Reads of the event log: what streams replay and the polling fallback returns."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Min

from realtime.events import envelope
from realtime.models import Event
from realtime.sql import cached_sql, column, db_value, fetch_one, table


@dataclass(frozen=True, slots=True)
class LogPosition:
    newest: int  # the session's newest event id (0 before the first event)
    oldest: int  # the oldest id still stored (newest + 1 when nothing is stored)


@cached_sql
def _newest_sql() -> str:
    model = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    pk = column(model, model._meta.pk.name)
    return f"SELECT {column(model, 'last_event_id')} FROM {table(model)} WHERE {pk} = %s"


def log_position(*, session_id: UUID | str) -> LogPosition:
    """Raises LookupError if the session does not exist."""
    model = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    row = fetch_one(_newest_sql(), [db_value(model, model._meta.pk.name, UUID(str(session_id)))])
    if row is None:
        raise LookupError(f"session {session_id} does not exist")
    newest = row[0]
    oldest = Event.objects.filter(session_id=session_id).aggregate(m=Min("seq"))["m"]
    return LogPosition(newest=newest, oldest=oldest if oldest is not None else newest + 1)


def newest_event_ids(*, session_ids: list[str]) -> dict[str, int]:
    """{session id: newest event id} for the given sessions, in one query per 500."""
    model = apps.get_model(settings.CHORUS_EVENT_SOURCE_MODEL)
    found: dict[str, int] = {}
    for start in range(0, len(session_ids), 500):
        chunk = session_ids[start : start + 500]
        for pk, newest in model.objects.filter(pk__in=chunk).values_list("pk", "last_event_id"):
            found[str(pk)] = newest
    return found


def events_after(*, session_id: UUID | str, after: int, limit: int, up_to: int | None = None) -> list[Event]:
    """Stored events with id > `after` (and <= `up_to`), oldest first, at most `limit`."""
    qs = Event.objects.filter(session_id=session_id, seq__gt=after)
    if up_to is not None:
        qs = qs.filter(seq__lte=up_to)
    return list(qs.order_by("seq")[:limit])


def event_envelope(event: Event) -> dict:
    return envelope(
        seq=event.seq,
        type=event.type,
        session_id=str(event.session_id),
        created_at=event.created_at,
        data=event.data,
    )


def replay_rows(
    *, session_id: UUID | str, after: int, limit: int, up_to: int | None = None
) -> list[tuple[int, str, str]]:
    """Like `events_after`, as (id, type, envelope JSON) rows ready to frame. Hand-written:
    every reconnecting stream and every gap fill runs it (realtime.sql says why)."""
    params = [db_value(Event, "session", UUID(str(session_id))), after]
    if up_to is not None:
        params.append(up_to)
    with connection.cursor() as cursor:
        cursor.execute(_replay_sql(up_to is not None), [*params, limit])
        return cursor.fetchall()


@cached_sql
def _replay_sql(bounded: bool) -> str:
    seq = column(Event, "seq")
    where = f"{column(Event, 'session')} = %s AND {seq} > %s" + (f" AND {seq} <= %s" if bounded else "")
    return (
        f"SELECT {seq}, {column(Event, 'type')}, {column(Event, 'envelope')} FROM {table(Event)}"
        f" WHERE {where} ORDER BY {seq} LIMIT %s"
    )
