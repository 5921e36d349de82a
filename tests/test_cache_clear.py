"""With a key prefix, clearing the cache deletes only its own keys in a shared Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from config.cache import FailOpenRedisCache

pytestmark = pytest.mark.services


def test_clear_with_a_prefix_leaves_other_keys_alone(redis_url):
    prefix = f"clear-{uuid.uuid4().hex[:8]}"
    ours = FailOpenRedisCache(redis_url, {"KEY_PREFIX": prefix})
    neighbour = FailOpenRedisCache(redis_url, {"KEY_PREFIX": prefix + "-other"})
    raw = redis.Redis.from_url(redis_url)
    try:
        ours.set_many({f"k{i}": i for i in range(2500)}, timeout=60)
        neighbour.set("kept", 1, timeout=60)
        raw.set(f"not-a-cache-key-{prefix}", 1, ex=60)
        ours.clear()
        assert ours.get("k0") is None and ours.get("k2499") is None
        assert neighbour.get("kept") == 1
        assert raw.get(f"not-a-cache-key-{prefix}") == b"1"
    finally:
        neighbour.clear()
        raw.delete(f"not-a-cache-key-{prefix}")
