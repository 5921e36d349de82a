"""`Client` (sync) and `AsyncClient` (async): the same operations, the logic in
`chorus_client._core` and `chorus_client._follow`; these classes only do the I/O."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse, connect_sse

from chorus_client._core import Call, Core, EventPage, MessageList, Plan, url_for
from chorus_client._follow import STREAM_ERRORS, Backoff, FollowState, Refusal
from chorus_client.errors import ChorusError, ConnectionFailed
from chorus_client.events import ControlEvent, Event

T = TypeVar("T")

USER_AGENT = "chorus-client/0.1"


class _Base:
    """Construction and credentials, shared by both clients."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 10.0,
        read_timeout: float = 45.0,
        backoff: Backoff | None = None,
        transport: Any = None,
    ) -> None:
        """`base_url` is the server's root (`http://127.0.0.1:8000`). Give a `token`, or a
        `username` and `password` (the client then logs in on first use and again whenever
        the token expires or is refused), or both. `timeout` bounds connecting and every
        REST call; `read_timeout` is how long a stream may stay silent before `follow()`
        reconnects — keep it above the server's keepalive interval (15 s by default).
        `transport` is passed to httpx (tests use `httpx.MockTransport`)."""
        self.base_url = base_url
        self.backoff = backoff or Backoff()
        self._core = Core(token=token, username=username, password=password)
        self._timeout = httpx.Timeout(timeout)
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        self._transport = transport

    @property
    def token(self) -> str | None:
        """The token in use (after `login()`, the one it obtained)."""
        return self._core.token

    @property
    def expires_at(self) -> dt.datetime | None:
        """When the token from `login()` expires (None if unknown: older servers)."""
        return self._core.expires_at

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "timeout": self._timeout,
            "headers": {"User-Agent": USER_AGENT},
        }
        if self._transport is not None:
            options["transport"] = self._transport
        return options


