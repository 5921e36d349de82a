"""The client's logic, written once for the sync and the async client (sans-I/O).

Every API operation is a generator ("plan") that yields `Call`s and receives the
`httpx.Response` to each; its return value is the operation's result. `Client` runs plans
with `httpx.Client`, `AsyncClient` with `httpx.AsyncClient`: they only move bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from chorus_client.errors import ChorusError, Unauthorized, error_for
from chorus_client.events import Event

T = TypeVar("T")

API = "/api/v1/"
# Log in again this long before the token's `expiresAt`, so a request never races expiry.
RENEW_MARGIN = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    auth: bool = True


Plan = Generator[Call, httpx.Response, T]


class MessageList(list):
    """The session's messages (dicts as the API sends them), in order, across all pages;
    `last_event_id` is the session's newest event id read before them: follow the stream
    from there and nothing between the load and the stream is missed (CONTRACT §3)."""

    last_event_id: int = 0


@dataclass(frozen=True, slots=True)
class EventPage:
    """The polling fallback's answer: `last_id` is the session's newest id; `truncated`
    means events after the requested id were pruned, so `events` starts later."""

    events: list[Event]
    last_id: int
    truncated: bool


def _segment(value: object) -> str:
    return quote(str(value), safe="")


@dataclass
class Core:
    """Credentials and every operation's plan. One per client; not thread-safe."""

    token: str | None = None
    username: str | None = None
    password: str | None = None
    expires_at: dt.datetime | None = None
    _now: Any = field(default=lambda: dt.datetime.now(dt.UTC), repr=False)

    # --- credentials --------------------------------------------------------------------
    @property
    def can_login(self) -> bool:
        return bool(self.username) and self.password is not None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def needs_login(self) -> bool:
        """True when there is no token yet, or it expires soon, and the client can log in."""
        if not self.can_login:
            return False
        if not self.token:
            return True
        return self.expires_at is not None and self._now() >= self.expires_at - RENEW_MARGIN

    def login(self) -> Plan[str]:
        if not self.can_login:
            raise ChorusError("login() needs a username and a password")
        response = yield Call(
            "POST", "auth/token/", json={"username": self.username, "password": self.password}, auth=False
        )
        if response.status_code == 400:
            # DRF answers wrong credentials with 400; to a program it is a refused login.
            error = error_for(400, response.content, response.headers)
            raise Unauthorized(error.detail, status=400)
        body = decode(response)
        self.token = body["token"]
        self.expires_at = _expiry(body.get("expiresAt"))
        return self.token

    def logout(self) -> Plan[None]:
        """Revoke the token in use on the server (CONTRACT §2) and forget it."""
        if self.token:
            response = yield Call("POST", "auth/logout/")
            if response.status_code != 401:  # already expired or revoked: nothing left to do
                decode(response)
        self.token, self.expires_at = None, None

    def call(self, call: Call) -> Plan[Any]:
        """One authenticated request: logs in first when needed, and once more (then
        repeats the request) if the server answers 401 and the client has credentials."""
        if self.needs_login():
            yield from self.login()
        response = yield call
        if response.status_code == 401 and self.can_login:
            yield from self.login()
            response = yield call
        return decode(response)

    def pages(self, path: str) -> Plan[tuple[list[Any], dict[str, Any]]]:
        """Every result of a DRF-paginated list, following `next`; also the first page.

        Only the query of `next` is used, on the same path: behind a proxy the absolute
        URL DRF builds may name a host or scheme the client cannot reach."""
        results: list[Any] = []
        params: dict[str, Any] | None = None
        first: dict[str, Any] | None = None
        while True:
            page = yield from self.call(Call("GET", path, params=params))
            first = first or page
            results.extend(page["results"])
            if not page.get("next"):
                return results, first
            params = dict(parse_qsl(urlsplit(page["next"]).query))

    # --- operations ---------------------------------------------------------------------
    def sessions(self) -> Plan[list[dict[str, Any]]]:
        results, _ = yield from self.pages("sessions/")
        return results

    def create_session(self, title: str) -> Plan[dict[str, Any]]:
        return (yield from self.call(Call("POST", "sessions/", json={"title": title})))

    def session(self, session_id: str) -> Plan[dict[str, Any]]:
        return (yield from self.call(Call("GET", f"sessions/{_segment(session_id)}/")))

    def add_member(self, session_id: str, username: str, role: str) -> Plan[dict[str, Any]]:
        body = {"username": username, "role": role}
        return (yield from self.call(Call("POST", f"sessions/{_segment(session_id)}/members/", json=body)))

    def remove_member(self, session_id: str, username: str) -> Plan[None]:
        path = f"sessions/{_segment(session_id)}/members/{_segment(username)}/"
        return (yield from self.call(Call("DELETE", path)))

    def messages(self, session_id: str) -> Plan[MessageList]:
        results, first = yield from self.pages(f"sessions/{_segment(session_id)}/messages/")
        messages = MessageList(results)
        messages.last_event_id = int(first.get("lastEventId") or 0)
        return messages

    def post_message(self, session_id: str, content: str, reply: bool) -> Plan[dict[str, Any]]:
        body = {"content": content, "reply": reply}
        return (yield from self.call(Call("POST", f"sessions/{_segment(session_id)}/messages/", json=body)))

    def regenerate(self, session_id: str, message_id: str, query: str | None) -> Plan[dict[str, Any]]:
        body: dict[str, Any] = {"sessionId": str(session_id), "messageId": str(message_id)}
        if query is not None:
            body["query"] = query
        return (yield from self.call(Call("POST", "chat_actions/regenerate", json=body)))

    def regeneration(self, regeneration_id: str) -> Plan[dict[str, Any]]:
        return (yield from self.call(Call("GET", f"regenerations/{_segment(regeneration_id)}/")))

    def cancel(self, regeneration_id: str) -> Plan[dict[str, Any]]:
        return (yield from self.call(Call("POST", f"regenerations/{_segment(regeneration_id)}/cancel/")))

    def events(self, session_id: str, after: int, limit: int) -> Plan[EventPage]:
        params = {"after": after, "limit": limit}
        body = yield from self.call(Call("GET", f"sessions/{_segment(session_id)}/events/", params=params))
        return EventPage(
            events=[Event.from_envelope(e) for e in body["events"]],
            last_id=int(body["lastId"]),
            truncated=bool(body.get("truncated")),
        )

    def stream_ticket(self, session_id: str) -> Plan[dict[str, Any]]:
        return (yield from self.call(Call("POST", f"sessions/{_segment(session_id)}/stream-ticket/")))


def _expiry(value: Any) -> dt.datetime | None:
    """`expiresAt` as an aware datetime. Older servers send none (the token is then renewed
    only on a 401); one the client cannot read is treated the same way."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer (None for 204); a ChorusError subclass otherwise."""
    if response.is_success:
        return response.json() if response.status_code != 204 and response.content else None
    raise error_for(response.status_code, response.content, response.headers)


def url_for(call: Call) -> str:
    return API + call.path
