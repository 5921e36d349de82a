"""The exceptions the client raises: one base class, one subclass per status a program
reacts to differently."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime


class ChorusError(Exception):
    """An API call failed. `status` is the HTTP status (None when no answer came), `detail`
    the API's `{"detail": …}` message (or the start of the body when it was not JSON)."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else detail)
        self.status = status
        self.detail = detail


class Unauthorized(ChorusError):
    """401: no credentials, a wrong, expired or revoked token; also a refused login (which
    DRF answers with 400: `status` says which)."""


class Forbidden(ChorusError):
    """403: a member without the role the request needs (a viewer writing)."""


class NotFound(ChorusError):
    """404: no such object, or a session the caller is not a member of."""


class RateLimited(ChorusError):
    """429: throttled. `retry_after` is the server's `Retry-After`, in seconds, if it sent one."""

    def __init__(self, detail: str, *, status: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(detail, status=status)
        self.retry_after = retry_after


class ConnectionFailed(ChorusError):
    """The server could not be reached or the connection broke (no HTTP status). From
    `follow()`: raised only once its `Backoff.max_attempts` are used up."""


class AccessRevoked(ChorusError):
    """`follow()` ends with this when the server ended the stream with `access_revoked`
    (the member was removed, the session deleted, the token revoked) and access could not
    be regained. `last_event_id` is the id of the last event yielded, to resume from."""

    def __init__(self, detail: str, *, session_id: str, last_event_id: int | None) -> None:
        super().__init__(detail)
        self.session_id = session_id
        self.last_event_id = last_event_id


_BY_STATUS: dict[int, type[ChorusError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound}


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """`Retry-After` in seconds: either delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def error_for(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> ChorusError:
    """The exception for an error answer: its class by status, its message from `detail`."""
    detail: str | None = None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        detail = parsed["detail"]
    if detail is None:
        detail = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    if status == 429:
        return RateLimited(detail, status=status, retry_after=parse_retry_after((headers or {}).get("retry-after")))
    return _BY_STATUS.get(status, ChorusError)(detail, status=status)
