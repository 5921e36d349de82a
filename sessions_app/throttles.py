"""Throttles on starting regenerations (CONTRACT §3): per user and per session; on
posting messages, per user; and on signing in (CONTRACT §2): per client address and per
username (at the end).

Rates come from settings (CHORUS_REGENERATION_RATE_USER / _SESSION, DRF rate strings) at
each request, and counters live in the default cache (Redis when REDIS_URL is set, so the
limits hold across processes). They are checked after validation and the access check, so
bad or unauthorised requests never use up anyone's quota, and a non-member can never
exhaust a session's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCacheClient
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


class RegenerationUserThrottle(SimpleRateThrottle):
    scope = "regeneration_user"

    def get_rate(self) -> str | None:
        return settings.CHORUS_REGENERATION_RATE_USER or None

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class RegenerationSessionThrottle(SimpleRateThrottle):
    scope = "regeneration_session"

    def __init__(self, session_id: UUID) -> None:
        super().__init__()
        self.session_id = session_id

    def get_rate(self) -> str | None:
        return settings.CHORUS_REGENERATION_RATE_SESSION or None

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": UUID(str(self.session_id)).hex}


def regeneration_throttle_check(*, request: Request, view, session_id: UUID) -> None:
    """Count one regeneration start for the user and the session, or raise Throttled
    (429 with Retry-After) with the longest wait of the limits exceeded."""
    waits = []
    for throttle in (RegenerationUserThrottle(), RegenerationSessionThrottle(session_id)):
        if not throttle.allow_request(request, view):
            waits.append(throttle.wait())
    if waits:
        known = [w for w in waits if w is not None]
        raise Throttled(wait=max(known) if known else None)


class SettingRateThrottle(SimpleRateThrottle):
    """A per-user limit whose rate (a DRF rate string, empty for none) is read from the
    setting `setting_name` at each request, so deployments and tests can change it."""

    def __init__(self, scope: str, setting_name: str) -> None:
        self.scope = scope
        self.setting_name = setting_name
        super().__init__()

    def get_rate(self) -> str | None:
        return getattr(settings, self.setting_name) or None

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


# --- message posts ----------------------------------------------------------------------------
class MessageUserThrottle(BaseThrottle):
    """Message posts per user (CHORUS_MESSAGE_RATE_USER, a DRF rate string; empty: no
    limit), counted in fixed windows in the default cache, so across processes with Redis.

    Not SimpleRateThrottle: its sliding log is a list of every request's time in the
    window, read and written back whole on each request (at 100 posts/s, a 6000-entry
    list per post). Here each window is one shared counter, and each process adds its
    posts to it in batches of 1% of the limit (`_tally`): a post far from the limit costs
    no round trip (one costs ~0.14 ms of CPU, a tenth of a post), and within a batch of
    the limit every post is counted at once, so the limit holds to within one batch per
    process. A client may burst up to twice the rate across a window boundary."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        rate = settings.CHORUS_MESSAGE_RATE_USER
        if not rate:
            return True
        limit, duration = SimpleRateThrottle.parse_rate(self, rate)
        now = time.time()
        window = int(now // duration)
        if _tally.add(request.user.pk, window=(window, duration), limit=limit) <= limit:
            return True
        self._wait = (window + 1) * duration - now
        return False

    def wait(self) -> float | None:
        return self._wait


class _Tally:
    """This process's posts per user in the current window, added to the shared counter
    in batches. Request threads share it: a lock guards it (and the round trip of a
    batch, which is rare)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: tuple[int, int] | None = None
        self._users: dict[int, tuple[int, int]] = {}  # user -> (shared total seen, posts not yet added)

    def add(self, user_id: int, *, window: tuple[int, int], limit: int) -> int:
        """Count one post; return the user's count in the window as far as known."""
        batch = max(1, limit // 100)
        with self._lock:
            if window != self._window:
                self._window, self._users = window, {}
            known, pending = self._users.get(user_id, (0, 0))
            pending += 1
            if pending < batch and known + pending + batch <= limit:
                self._users[user_id] = (known, pending)
                return known + pending
            key = f"throttle_message_user_{user_id}_{window[0]}"
            total = _count(key, delta=pending, timeout=window[1] + 1)
            self._users[user_id] = (total, 0)
            return total


_tally = _Tally()


def _count(key: str, *, delta: int, timeout: int) -> int:
    """Add `delta` to the counter `key` (created with `timeout`); return its new value."""
    backend = getattr(cache, "_cache", None)
    if isinstance(backend, RedisCacheClient):  # INCRBY and EXPIRE in one round trip
        full_key = cache.make_and_validate_key(key)
        pipeline = backend.get_client(full_key, write=True).pipeline(transaction=False)
        pipeline.incrby(full_key, delta)
        pipeline.expire(full_key, timeout)
        return int(pipeline.execute()[0])
    if cache.add(key, delta, timeout):
        return delta
    try:
        return cache.incr(key, delta)
    except ValueError:  # expired between the two calls
        cache.add(key, delta, timeout)
        return delta


def message_throttle_check(*, request: Request, view) -> None:
    """Count one message post of the user, or raise Throttled (429 with Retry-After)."""
    throttle = MessageUserThrottle()
    if not throttle.allow_request(request, view):
        raise Throttled(wait=throttle.wait())


# --- Signing in: obtaining a token and the login form (CONTRACT §2) ------------------------
class LoginAddressThrottle(SimpleRateThrottle):
    """Sign-in attempts per client address (REMOTE_ADDR, or X-Forwarded-For with DRF's
    NUM_PROXIES: settings.CHORUS_NUM_PROXIES)."""

    scope = "login_ip"

    def get_rate(self) -> str | None:
        return settings.CHORUS_LOGIN_RATE_IP or None

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(SimpleRateThrottle):
    """Sign-in attempts per username tried (existing or not, so that the answer does not
    tell which usernames exist), case-insensitively."""

    scope = "login_user"

    def __init__(self, username: str) -> None:
        super().__init__()
        self.username = username.strip().casefold()

    def get_rate(self) -> str | None:
        return settings.CHORUS_LOGIN_RATE_USER or None

    def get_cache_key(self, request, view) -> str | None:
        if not self.username:
            return None  # nothing to count: the attempt fails validation anyway
        # Hashed: a username is arbitrary text, a cache key must not be.
        ident = hashlib.sha256(self.username.encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": ident}


def login_throttle_check(*, request: HttpRequest, username: str) -> float | None:
    """Count one sign-in attempt for the client address and the username. None if it may
    go ahead, else the seconds to wait (the longest of the limits exceeded; 1 if unknown).
    Works on Django's request (the login form) as on DRF's."""
    waits = []
    for throttle in (LoginAddressThrottle(), LoginUsernameThrottle(username)):
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or 1.0)
    return max(waits) if waits else None
