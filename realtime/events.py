"""Every event type, defined once: its name and one typed builder for its payload.

Payloads are camelCase dicts of JSON primitives (CONTRACT §4). Builders are the only way
callers make an `EventPayload`, so a grep for a type name finds every place that emits it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    MESSAGE_CREATED = "message_created"
    MESSAGE_EDITED = "message_edited"
    MESSAGE_DELETED = "message_deleted"
    MESSAGE_REGENERATING = "message_regenerating"
    REGENERATION_PROGRESS = "regeneration_progress"
    MESSAGE_REGENERATED = "message_regenerated"
    REGENERATION_ERROR = "regeneration_error"
    REGENERATION_CANCELLED = "regeneration_cancelled"
    THOUGHT_PROCESS_START = "thought_process_start"
    THOUGHT_PROCESS_STEP = "thought_process_step"
    THOUGHT_PROCESS_COMPLETE = "thought_process_complete"
    SESSION_UPDATED = "session_updated"
    SYSTEM = "system"


# Names reach the SSE `event:` field verbatim, so they must never carry a newline or colon.
EVENT_NAME_RE = re.compile(r"^[a-z_]+$")
assert all(EVENT_NAME_RE.match(t.value) for t in EventType)


@dataclass(frozen=True, slots=True)
class EventPayload:
    type: EventType
    data: dict[str, Any]


def member_joined(*, username: str, role: str) -> EventPayload:
    return EventPayload(EventType.MEMBER_JOINED, {"username": username, "role": role})


def member_left(*, username: str, role: str) -> EventPayload:
    return EventPayload(EventType.MEMBER_LEFT, {"username": username, "role": role})


def _message_data(message_id: str, role: str, author: str | None, content: str) -> dict:
    return {"messageId": message_id, "role": role, "author": author, "content": content}


def message_created(*, message_id: str, role: str, author: str | None, content: str) -> EventPayload:
    return EventPayload(EventType.MESSAGE_CREATED, _message_data(message_id, role, author, content))


def message_edited(*, message_id: str, role: str, author: str | None, content: str) -> EventPayload:
    return EventPayload(EventType.MESSAGE_EDITED, _message_data(message_id, role, author, content))


def message_deleted(*, deleted_message_ids: list[str]) -> EventPayload:
    return EventPayload(EventType.MESSAGE_DELETED, {"deletedMessageIds": list(deleted_message_ids)})


def message_regenerating(
    *,
    message_id: str,
    original_message_id: str | None,
    task_id: str,
    regeneration_id: str,
    user_query: str | None,
) -> EventPayload:
    return EventPayload(
        EventType.MESSAGE_REGENERATING,
        {
            "messageId": message_id,
            "originalMessageId": original_message_id,
            "taskId": task_id,
            "regenerationId": regeneration_id,
            "userQuery": user_query,
        },
    )


def regeneration_progress(*, message_id: str, task_id: str, progress: int, offset: int, delta: str) -> EventPayload:
    return EventPayload(
        EventType.REGENERATION_PROGRESS,
        {"messageId": message_id, "taskId": task_id, "progress": progress, "offset": offset, "delta": delta},
    )


def message_regenerated(*, message_id: str, task_id: str, content: str) -> EventPayload:
    return EventPayload(EventType.MESSAGE_REGENERATED, {"messageId": message_id, "taskId": task_id, "content": content})


def regeneration_error(*, message_id: str, task_id: str, error: str) -> EventPayload:
    return EventPayload(EventType.REGENERATION_ERROR, {"messageId": message_id, "taskId": task_id, "error": error})


def regeneration_cancelled(*, message_id: str, task_id: str) -> EventPayload:
    return EventPayload(EventType.REGENERATION_CANCELLED, {"messageId": message_id, "taskId": task_id})


def thought_process_start(*, message_id: str, task_id: str, thinking_about: str) -> EventPayload:
    return EventPayload(
        EventType.THOUGHT_PROCESS_START,
        {"messageId": message_id, "taskId": task_id, "thinkingAbout": thinking_about},
    )


def thought_process_step(*, message_id: str, task_id: str, step: int, reasoning: str) -> EventPayload:
    return EventPayload(
        EventType.THOUGHT_PROCESS_STEP,
        {"messageId": message_id, "taskId": task_id, "step": step, "reasoning": reasoning},
    )


def thought_process_complete(*, message_id: str, task_id: str, conclusion: str) -> EventPayload:
    return EventPayload(
        EventType.THOUGHT_PROCESS_COMPLETE,
        {"messageId": message_id, "taskId": task_id, "conclusion": conclusion},
    )


def session_updated(*, title: str) -> EventPayload:
    return EventPayload(EventType.SESSION_UPDATED, {"title": title})


def system(*, message: str) -> EventPayload:
    return EventPayload(EventType.SYSTEM, {"message": message})


def iso_timestamp(moment: dt.datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, as in CONTRACT §4."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def envelope(*, seq: int, type: str, session_id: str, created_at: dt.datetime, data: dict) -> dict:
    return {
        "id": seq,
        "type": type,
        "sessionId": session_id,
        "timestamp": iso_timestamp(created_at),
        "data": data,
    }


def envelope_json(envelope_dict: dict) -> str:
    # Compact and without raw newlines (json escapes them), so it fits one `data:` line.
    return json.dumps(envelope_dict, ensure_ascii=False, separators=(",", ":"))
