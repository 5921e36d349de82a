"""Rebuild a session's messages from its events (the same rules the web app follows)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chorus_client.events import Event


@dataclass
class Message:
    """A message as the conversation knows it. `status` is `complete`, `streaming` (the
    assistant is writing it), `failed` or `cancelled`. `gap` is true while text is known
    to be missing (progress arrived for an offset past the known content, e.g. after a
    pruned history); the final `message_regenerated` clears it."""

    id: str
    role: str
    author: str | None
    content: str
    status: str = "complete"
    original_message_id: str | None = None
    regeneration_id: str | None = None
    progress: int | None = None
    error: str | None = None
    gap: bool = False


@dataclass
class Conversation:
    """Messages in order, a title and members, kept current by `apply(event)`.

    Applying is idempotent: an event at or below `last_event_id` is ignored, and a
    `regeneration_progress` is placed by its `offset` (in code points, which is what
    Python strings count), so a delta seen twice, or one whose text a message loaded over
    REST already holds, changes nothing."""

    messages: dict[str, Message] = field(default_factory=dict)
    title: str | None = None
    members: dict[str, str] = field(default_factory=dict)
    last_event_id: int = 0

    @classmethod
    def from_messages(cls, messages: Iterable[dict[str, Any]], last_event_id: int | None = None) -> Conversation:
        """Start from the API's messages (`Client.messages()`; its `last_event_id` is used
        when none is given), then `apply` the events that follow."""
        conversation = cls(
            last_event_id=last_event_id if last_event_id is not None else getattr(messages, "last_event_id", 0)
        )
        for item in messages:
            conversation.messages[str(item["id"])] = Message(
                id=str(item["id"]),
                role=item.get("role", "user"),
                author=item.get("author"),
                content=item.get("content") or "",
                original_message_id=item.get("originalMessageId"),
            )
        return conversation

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages.values())

    def __len__(self) -> int:
        return len(self.messages)

    def get(self, message_id: str) -> Message | None:
        return self.messages.get(message_id)

    def apply(self, event: Event) -> Message | None:
        """Apply one stored event; returns the message it changed (None for other events,
        for deletions, and for events already applied)."""
        if event.id <= self.last_event_id:
            return None
        self.last_event_id = event.id
        data = event.data
        handler = getattr(self, f"_on_{event.type}", None)
        return handler(data) if handler is not None else None

    # --- one handler per event type ------------------------------------------------------
    def _message(self, data: dict[str, Any], *, role: str = "assistant") -> Message:
        message_id = str(data["messageId"])
        message = self.messages.get(message_id)
        if message is None:
            message = self.messages[message_id] = Message(
                id=message_id, role=data.get("role", role), author=data.get("author"), content=""
            )
        return message

    def _on_message_created(self, data: dict[str, Any]) -> Message:
        message = self._message(data, role="user")
        message.role, message.author, message.content = (
            data.get("role", message.role),
            data.get("author"),
            data["content"],
        )
        return message

    def _on_message_edited(self, data: dict[str, Any]) -> Message:
        return self._on_message_created(data)

    def _on_message_deleted(self, data: dict[str, Any]) -> None:
        for message_id in data.get("deletedMessageIds", []):
            self.messages.pop(str(message_id), None)

    def _on_message_regenerating(self, data: dict[str, Any]) -> Message:
        message = self._message(data)
        message.status, message.progress, message.error = "streaming", 0, None
        message.original_message_id = data.get("originalMessageId")
        message.regeneration_id = data.get("regenerationId")
        return message

    def _on_regeneration_progress(self, data: dict[str, Any]) -> Message:
        message = self._message(data)
        offset, delta = int(data["offset"]), data["delta"]
        content = message.content
        end = offset + len(delta)
        if content[offset:end] == delta:
            return message  # already there: a repeat, or text a REST load already held
        if offset > len(content):
            message.gap = True  # text before this delta is missing; message_regenerated will bring it
        else:
            message.content = content[:offset] + delta
        message.status = "streaming"
        message.progress = data.get("progress", message.progress)
        return message

    def _on_message_regenerated(self, data: dict[str, Any]) -> Message:
        message = self._message(data)
        message.content, message.status, message.progress, message.gap = data["content"], "complete", 100, False
        return message

    def _on_regeneration_error(self, data: dict[str, Any]) -> Message:
        message = self._message(data)
        message.status, message.error = "failed", data.get("error")
        return message

    def _on_regeneration_cancelled(self, data: dict[str, Any]) -> Message:
        message = self._message(data)
        message.status = "cancelled"
        return message

    def _on_session_updated(self, data: dict[str, Any]) -> None:
        self.title = data.get("title", self.title)

    def _on_member_joined(self, data: dict[str, Any]) -> None:
        self.members[data["username"]] = data.get("role", "")

    def _on_member_left(self, data: dict[str, Any]) -> None:
        self.members.pop(data["username"], None)
