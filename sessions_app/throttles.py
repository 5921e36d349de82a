"""Throttles on starting regenerations (CONTRACT §3): per user and per session; and on
signing in (CONTRACT §2): per client address and per username (at the end).

Rates come from settings (CHORUS_REGENERATION_RATE_USER / _SESSION, DRF rate strings) at
each request, and counters live in the default cache (Redis when REDIS_URL is set, so the
limits hold across processes). They are checked after validation and the access check, so
bad or unauthorised requests never use up anyone's quota, and a non-member can never
exhaust a session's.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


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
