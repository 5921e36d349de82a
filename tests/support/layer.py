"""Make the channel layer lose messages, as Redis pub/sub can while reconnecting."""

from __future__ import annotations

import contextlib

from channels.layers import get_channel_layer


@contextlib.contextmanager
def broadcasts_dropped(count: int | None = 1):
    """Drop the next `count` group_send calls (None: all of them) inside the block; yields
    the list of dropped messages' ids."""
    layer = get_channel_layer()
    real_group_send = layer.group_send
    dropped: list[int] = []

    async def lossy_group_send(group, message):
        if count is None or len(dropped) < count:
            dropped.append(message.get("seq"))
            return
        await real_group_send(group, message)

    layer.group_send = lossy_group_send
    try:
        yield dropped
    finally:
        layer.group_send = real_group_send
