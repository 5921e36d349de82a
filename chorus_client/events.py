"""What `follow()` yields: stored events (numbered) and control frames (unnumbered).

Stored events are the envelopes of CONTRACT §4. Control frames have no `id:` line, are not
stored and not replayed: `connection`, `history_truncated`, and whatever the server adds
later (`presence`, `typing`, …) — those arrive as plain `ControlEvent`s, never as errors.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event: `id` is the session's sequence number (gapless, from 1)."""

    id: int
    type: str
    session_id: str
    timestamp: dt.datetime
    data: dict[str, Any]

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Event:
        return cls(
            id=int(envelope["id"]),
            type=str(envelope["type"]),
            session_id=str(envelope["sessionId"]),
            timestamp=dt.datetime.fromisoformat(envelope["timestamp"]),
            data=envelope.get("data") or {},
        )


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """An unnumbered frame. `data` is its decoded JSON (the raw text if it was not JSON)."""

    type: str
    data: Any


@dataclass(frozen=True, slots=True)
class Connected(ControlEvent):
    """`connection`, first on every (re)connection: `last_event_id` is the session's newest
    id when the stream opened."""

    session_id: str
    user_id: Any
    last_event_id: int


@dataclass(frozen=True, slots=True)
class HistoryTruncated(ControlEvent):
    """Events after `requested` were pruned: the replay that follows starts at
    `oldest_available`, so the ids `requested + 1 … oldest_available - 1` will never come."""

    requested: int
    oldest_available: int


def control_event(name: str, text: str) -> ControlEvent:
    """The typed object for an unnumbered frame; unknown names become a plain ControlEvent."""
    try:
        data: Any = json.loads(text) if text else {}
    except ValueError:
        data = text
    if isinstance(data, dict):
        try:
            if name == "connection":
                return Connected(
                    type=name,
                    data=data,
                    session_id=str(data.get("sessionId", "")),
                    user_id=data.get("userId"),
                    last_event_id=int(data["lastEventId"]),
                )
            if name == "history_truncated":
                return HistoryTruncated(
                    type=name,
                    data=data,
                    requested=int(data["requested"]),
                    oldest_available=int(data["oldestAvailable"]),
                )
        except (KeyError, TypeError, ValueError):
            pass  # a shape this client does not know: still surfaced, untyped
    return ControlEvent(type=name, data=data)


def stored_event(name: str, frame_id: str, text: str) -> Event | None:
    """The Event for a frame whose `id:` is `frame_id`, or None if it is not a stored event.

    httpx-sse (like a browser) carries the last `id:` over to the frames that follow, so an
    unnumbered frame after event 7 still reports id "7". A frame is a stored event only if
    its data is an envelope whose own id and type match the frame's."""
    if not frame_id.isdigit():
        return None
    try:
        envelope = json.loads(text)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or envelope.get("id") != int(frame_id) or envelope.get("type") != name:
        return None
    try:
        return Event.from_envelope(envelope)
    except (KeyError, TypeError, ValueError):
        return None
