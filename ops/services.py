"""The operator's actions from the ops console, each written to the audit log.

Every action runs in one transaction with its audit entry: the entry exists if and only
if the action happened. Changes that have events go through the services that own them
(`regeneration_cancel`, `event_publish`), so streams see them like any other change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ops.models import AuditAction, AuditEntry
from realtime import events
from realtime.models import Event
from realtime.publish import event_publish
from realtime.retention import events_prune
from sessions_app.models import CollabSession, Regeneration
from sessions_app.regenerations.services import regeneration_cancel

# The longest system notice an operator may send (it is shown to every member).
NOTICE_MAX_CHARS = 2000


class OpsActionError(Exception):
    """The action cannot be done as asked (the console shows the message)."""


def audit_record(
    *,
    actor: AbstractBaseUser,
    action: AuditAction,
    target_type: str,
    target_id: str,
    session_id: UUID | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one audit entry; call inside the action's transaction."""
    return AuditEntry.objects.create(
        actor=actor,
        actor_username=actor.get_username(),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        session_id=session_id,
        details=details or {},
    )


def ops_regeneration_cancel(*, actor: AbstractBaseUser, regeneration: Regeneration) -> Regeneration:
    """Cancel a queued or running regeneration (its `regeneration_cancelled` event goes to
    the session; the process running it stops). Raises RegenerationConflict if it has
    already ended."""
    previous = regeneration.status
    with transaction.atomic():
        regeneration = regeneration_cancel(regeneration=regeneration)
        audit_record(
            actor=actor,
            action=AuditAction.REGENERATION_CANCEL,
            target_type="regeneration",
            target_id=str(regeneration.pk),
            session_id=regeneration.session_id,
            details={"previousStatus": previous, "progress": regeneration.progress},
        )
    return regeneration


@dataclass(frozen=True, slots=True)
class HistoryChange:
    deleted: int
    last_event_id: int


def ops_history_prune(*, actor: AbstractBaseUser, session: CollabSession, keep: int) -> HistoryChange:
    """Apply retention to one session now: delete its events older than
    CHORUS_EVENT_TTL_SECONDS and all but the newest `keep`. Ids are never reused."""
    if keep < 0:
        raise OpsActionError("Keep must be zero or more events.")
    with transaction.atomic():
        result = events_prune(session_id=session.pk, keep=keep)
        last_event_id = _last_event_id(session)
        audit_record(
            actor=actor,
            action=AuditAction.HISTORY_PRUNE,
            target_type="session",
            target_id=str(session.pk),
            session_id=session.pk,
            details={"keep": keep, "deletedByAge": result.by_age, "deletedByCount": result.by_count},
        )
    return HistoryChange(deleted=result.by_age + result.by_count, last_event_id=last_event_id)


def ops_history_clear(*, actor: AbstractBaseUser, session: CollabSession) -> HistoryChange:
    """Delete every stored event of the session. `last_event_id` stays, so new events
    continue the sequence and a stream resuming from an older id gets `history_truncated`.
    Holds the session row's lock (the one publishing takes) so that an event being
    published meanwhile is either deleted with the rest or kept whole, never half."""
    with transaction.atomic():
        last_event_id = (
            CollabSession.objects.select_for_update(no_key=True)
            .filter(pk=session.pk)
            .values_list("last_event_id", flat=True)
            .get()
        )
        deleted, _ = Event.objects.filter(session_id=session.pk, seq__lte=last_event_id).delete()
        audit_record(
            actor=actor,
            action=AuditAction.HISTORY_CLEAR,
            target_type="session",
            target_id=str(session.pk),
            session_id=session.pk,
            details={"deleted": deleted, "lastEventId": last_event_id},
        )
    return HistoryChange(deleted=deleted, last_event_id=last_event_id)


def ops_system_notice(*, actor: AbstractBaseUser, session: CollabSession, message: str) -> Event:
    """Publish a `system` event with `message` to the session (every member sees it)."""
    message = message.strip()
    if not message:
        raise OpsActionError("The notice is empty.")
    if len(message) > NOTICE_MAX_CHARS:
        raise OpsActionError(f"A notice has at most {NOTICE_MAX_CHARS} characters.")
    with transaction.atomic():
        event = event_publish(session_id=session.pk, payload=events.system(message=message))
        audit_record(
            actor=actor,
            action=AuditAction.SYSTEM_NOTICE,
            target_type="session",
            target_id=str(session.pk),
            session_id=session.pk,
            details={"message": message, "eventId": event.seq},
        )
    return event


def _last_event_id(session: CollabSession) -> int:
    return CollabSession.objects.filter(pk=session.pk).values_list("last_event_id", flat=True).get()
