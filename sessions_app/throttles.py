"""Throttles on starting regenerations (CONTRACT §3): per user and per session.

Rates come from settings (CHORUS_REGENERATION_RATE_USER / _SESSION, DRF rate strings) at
each request, and counters live in the default cache (Redis when REDIS_URL is set, so the
limits hold across processes). They are checked after validation and the access check, so
bad or unauthorised requests never use up anyone's quota, and a non-member can never
exhaust a session's.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
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
