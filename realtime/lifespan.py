"""ASGI lifespan: start the hub (and with it the channel layer) before the first request.

Creating the channel layer at start-up keeps its import and connection costs out of the
first stream. daphne does not speak lifespan; there the hub starts with the first stream.
Creating the hub also chains the graceful drain into SIGTERM/SIGINT (realtime.shutdown):
uvicorn sends `lifespan.shutdown` only once every connection has closed, so the streams
must be ended before that, on the signal itself.
"""

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
