"""Make the channel layer lose messages, as Redis pub/sub can while reconnecting."""

from __future__ import annotations

import contextlib

from channels.layers import get_channel_layer

from realtime import publish


@contextlib.contextmanager
def broadcasts_dropped(count: int | None = 1):
    """Drop the next `count` channel-layer sends (None: all of them) started inside the
    block; yields the list of dropped messages' ids.

    Sends from sync code (publishing) are dropped when they are *started*: they reach the
    layer later, on the server's loop, possibly after the block has ended. Sends made on
    the loop itself (the hub's) are dropped at the layer."""
    layer = get_channel_layer()
    real_group_send = layer.group_send
    real_publish = publish._group_send  # the loop's sends through Redis skip layer.group_send
    real_from_sync = publish._group_send_from_sync
    dropped: list[int] = []

    def take(message: dict) -> bool:
        if count is None or len(dropped) < count:
            dropped.append(message.get("seq"))
            return True
        return False

    def lossy_from_sync(group, message):
        if not take(message):
            real_from_sync(group, message)

    async def lossy_group_send(group, message):
        if not take(message):
            await real_group_send(group, message)

    async def lossy_publish(layer, group, message):
        if not take(message):
            await real_publish(layer, group, message)

    publish._group_send_from_sync = lossy_from_sync
    publish._group_send = lossy_publish
    layer.group_send = lossy_group_send
    try:
        yield dropped
    finally:
        publish._group_send_from_sync = real_from_sync
        publish._group_send = real_publish
        layer.group_send = real_group_send
