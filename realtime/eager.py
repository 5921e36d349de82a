"""Start a coroutine eagerly: run it now, and make a Task only if it really has to wait.

Python 3.12's `asyncio.eager_task_factory` does this; the machines run 3.11, so we step
the coroutine by hand. The hub uses it to hand a frame to each stream: under uvicorn an
ASGI `send` returns without suspending unless that client's socket is full, so the usual
delivery costs one function call instead of a Task, and a client that stopped reading
suspends only its own write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> asyncio.Task | None:
    """Run `coro` until it first suspends. Returns None if it finished (its result is
    dropped; an exception propagates), else a Task that runs it to the end."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish(coro, awaited))


async def _finish(coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
    while True:
        try:
            if awaited is None:  # a bare `yield` (asyncio.sleep(0)): give the loop a turn
                await asyncio.sleep(0)
            else:
                await asyncio.wait([awaited])
        except BaseException as exc:  # cancelled: let the coroutine clean up first
            try:
                coro.throw(exc)
            except (StopIteration, BaseException):
                pass
            raise
        try:
            # The future is done, so resuming returns (or raises) its result inside coro.
            awaited = coro.send(None)
        except StopIteration:
            return