def _connection_failed(call: Call, error: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(f"{call.method} {url_for(call)}: {type(error).__name__}: {error}")


class Client(_Base):
    """The synchronous client. Use it as a context manager, or call `close()`.

    Every method raises a `ChorusError` subclass on an error answer (`Unauthorized`,
    `Forbidden`, `NotFound`, `RateLimited`), or `ConnectionFailed` when the server cannot
    be reached. Objects are the API's JSON (camelCase dicts), events are `Event`s."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, token, username, password, **options)
        self._http = httpx.Client(**self._client_options())
        self._sleep = time.sleep

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> httpx.Response:
        headers = self._core.headers() if call.auth else {}
        try:
            return self._http.request(call.method, url_for(call), json=call.json, params=call.params, headers=headers)
        except httpx.TransportError as error:
            raise _connection_failed(call, error) from error

    def _run(self, plan: Plan[T]) -> T:
        try:
            call = next(plan)
            while True:
                call = plan.send(self._send(call))
        except StopIteration as done:
            return done.value

    # --- the API (CONTRACT §3) ------------------------------------------------------------
    def login(self) -> str:
        """Obtain a token with the username and password; returns it (also kept for later calls)."""
        return self._run(self._core.login())

    def logout(self) -> None:
        """Revoke the token on the server (`POST auth/logout/`) and forget it; with a
        username and password the next call logs in again."""
        return self._run(self._core.logout())

    def sessions(self) -> list[dict[str, Any]]:
        """The caller's sessions, every page."""
        return self._run(self._core.sessions())

    def create_session(self, title: str) -> dict[str, Any]:
        return self._run(self._core.create_session(title))

    def session(self, session_id: str) -> dict[str, Any]:
        return self._run(self._core.session(session_id))

    def add_member(self, session_id: str, username: str, role: str = "editor") -> dict[str, Any]:
        """Owner only: add a member with role `owner`, `editor` or `viewer`."""
        return self._run(self._core.add_member(session_id, username, role))

    def remove_member(self, session_id: str, username: str) -> None:
        """Owner only: remove a member; their open streams end with `access_revoked`."""
        return self._run(self._core.remove_member(session_id, username))

    def messages(self, session_id: str) -> MessageList:
        """Every message, in order (all pages); `.last_event_id` is where to follow from."""
        return self._run(self._core.messages(session_id))

    def post_message(self, session_id: str, content: str, reply: bool = False) -> dict[str, Any]:
        """Post a message; with `reply=True` the assistant answers (`regenerationId` in the result)."""
        return self._run(self._core.post_message(session_id, content, reply))

    def regenerate(self, session_id: str, message_id: str, query: str | None = None) -> dict[str, Any]:
        return self._run(self._core.regenerate(session_id, message_id, query))

    def regeneration(self, regeneration_id: str) -> dict[str, Any]:
        return self._run(self._core.regeneration(regeneration_id))

    def cancel(self, regeneration_id: str) -> dict[str, Any]:
        return self._run(self._core.cancel(regeneration_id))

    def events(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        """The polling fallback: stored events with id > `after`, at most `limit` (≤ 500)."""
        return self._run(self._core.events(session_id, after, limit))

    def stream_ticket(self, session_id: str) -> dict[str, Any]:
        return self._run(self._core.stream_ticket(session_id))

    # --- the stream (CONTRACT §5) ---------------------------------------------------------
    def follow(self, session_id: str, last_event_id: int | None = None) -> Iterator[Event | ControlEvent]:
        """Yield the session's events as they come, for ever, reconnecting by itself.

        With `last_event_id=N`, every event after N comes first (replay), then the live
        ones; with None, only live events. Stored events come as `Event`s, each id once and
        in order (ids at or below the last one yielded are dropped). Unnumbered frames come
        as `ControlEvent`s: `Connected` on every (re)connection, `HistoryTruncated` when
        events after the resume point were pruned, and a plain `ControlEvent` for any other
        (`presence`, `typing`, …). Keepalives are not yielded.

        Reconnects with `Last-Event-ID` after the stream ends (waiting the server's
        `retry:`) or fails (exponential backoff with jitter, see `Backoff`), including a
        stream silent for longer than `read_timeout`. On a 401 it logs in again when it has
        a username and password. Raises `AccessRevoked` when the server ends the stream
        with `access_revoked` and then refuses to reopen it; `Unauthorized`, `Forbidden`,
        `NotFound` when the stream is refused from the start; `ConnectionFailed` after
        `Backoff.max_attempts` failures in a row."""
        state = FollowState(session_id=str(session_id), last_event_id=last_event_id, backoff=self.backoff)
        while True:
            wait = state.take_wait()
            if wait > 0:
                self._sleep(wait)
            if self._core.needs_login():
                try:
                    self.login()
                except ChorusError as error:
                    state.login_failed(error)
                    continue
            try:
                with connect_sse(
                    self._http, "GET", state.path, headers=state.headers(self._core), timeout=self._stream_timeout
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        response.read()
                        refusal = state.refused(
                            status=response.status_code,
                            body=response.content,
                            headers=response.headers,
                            core=self._core,
                        )
                        if refusal is Refusal.LOGIN:
                            try:
                                self.login()
                            except ChorusError as error:
                                state.login_failed(error)
                        continue
                    state.opened()
                    for sse in source.iter_sse():
                        yield from state.feed(sse)
                        if state.interrupted:
                            break
                state.ended()
            except STREAM_ERRORS as error:
                state.failed(error)


class AsyncClient(_Base):
    """The asyncio client: the same methods as `Client`, as coroutines; `follow()` is an
    async generator (close it with `contextlib.aclosing` when leaving a loop early)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, token, username, password, **options)
        self._http = httpx.AsyncClient(**self._client_options())
        self._sleep = asyncio.sleep

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        headers = self._core.headers() if call.auth else {}
        try:
            return await self._http.request(
                call.method, url_for(call), json=call.json, params=call.params, headers=headers
            )
        except httpx.TransportError as error:
            raise _connection_failed(call, error) from error

    async def _run(self, plan: Plan[T]) -> T:
        try:
            call = next(plan)
            while True:
                call = plan.send(await self._send(call))
        except StopIteration as done:
            return done.value

    async def login(self) -> str:
        return await self._run(self._core.login())

    async def logout(self) -> None:
        return await self._run(self._core.logout())

    async def sessions(self) -> list[dict[str, Any]]:
        return await self._run(self._core.sessions())

    async def create_session(self, title: str) -> dict[str, Any]:
        return await self._run(self._core.create_session(title))

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self._run(self._core.session(session_id))

    async def add_member(self, session_id: str, username: str, role: str = "editor") -> dict[str, Any]:
        return await self._run(self._core.add_member(session_id, username, role))

    async def remove_member(self, session_id: str, username: str) -> None:
        return await self._run(self._core.remove_member(session_id, username))

    async def messages(self, session_id: str) -> MessageList:
        return await self._run(self._core.messages(session_id))

    async def post_message(self, session_id: str, content: str, reply: bool = False) -> dict[str, Any]:
        return await self._run(self._core.post_message(session_id, content, reply))

    async def regenerate(self, session_id: str, message_id: str, query: str | None = None) -> dict[str, Any]:
        return await self._run(self._core.regenerate(session_id, message_id, query))

    async def regeneration(self, regeneration_id: str) -> dict[str, Any]:
        return await self._run(self._core.regeneration(regeneration_id))

    async def cancel(self, regeneration_id: str) -> dict[str, Any]:
        return await self._run(self._core.cancel(regeneration_id))

    async def events(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        return await self._run(self._core.events(session_id, after, limit))

    async def stream_ticket(self, session_id: str) -> dict[str, Any]:
        return await self._run(self._core.stream_ticket(session_id))

    async def follow(self, session_id: str, last_event_id: int | None = None) -> AsyncIterator[Event | ControlEvent]:
        """`Client.follow`, as an async generator (same contract)."""
        state = FollowState(session_id=str(session_id), last_event_id=last_event_id, backoff=self.backoff)
        while True:
            wait = state.take_wait()
            if wait > 0:
                await self._sleep(wait)
            if self._core.needs_login():
                try:
                    await self.login()
                except ChorusError as error:
                    state.login_failed(error)
                    continue
            try:
                async with aconnect_sse(
                    self._http, "GET", state.path, headers=state.headers(self._core), timeout=self._stream_timeout
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        await response.aread()
                        refusal = state.refused(
                            status=response.status_code,
                            body=response.content,
                            headers=response.headers,
                            core=self._core,
                        )
                        if refusal is Refusal.LOGIN:
                            try:
                                await self.login()
                            except ChorusError as error:
                                state.login_failed(error)
                        continue
                    state.opened()
                    async with aclosing(source.aiter_sse()) as frames:
                        async for sse in frames:
                            for item in state.feed(sse):
                                yield item
                            if state.interrupted:
                                break
                state.ended()
            except STREAM_ERRORS as error:
                state.failed(error)
