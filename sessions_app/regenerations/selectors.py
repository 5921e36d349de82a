"""Reads about regenerations: access (CONTRACT §2) and the conversation to answer."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q

from realtime.events import EventType
from realtime.models import Event
from sessions_app.models import ACTIVE_REGENERATION_STATUSES, Message, MessageRole, Regeneration, RegenerationStatus
from sessions_app.providers import Turn
from sessions_app.selectors import SessionNotFound, session_role

# The most recent messages a provider sees; older ones are left out.
CONVERSATION_MAX_MESSAGES = 50


class RegenerationNotFound(SessionNotFound):
    """No such regeneration, or the user may not know that it exists (404)."""


def regeneration_get_for_user(
    *, regeneration_id: str | UUID, user: AbstractBaseUser
) -> tuple[Regeneration, str | None]:
    """The regeneration and the user's role in its session (None for staff who are not
    members). Raises RegenerationNotFound for malformed ids, unknown ids and non-members."""
    try:
        regeneration_uuid = UUID(str(regeneration_id))
    except ValueError as exc:
        raise RegenerationNotFound(str(regeneration_id)) from exc
    regeneration = Regeneration.objects.select_related("message", "session").filter(pk=regeneration_uuid).first()
    if regeneration is None:
        raise RegenerationNotFound(str(regeneration_uuid))
    role = session_role(session_id=regeneration.session_id, user=user)
    if role is None and not user.is_staff:
        raise RegenerationNotFound(str(regeneration_uuid))
    if regeneration.status == RegenerationStatus.RUNNING:
        progress = regeneration_progress_so_far(regeneration_id=regeneration.pk, session_id=regeneration.session_id)
        if progress is not None:
            regeneration.progress = max(regeneration.progress, progress)
    return regeneration, role


def regeneration_writing(*, message: Message) -> Regeneration | None:
    """The queued or running regeneration that is writing `message`, if any."""
    return Regeneration.objects.filter(message=message, status__in=ACTIVE_REGENERATION_STATUSES).first()


def regeneration_conversation(*, regeneration: Regeneration) -> list[Turn]:
    """What the provider answers: the session's visible messages up to the source message
    (a regenerated assistant message itself is left out, a user message is included),
    without messages still being written, then the optional user query."""
    source = regeneration.source_message
    if source.role == MessageRole.ASSISTANT:
        before = Q(created_at__lt=source.created_at) | Q(created_at=source.created_at, id__lt=source.id)
    else:
        before = Q(created_at__lt=source.created_at) | Q(created_at=source.created_at, id__lte=source.id)
    messages = (
        Message.objects.filter(before, session_id=regeneration.session_id, deleted_at__isnull=True)
        .exclude(content="")
        .exclude(pk=regeneration.message_id)
        .exclude(regeneration__status__in=ACTIVE_REGENERATION_STATUSES)
        .select_related("author")
        .order_by("-created_at", "-id")[:CONVERSATION_MAX_MESSAGES]
    )
    turns = [
        Turn(role=m.role, content=m.content, author=m.author.get_username() if m.author_id else None)
        for m in reversed(list(messages))
    ]
    if regeneration.user_query:
        requester = regeneration.requested_by.get_username() if regeneration.requested_by_id else None
        turns.append(Turn(role="user", content=regeneration.user_query, author=requester))
    return turns


def regeneration_content_so_far(
    *, regeneration_id: UUID | str, session_id: UUID | str, checkpoint: str | None = None
) -> str:
    """The text a queued or running regeneration has written so far: its last checkpoint
    (the whole text so far, stored in its row at least every time the text doubled:
    services.checkpoint_due), then its stored `regeneration_progress` deltas after it,
    placed at their offsets. Retention may prune early deltas; the checkpoint holds what
    they said. `checkpoint`: the row's `content`, if the caller read it already."""
    if checkpoint is None:
        checkpoint = Regeneration.objects.filter(pk=regeneration_id).values_list("content", flat=True).first() or ""
    length = len(checkpoint)
    rows = (
        Event.objects.filter(
            session_id=session_id,
            type=EventType.REGENERATION_PROGRESS,
            data__taskId=str(regeneration_id),
            data__offset__gte=length,
        )
        .order_by("seq")
        .values_list("data__offset", "data__delta")
    )
    parts: list[str] = [checkpoint]
    for offset, delta in rows:
        if offset < length:  # never written twice; skip what is already there
            delta = delta[length - offset :]
        parts.append(delta)
        length += len(delta)
    return "".join(parts)


def regeneration_progress_so_far(*, regeneration_id: UUID | str, session_id: UUID | str) -> int | None:
    """The progress of a running regeneration's newest `regeneration_progress` (its row
    gets it only with the lease renewal); None if it has none."""
    return (
        Event.objects.filter(
            session_id=session_id, type=EventType.REGENERATION_PROGRESS, data__taskId=str(regeneration_id)
        )
        .order_by("-seq")
        .values_list("data__progress", flat=True)
        .first()
    )


def contents_so_far(messages: list[Message]) -> None:
    """Give the assistant messages of `messages` that a regeneration is still writing
    their content so far (see regeneration_content_so_far); one query, and none unless
    the list holds an empty assistant message."""
    candidates = {m.pk: m for m in messages if m.role == MessageRole.ASSISTANT and not m.content}
    if not candidates:
        return
    active = Regeneration.objects.filter(message_id__in=list(candidates), status__in=ACTIVE_REGENERATION_STATUSES)
    for regeneration_id, session_id, message_id, checkpoint in active.values_list(
        "pk", "session_id", "message_id", "content"
    ):
        candidates[message_id].content = regeneration_content_so_far(
            regeneration_id=regeneration_id, session_id=session_id, checkpoint=checkpoint
        )


def regeneration_counts() -> dict[str, int]:
    """How many regenerations are in each status, cluster-wide (ops stats, metrics)."""
    counts = {status: 0 for status in RegenerationStatus.values}
    for row in Regeneration.objects.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    return counts
