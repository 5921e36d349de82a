"""The throttles' cache fails open when Redis is away (here: nothing listens on its port)."""

import time

from config.cache import FailOpenRedisCache
from realtime import metrics
from tests.support.servers import free_port


def test_an_unreachable_redis_reads_as_a_miss_and_is_then_skipped(monkeypatch):
    monkeypatch.setattr(FailOpenRedisCache, "_skip_until", 0.0)
    cache = FailOpenRedisCache(
        f"redis://127.0.0.1:{free_port()}/0", {"OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}
    )
    failures = metrics.CACHE_FAILURES._value.get()
    assert cache.get("throttle", []) == []
    assert cache.set("throttle", [1], 60) is None
    started = time.monotonic()
    assert cache.get("throttle", default="fallback") == "fallback"
    assert time.monotonic() - started < 0.05  # skipped: no second connection attempt
    assert metrics.CACHE_FAILURES._value.get() == failures + 3
