"""Broadcasts go to Redis over a pipelined connection of our own (realtime.redis_publish):
channels-redis's subscribers receive exactly what its own group_send would deliver."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from realtime.redis_publish import RedisPublishError, _publishers, group_publish
from tests.support.faults import RedisServer

pytestmark = pytest.mark.services


def layer_on(url: str) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(hosts=[{"address": url}], prefix=f"test-{uuid.uuid4().hex[:8]}")


async def subscribed(layer: RedisPubSubChannelLayer, group: str) -> str:
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def test_a_subscriber_receives_what_was_published(redis_url):
    layer = layer_on(redis_url)
    try:
        channel = await subscribed(layer, "session.one")
        message = {"type": "event.broadcast", "seq": 7, "envelope": "é" * 300}
        assert await group_publish(layer, "session.one", message)
        assert await asyncio.wait_for(layer.receive(channel), 5) == message
    finally:
        await layer.flush()


async def test_publishes_in_flight_together_arrive_in_order(redis_url):
    layer = layer_on(redis_url)
    try:
        channel = await subscribed(layer, "session.many")
        await asyncio.gather(*(group_publish(layer, "session.many", {"type": "x", "seq": n}) for n in range(200)))
        received = [(await asyncio.wait_for(layer.receive(channel), 5))["seq"] for _ in range(200)]
        assert received == list(range(200))
    finally:
        await layer.flush()


async def test_other_layers_are_left_to_group_send():
    assert not await group_publish(InMemoryChannelLayer(), "session.x", {"type": "x"})


async def test_a_password_is_sent_and_a_wrong_one_is_an_error():
    server = RedisServer("--requirepass", "s3cret").start()
    try:
        good = layer_on(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        channel = await subscribed(good, "session.auth")
        assert await group_publish(good, "session.auth", {"type": "x", "seq": 1})
        assert (await asyncio.wait_for(good.receive(channel), 5))["seq"] == 1
        await good.flush()
        with pytest.raises(RedisPublishError):
            await asyncio.wait_for(
                group_publish(layer_on(f"redis://:wrong@127.0.0.1:{server.port}/0"), "session.auth", {"type": "x"}), 5
            )
    finally:
        server.close()


async def test_after_a_restart_the_next_publish_reconnects():
    server = RedisServer().start()
    try:
        layer = layer_on(server.url)
        assert await group_publish(layer, "session.r", {"type": "x"})
        await asyncio.to_thread(server.restart)
        outcomes = []
        for _ in range(2):  # the first may meet the broken connection; the next must succeed
            try:
                outcomes.append(await asyncio.wait_for(group_publish(layer, "session.r", {"type": "x"}), 5))
            except RedisPublishError:
                outcomes.append("failed")
        assert outcomes[-1] is True
    finally:
        server.close()


async def test_a_publish_given_up_on_a_stalled_redis_drops_its_connection():
    """Redis frozen (or a silent network): the connection may never answer again, so the
    publish that gave up closes it, and the next one connects afresh."""
    server = RedisServer().start()
    try:
        layer = layer_on(server.url)
        assert await group_publish(layer, "session.f", {"type": "x", "seq": 1})
        publisher = _publishers[asyncio.get_running_loop()][server.url]
        stalled = publisher._protocol
        server.freeze()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(group_publish(layer, "session.f", {"type": "x", "seq": 2}), 0.5)
        assert stalled.transport is None or stalled.transport.is_closing()
        server.thaw()
        assert await asyncio.wait_for(group_publish(layer, "session.f", {"type": "x", "seq": 3}), 5)
        assert publisher._protocol is not stalled
    finally:
        server.close()
