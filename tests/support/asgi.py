"""Drive the real ASGI application in-process: a streaming HTTP client for SSE tests.

Channels' HttpCommunicator waits for a complete response, which a stream never gives;
this client hands out frames as they arrive and can disconnect like a browser would.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from tests.support.sse import EPHEMERAL_EVENTS, Frame, SSEParser, events_until


class ASGIStream:
    def __init__(
        self,
        app,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        query: dict | None = None,
        send_hook=None,
        ephemeral: bool = False,
    ) -> None:
        self.app = app
        self.ephemeral = ephemeral
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(query or {}).encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        self._incoming: asyncio.Queue = asyncio.Queue()
        self._frames: asyncio.Queue = asyncio.Queue()
        self._parser = SSEParser()
        self._send_hook = send_hook
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.finished = asyncio.Event()
        self.started = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> ASGIStream:
        await self._incoming.put({"type": "http.request", "body": b"", "more_body": False})
        self.task = asyncio.ensure_future(self.app(self.scope, self._receive, self._send))
        await asyncio.wait_for(self.started.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.disconnect()

    async def _receive(self):
        return await self._incoming.get()

    async def _send(self, message) -> None:
        if self._send_hook is not None:
            await self._send_hook(message)
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            self.started.set()
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.body += body
            for frame in self._parser.feed(body):
                self._frames.put_nowait(frame)
            if not message.get("more_body", False):
                self.finished.set()
                self._frames.put_nowait(None)
                await self._incoming.put({"type": "http.disconnect"})

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None once the response has ended."""
        return await asyncio.wait_for(self._frames.get(), timeout)

    async def next_event(self, timeout: float = 5.0) -> Frame | None:
        """The next frame that carries an event (skips keepalives and `retry:`, and the
        ephemeral signals unless the stream was opened with `ephemeral=True`)."""
        while True:
            frame = await self.next_frame(timeout)
            if frame is None:
                return None
            if frame.event is not None and (self.ephemeral or frame.event not in EPHEMERAL_EVENTS):
                return frame

    async def events_until(self, last_id: int, timeout: float = 10.0) -> list[Frame]:
        """Numbered events until one with id >= last_id arrives."""
        return await events_until(self.next_event, last_id, timeout)

    async def disconnect(self) -> None:
        if self.task is None:
            return
        await self._incoming.put({"type": "http.disconnect"})
        try:
            await asyncio.wait_for(self.task, 5)
        except asyncio.CancelledError:
            pass
        self.task = None
