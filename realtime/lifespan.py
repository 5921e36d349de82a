"""ASGI lifespan: start the hub (and with it the channel layer) before the first request.

Creating the channel layer at start-up keeps its import and connection costs out of the
first stream. Creating the hub also chains the graceful drain into SIGTERM/SIGINT
(realtime.shutdown): uvicorn sends `lifespan.shutdown` only once every connection has
closed, so the streams must be ended before that, on the signal itself. Starting it starts
what runs in every process whatever it serves: the worker registry's heartbeat, scheduled
pruning and the regeneration worker (settings.CHORUS_HUB_START_HOOKS).

daphne does not speak lifespan: there `start_on_first_request` starts the hub with the
first HTTP request of any kind (a REST call, a probe, a page), not only the first stream.
"""

import asyncio
import logging

from realtime.hub import get_hub

logger = logging.getLogger(__name__)


async def lifespan_app(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await get_hub().start()
            except Exception:
                logger.exception("the hub could not start; streams will retry")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await get_hub().stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def start_on_first_request(app):
    """Wrap the HTTP app: the first request on an event loop starts the hub in the
    background (the request does not wait for the channel layer). Under uvicorn the
    lifespan has started it already and this costs one comparison per request; if the
    start fails (Redis down), the next request tries again."""
    started_for: asyncio.AbstractEventLoop | None = None
    tasks: set[asyncio.Task] = set()

    async def start(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal started_for
        try:
            await get_hub().start()
        except Exception:
            logger.warning("the hub could not start; the next request retries", exc_info=True)
            if started_for is loop:
                started_for = None

    async def wrapper(scope, receive, send) -> None:
        nonlocal started_for
        loop = asyncio.get_running_loop()
        if started_for is not loop:
            started_for = loop
            task = loop.create_task(start(loop), name="chorus-hub-first-request")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await app(scope, receive, send)

    return wrapper
