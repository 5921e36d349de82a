"""An SSE client over real HTTP (httpx), for tests against server processes."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.sse import EPHEMERAL_EVENTS, Frame, SSEParser, events_until


class HttpStream:
    def __init__(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, *, ephemeral: bool = False
    ) -> None:
        self.client = client
        self.ephemeral = ephemeral  # also return presence, typing and read_position frames
        self.url = url
        self.headers = headers or {}
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self._frames: asyncio.Queue = asyncio.Queue()
        self._opened = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> HttpStream:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.wait_for(self._opened.wait(), 15)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _run(self) -> None:
        parser = SSEParser()
        try:
            async with self.client.stream("GET", self.url, headers=self.headers, timeout=None) as response:
                self.status = response.status_code
                self.response_headers = dict(response.headers)
                self._opened.set()
                async for chunk in response.aiter_raw():
                    for frame in parser.feed(chunk):
                        self._frames.put_nowait(frame)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self._opened.set()
            self._frames.put_nowait(None)

    async def next_event(self, timeout: float = 10.0) -> Frame | None:
        while True:
            frame = await asyncio.wait_for(self._frames.get(), timeout)
            if frame is None:
                return None
            if frame.event is not None and (self.ephemeral or frame.event not in EPHEMERAL_EVENTS):
                return frame

    async def events_until(self, last_id: int, timeout: float = 20.0) -> list[Frame]:
        """Numbered events until one with id >= last_id arrives."""
        return await events_until(self.next_event, last_id, timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
