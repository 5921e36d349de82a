"""A scripted Chorus behind `httpx.MockTransport`, for tests about the client's parsing and
decisions (not the server's): each stream request takes the next scripted answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from chorus_client import AsyncClient, Backoff, Client

SESSION = "5b0e3c2a-7a39-4f5e-9a43-1f2f0c1d7e11"
RETRY = b"retry: 3000\n\n"
KEEPALIVE = b": keepalive\n\n"


def stored(seq: int, type_: str = "message_created", **data: Any) -> bytes:
    envelope = {"id": seq, "type": type_, "sessionId": SESSION, "timestamp": "2026-11-21T10:00:00.123Z", "data": data}
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, type_.encode(), json.dumps(envelope).encode())


def control(name: str, **data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), json.dumps(data).encode())


def connection(newest: int) -> bytes:
    return control("connection", status="connected", sessionId=SESSION, userId=1, lastEventId=newest)


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body for both clients: the chunks, then `error` raised (a broken
    connection, a read timeout) or a clean end."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks, self.error = chunks, error

    def __iter__(self):
        yield from self.chunks
        if self.error is not None:
            raise self.error

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


def stream(*chunks: bytes, error: Exception | None = None) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(list(chunks), error))


def refuse(status: int, detail: str = "refused", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


class StopFollowing(Exception):
    """Raised by the script when it has nothing more to answer: ends the test's loop."""


class FakeServer:
    """Answers `POST /api/v1/auth/token/` with a new token each time (or `login_answers`),
    stream requests with `script` in order, and records every request."""

    def __init__(self, script: list[httpx.Response | Callable | Exception], *, password: str = "pw") -> None:
        self.script = list(script)
        self.password = password
        self.requests: list[httpx.Request] = []
        self.logins = 0
        self.login_answers: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v1/auth/token/":
            if self.login_answers:
                return self.login_answers.pop(0)
            body = json.loads(request.content)
            if body.get("password") != self.password:
                return refuse(400, "Unable to log in with provided credentials.")
            self.logins += 1
            return httpx.Response(200, json={"token": f"t{self.logins}", "expiresAt": "2099-01-01T00:00:00Z"})
        if not self.script:
            raise StopFollowing()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step(request) if callable(step) else step

    @property
    def stream_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.startswith("/sse/")]


def follow(
    flavor: str,
    server: FakeServer,
    *,
    last_event_id: int | None = None,
    backoff: Backoff | None = None,
    **credentials: Any,
) -> tuple[list[Any], list[float], BaseException | None]:
    """Run `follow()` with the sync or the async client until the script runs out (or it
    raises): (what it yielded, the waits it asked for, the exception that ended it)."""
    options = {"transport": httpx.MockTransport(server), "backoff": backoff or Backoff(initial=0.1)}
    credentials = credentials or {"token": "t0"}
    items: list[Any] = []
    sleeps: list[float] = []
    if flavor == "sync":
        with Client("http://chorus.test", **credentials, **options) as client:
            client._sleep = sleeps.append
            try:
                for item in client.follow(SESSION, last_event_id=last_event_id):
                    items.append(item)
            except (StopFollowing, Exception) as error:
                return items, sleeps, error
        return items, sleeps, None

    async def run() -> BaseException | None:
        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        async with AsyncClient("http://chorus.test", **credentials, **options) as client:
            client._sleep = sleep
            try:
                async for item in client.follow(SESSION, last_event_id=last_event_id):
                    items.append(item)
            except Exception as error:
                return error
        return None

    error = asyncio.run(run())
    return items, sleeps, error
