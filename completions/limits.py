"""Per-user limits of the direct stream: a call rate and a number of open completions.

Both count in the default cache, so with REDIS_URL they hold across every process of the
cluster; without it (one process) the local-memory cache counts per process. The rate is
DRF's SimpleRateThrottle (CHORUS_COMPLETIONS_RATE_USER, a DRF rate string). The open
count is an INCR/DECR pair on one key whose expiry (CHORUS_COMPLETIONS_MAX_SECONDS + 60 s)
is renewed on every acquire, so slots held by a process that died free themselves.
Keys carry the database's name, so deployments (or test clusters) that share one Redis
do not share counters. Synchronous (cache I/O): call them off the event loop.
"""

from __future__ import annotations

from types import SimpleNamespace

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle


def _namespace() -> str:
    return str(settings.DATABASES["default"]["NAME"])


class CompletionUserThrottle(SimpleRateThrottle):
    scope = "completions_user"
    cache_format = "throttle_%(scope)s_%(ident)s"

    def get_rate(self) -> str | None:
        return settings.CHORUS_COMPLETIONS_RATE_USER or None

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": f"{_namespace()}:{request.user.pk}"}


def rate_check(*, user) -> float | None:
    """Count one call for `user`; None if allowed, else the seconds to wait."""
    throttle = CompletionUserThrottle()
    if throttle.allow_request(SimpleNamespace(user=user), None):
        return None
    return throttle.wait() or 1.0


def _open_key(user_id) -> str:
    return f"chorus:completions:open:{_namespace()}:{user_id}"


def concurrency_acquire(*, user_id) -> bool:
    """Take one of the user's CHORUS_COMPLETIONS_MAX_CONCURRENT slots; False if all are
    taken (nothing is held then). A limit of 0 means no limit."""
    limit = settings.CHORUS_COMPLETIONS_MAX_CONCURRENT
    if limit <= 0:
        return True
    key, ttl = _open_key(user_id), int(settings.CHORUS_COMPLETIONS_MAX_SECONDS) + 60
    cache.add(key, 0, ttl)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, ttl)
        count = 1
    if count > limit:
        concurrency_release(user_id=user_id)
        return False
    cache.touch(key, ttl)
    return True


def limits_reset(*, user_ids) -> None:
    """Forget the rate and open-completion counts of these users (tests, support)."""
    keys = []
    for user_id in user_ids:
        keys.append(_open_key(user_id))
        keys.append(
            CompletionUserThrottle.cache_format % {"scope": "completions_user", "ident": f"{_namespace()}:{user_id}"}
        )
    cache.delete_many(keys)


def concurrency_release(*, user_id) -> None:
    """Give back a slot taken by `concurrency_acquire`."""
    if settings.CHORUS_COMPLETIONS_MAX_CONCURRENT <= 0:
        return
    try:
        if cache.decr(_open_key(user_id)) < 0:
            cache.set(_open_key(user_id), 0, int(settings.CHORUS_COMPLETIONS_MAX_SECONDS) + 60)
    except ValueError:
        pass  # expired: nothing to give back
