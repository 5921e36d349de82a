"""A small incremental SSE parser shared by the tests (and the benchmark's light client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# Unnumbered signals of CONTRACT §7. The tests' clients skip them unless asked
# (`ephemeral=True`), so tests about stored events read only those and `connection` & co.
EPHEMERAL_EVENTS = frozenset({"presence", "presence_joined", "presence_left", "typing", "read_position"})


@dataclass
class Frame:
    event: str | None = None
    id: int | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self):
        return json.loads(self.data)


class SSEParser:
    """Feed bytes, get complete frames (blank-line terminated). Comment-only blocks and
    `retry:`-only blocks come out as frames too, so tests can see keepalives."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames = []
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            frames.append(self._parse(block.decode("utf-8")))
        return frames

    @staticmethod
    def _parse(block: str) -> Frame:
        frame = Frame()
        data_lines = []
        for line in block.split("\n"):
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                frame.event = value
            elif name == "id":
                frame.id = int(value)
            elif name == "data":
                data_lines.append(value)
            elif name == "retry":
                frame.retry = int(value)
        frame.data = "\n".join(data_lines)
        return frame


async def events_until(
    next_event: Callable[[float], Awaitable[Frame | None]], last_id: int, timeout: float
) -> list[Frame]:
    """Numbered events from `next_event` until one with id >= last_id arrives; fails if the
    stream ends first or the whole wait exceeds `timeout`."""
    found: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await next_event(timeout)
            assert frame is not None, f"stream ended before id {last_id}; got ids {[f.id for f in found]}"
            if frame.id is not None:
                found.append(frame)
                if frame.id >= last_id:
                    return found
