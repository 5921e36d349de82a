"""A batch's broadcast (realtime.publish.events_stored): on Redis pub/sub the PUBLISHes
leave pipelined on each shard's connection (realtime.redis_publish), and every message
reaches its group in order, whichever shard carries the group."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from realtime import publish


@pytest.fixture
def two_shards(settings, redis_url):
    # Two "instances" (the same server under two URLs): groups hash to both shards.
    base = redis_url.rsplit("/", 1)[0]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"{base}/0", f"{base}/1"]},
        }
    }


async def test_a_batch_reaches_every_group_in_order_across_shards(two_shards):
    layer = get_channel_layer()
    groups = [f"chorus.test.{uuid.uuid4().hex}" for _ in range(8)]
    shards = {id(layer._get_layer()._get_shard(layer._get_layer()._get_group_channel_name(g))) for g in groups}
    assert len(shards) == 2, "the groups should spread over both shards"
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    sends = [(group, {"type": "session.event", "group": group, "seq": seq}) for seq in (1, 2, 3) for group in groups]
    await publish._send_many_bounded(sends)
    received: dict[str, list[int]] = {}
    async with asyncio.timeout(10):
        for _ in sends:
            message = await layer.receive(channel)
            received.setdefault(message["group"], []).append(message["seq"])
    assert received == {group: [1, 2, 3] for group in groups}
    for group in groups:
        await layer.group_discard(group, channel)
    await layer.flush()
