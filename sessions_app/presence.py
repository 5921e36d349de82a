"""Presence, typing and read positions (CONTRACT §7): the signals that say who is here.

Typing and read-position notices travel as unnumbered stream frames
(`realtime.publish.ephemeral_send`): they are never stored in the event log, and a typing
notice writes nothing to the database at all. Who is online is read from the worker
registry, which every process keeps current (realtime.workers, realtime.presence).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.functions import Greatest

from realtime.publish import ephemeral_send
from realtime.workers import cluster_session_loads
from sessions_app.models import CollabSession, Membership


class NotAMember(Exception):
    """Only members have a read position (staff may read a session without being one)."""


@dataclass(frozen=True, slots=True)
class OnlineUser:
    username: str
    streams: int
    since: dt.datetime


def presence_for_session(*, session_id: UUID | str) -> list[OnlineUser]:
    """Who has a stream open to the session on any live process, with how many streams
    and since when (the earliest of their open streams), by username."""
    load = cluster_session_loads().get(str(session_id))
    if load is None:
        return []
    now = dt.datetime.now(tz=dt.UTC)
    return [
        OnlineUser(
            username=username,
            streams=count,
            since=dt.datetime.fromtimestamp(load.since[username], tz=dt.UTC) if username in load.since else now,
        )
        for username, count in sorted(load.users.items())
        if count > 0
    ]


def typing_signal(*, session: CollabSession, user: AbstractBaseUser, typing: bool) -> None:
    """Tell the other members' streams that `user` is (or stopped) typing. Clients treat a
    `typing: true` as stopped after `expiresIn` seconds unless it is renewed. No database
    write: this is called on every few keystrokes."""
    data: dict = {"username": user.get_username(), "typing": typing}
    if typing:
        data["expiresIn"] = settings.CHORUS_TYPING_EXPIRES_SECONDS
    ephemeral_send(session_id=session.pk, event="typing", data=data, exclude_username=user.get_username())


def read_position_update(*, session: CollabSession, user: AbstractBaseUser, last_event_id: int) -> int:
    """Move the member's read position forward to `last_event_id`, clamped to the session's
    newest id; it never moves backwards. Returns the stored position. When it moved, the
    other members' streams get `read_position` after commit. Raises NotAMember."""
    with transaction.atomic():
        newest = CollabSession.objects.filter(pk=session.pk).values_list("last_event_id", flat=True).get()
        target = min(last_event_id, newest)
        memberships = Membership.objects.filter(session=session, user=user)
        moved = memberships.filter(last_read_event_id__lt=target).update(
            last_read_event_id=Greatest("last_read_event_id", target)
        )
        position = memberships.values_list("last_read_event_id", flat=True).first()
        if position is None:
            raise NotAMember()
        if moved:
            data = {"username": user.get_username(), "lastEventId": position}
            transaction.on_commit(
                lambda: ephemeral_send(
                    session_id=session.pk, event="read_position", data=data, exclude_username=data["username"]
                )
            )
    return position
