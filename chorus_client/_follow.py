"""The stream follower's decisions, written once for the sync and the async client.

`FollowState` does no I/O: the drivers (`Client.follow`, `AsyncClient.follow`) connect,
read frames with httpx-sse and sleep; it says what to send, what to yield, and how long
to wait before the next connection.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from chorus_client._core import Core
from chorus_client.errors import AccessRevoked, ChorusError, ConnectionFailed, RateLimited, error_for
from chorus_client.events import Connected, ControlEvent, Event, control_event, stored_event

logger = logging.getLogger("chorus_client")


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long `follow()` waits before connecting again.

    - After a stream ended normally (server shutdown, `CHORUS_STREAM_MAX_SECONDS`, a slow
      reader dropped): the server's `retry:` (3 s from Chorus), or `initial` until the
      server has sent one.
    - After the n-th failure in a row (refused, reset, timed out, 5xx, 429): a delay
      `d = min(maximum, base * multiplier^(n-1))` where `base` is the server's `retry:` (or
      `initial`), plus a random jitter of up to `jitter * d`; at least a 429's
      `Retry-After`. So never sooner than the server asked (unless `maximum` is lower) and
      never longer than `maximum * (1 + jitter)`.
    - `max_attempts`: failures in a row after which `follow()` raises `ConnectionFailed`
      (None: it never gives up). A stream that opens resets the count.
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def delay(self, *, failures: int, base: float, rng: random.Random) -> float:
        if failures <= 0:
            return min(self.maximum, base)
        bounded = min(self.maximum, base * self.multiplier ** (failures - 1))
        return bounded + rng.uniform(0.0, self.jitter * bounded)


class Refusal(Enum):
    LOGIN = "log in, then connect at once"
    RETRY = "connect again after the backoff"


class FollowState:
    """One `follow()` call: the resume point, the ids already yielded, the wait."""

    def __init__(
        self, *, session_id: str, last_event_id: int | None, backoff: Backoff, rng: random.Random | None = None
    ) -> None:
        if last_event_id is not None and last_event_id < 0:
            raise ValueError("last_event_id must be a non-negative integer")
        self.session_id = session_id
        self.path = f"/sse/sessions/{quote(session_id, safe='')}/"
        self.backoff = backoff
        self.rng = rng or random.Random()
        # Sent as Last-Event-ID. None until known: then the first stream has only live
        # events, and its `connection` frame says from where to resume.
        self.resume: int | None = last_event_id
        self.last_yielded = last_event_id if last_event_id is not None else 0
        self.retry: float | None = None  # the server's `retry:`, in seconds
        self.failures = 0
        self.wait = 0.0
        self.interrupted = False  # the current stream must be left now (access_revoked)
        self._logged_in = False  # a login since the last stream opened (a second 401 is final)
        self._revoked = False  # access_revoked seen: the next refusal is final
        self._revoked_again = False  # access_revoked and no event since: another one is final

    @property
    def base(self) -> float:
        return self.retry if self.retry is not None else self.backoff.initial

    def take_wait(self) -> float:
        wait, self.wait = self.wait, 0.0
        return wait

    def headers(self, core: Core) -> dict[str, str]:
        headers = core.headers()
        if self.resume is not None:
            headers["Last-Event-ID"] = str(self.resume)
        return headers

    # --- the connection's life ----------------------------------------------------------
    def opened(self) -> None:
        self.failures = 0
        self._logged_in = False
        self._revoked = False
        self.interrupted = False

    def feed(self, sse: ServerSentEvent) -> list[Event | ControlEvent]:
        """What to yield for one frame: stored events not yielded before, control frames."""
        if sse.retry is not None:
            self.retry = sse.retry / 1000
        event = stored_event(sse.event, sse.id, sse.data)
        if event is not None:
            if event.id <= self.last_yielded:
                return []  # a replay overlapping what was yielded: never twice
            self.last_yielded = self.resume = event.id
            self._revoked_again = False
            return [event]
        if sse.event == "message" and not sse.data:
            return []  # a block with only `retry:` (or only an `id:`)
        if sse.event == "access_revoked":
            # Connect once more: with a fresh login (a token that expired or was revoked)
            # access may come back; if the server refuses, follow() raises AccessRevoked.
            if self._revoked_again:
                # The server let us in and revoked again at once: no point in a loop.
                raise self._access_revoked("the server revoked access again")
            logger.info("stream of session %s: access_revoked; checking access once more", self.session_id)
            self._revoked = self._revoked_again = True
            self.interrupted = True
            return []
        control = control_event(sse.event, sse.data)
        if isinstance(control, Connected) and self.resume is None:
            self.resume = control.last_event_id
        return [control]

    def ended(self) -> None:
        """The stream ended without an error."""
        if self.interrupted:
            self.interrupted = False
            self.wait = 0.0
            return
        self.wait = self.backoff.delay(failures=0, base=self.base, rng=self.rng)
        logger.info("stream of session %s ended; reconnecting in %.2f s", self.session_id, self.wait)

    def failed(self, error: Exception, *, at_least: float | None = None) -> None:
        """A connection failed (or a login for it): wait longer, or give up."""
        self.failures += 1
        self.interrupted = False
        if self.backoff.max_attempts is not None and self.failures >= self.backoff.max_attempts:
            raise ConnectionFailed(
                f"gave up following session {self.session_id} after {self.failures} failed attempts: {error}"
            ) from error
        wait = self.backoff.delay(failures=self.failures, base=self.base, rng=self.rng)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        if at_least is not None:
            wait = max(wait, at_least)
        self.wait = wait
        logger.warning(
            "stream of session %s failed (%s); attempt %d, reconnecting in %.2f s",
            self.session_id,
            error,
            self.failures,
            wait,
        )

    def refused(self, *, status: int, body: bytes, headers: Mapping[str, str], core: Core) -> Refusal:
        """The server answered the stream request with an error status: log in, try again
        later, or raise (401 after a fresh login, 403, 404, 400: retrying cannot help)."""
        error = error_for(status, body, headers)
        if status == 401 and core.can_login and not self._logged_in:
            self._logged_in = True
            return Refusal.LOGIN
        if self._revoked and status in (401, 403, 404):
            raise self._access_revoked(error.detail) from error
        if status in (408, 429) or status >= 500:
            self.failed(error)
            return Refusal.RETRY
        raise error

    def _access_revoked(self, reason: str) -> AccessRevoked:
        return AccessRevoked(
            f"access to session {self.session_id} was revoked ({reason})",
            session_id=self.session_id,
            last_event_id=self.resume,
        )

    def login_failed(self, error: ChorusError) -> None:
        """A login for the stream failed: retry later if the server was unreachable or
        throttled us; otherwise (a wrong password: Unauthorized) there is no point."""
        if isinstance(error, ConnectionFailed | RateLimited) or (error.status or 0) >= 500:
            self.failed(error)
            return
        raise error


# Transport failures of a stream (refused, reset, read timeout, not text/event-stream).
STREAM_ERRORS = (httpx.TransportError,)
