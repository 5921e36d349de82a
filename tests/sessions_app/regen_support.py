"""Helpers for the regeneration tests: in-process REST calls on the test's event loop,
stream collection, and fake providers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from channels.db import database_sync_to_async

from sessions_app.providers import ProviderError, ThoughtPlan, Turn
from sessions_app.regenerations import runner
from tests.conftest import token_for
from tests.support.asgi import ASGIStream


async def auth(user) -> dict[str, str]:
    return {"Authorization": f"Token {await database_sync_to_async(token_for)(user)}"}


async def call(app, method: str, path: str, user=None, *, body=None, raw: bytes | None = None) -> httpx.Response:
    """A REST call through the ASGI app on this loop, so regenerations run here too."""
    headers = await auth(user) if user is not None else {}
    headers["Content-Type"] = "application/json"
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await asyncio.wait_for(client.request(method, path, content=content, headers=headers), 10)


def stream_of(app, session, headers: dict[str, str]) -> ASGIStream:
    return ASGIStream(app, f"/sse/sessions/{session.pk}/", headers=headers)


async def events_until(stream: ASGIStream, types: set[str], *, timeout: float = 10.0) -> list:
    """Numbered event frames until (and including) one whose type is in `types`."""
    found = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await stream.next_event(timeout)
            assert frame is not None, f"stream ended early after {[f.event for f in found]}"
            if frame.id is None:
                continue
            found.append(frame)
            if frame.event in types:
                return found


def reassemble(frames, message_id: str) -> str:
    """The content a client builds from `regeneration_progress` deltas, checking offsets."""
    content = ""
    for frame in frames:
        if frame.event == "regeneration_progress" and frame.json["data"]["messageId"] == message_id:
            data = frame.json["data"]
            assert data["offset"] == len(content), (data["offset"], len(content))
            content += data["delta"]
    return content


class ScriptedProvider:
    """A provider that yields the given chunks (waiting on `gate` before each, if set)
    and then raises `fail_with`, if set."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, chunks: Sequence[str], *, fail_with: BaseException | None = None, gate=None, think=False):
        self.chunks = list(chunks)
        self.fail_with = fail_with
        self.gate = gate
        self.think = think
        self.closed = asyncio.Event()
        self.yielded = 0

    def expected_chars(self, conversation: Sequence[Turn]) -> int:
        return max(1, len("".join(self.chunks)))

    def thoughts(self, conversation: Sequence[Turn]) -> ThoughtPlan | None:
        if not self.think:
            return None
        return ThoughtPlan(thinking_about="it", steps=["one", "two"], conclusion="done")

    async def stream(self, conversation: Sequence[Turn]) -> AsyncIterator[str]:
        try:
            for chunk in self.chunks:
                if self.gate is not None:
                    await self.gate()
                else:
                    await asyncio.sleep(0)
                self.yielded += 1
                yield chunk
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            self.closed.set()


__all__ = ["ProviderError", "ScriptedProvider", "auth", "call", "events_until", "reassemble", "stream_of"]


@pytest.fixture(autouse=True)
async def stop_regeneration_worker():
    """Autouse in the modules that import it: each test's regeneration worker stops with
    the test's event loop."""
    yield
    worker = runner.current_worker()
    if worker is not None:
        await worker.stop()
