"""A Redis cache that fails open: the cache holds throttle counters, not data, and a
request must not fail (or hang) because Redis is briefly down or frozen."""

from __future__ import annotations

import functools
import logging
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

from realtime import metrics

logger = logging.getLogger(__name__)

# After a failure, the cache is skipped for this long (a frozen Redis would otherwise cost
# every cache call of every request its socket timeout).
_SKIP_SECONDS = 5.0


def _fail_open(default_from: str | None = None, default=None):
    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            fallback = kwargs.get(default_from, args[1] if len(args) > 1 else default) if default_from else default
            if time.monotonic() < self._skip_until:
                metrics.CACHE_FAILURES.inc()
                return fallback
            try:
                return method(self, *args, **kwargs)
            except RedisError as exc:
                metrics.CACHE_FAILURES.inc()
                type(self)._skip_until = time.monotonic() + _SKIP_SECONDS
                logger.warning("cache %s failed (%r); skipping the cache for %ss", method.__name__, exc, _SKIP_SECONDS)
                return fallback

        return call

    return wrap


class FailOpenRedisCache(RedisCache):
    """Django's RedisCache, except that a Redis error (refused, timed out: the socket
    timeouts come from OPTIONS) reads as a miss and a write is skipped, and the cache is
    then left alone for a few seconds. Throttles let requests through while Redis is away,
    which beats answering 500 or hanging."""

    _skip_until = 0.0

    get = _fail_open("default")(RedisCache.get)
    get_many = _fail_open(default={})(RedisCache.get_many)
    set = _fail_open()(RedisCache.set)
    add = _fail_open(default=False)(RedisCache.add)
    touch = _fail_open(default=False)(RedisCache.touch)
    delete = _fail_open(default=False)(RedisCache.delete)
    set_many = _fail_open(default=[])(RedisCache.set_many)
    delete_many = _fail_open()(RedisCache.delete_many)
    has_key = _fail_open(default=False)(RedisCache.has_key)

    @_fail_open()
    def clear(self) -> None:
        """Delete this cache's keys. With a KEY_PREFIX (CHORUS_CACHE_KEY_PREFIX) only the
        keys under it: Django's own clear() flushes the whole Redis database, and a Redis
        shared with other deployments, or other test runs, would lose their keys too."""
        if not self.key_prefix:
            return super().clear()
        client = self._cache.get_client(None, write=True)
        batch = []
        for key in client.scan_iter(match=f"{self.key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
