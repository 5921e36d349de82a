"""Graceful shutdown on SIGTERM / SIGINT, under uvicorn and daphne.

An SSE stream never ends by itself, and uvicorn sends `lifespan.shutdown` only after every
connection has closed: with a stream open, the hub's shutdown never ran and the server
waited forever (`make run` hung on Ctrl-C), or, with `--timeout-graceful-shutdown`, cut
the streams mid-chunk. daphne cancels every application at once, cutting them too.

So the process's SIGTERM and SIGINT handlers are chained. The first signal *drains*:
1. the shutdown hooks run (settings.CHORUS_SHUTDOWN_HOOKS; the regeneration worker fails
   its running regenerations with a clear `regeneration_error`, stored and broadcast, so
   clients see it on whichever process they reconnect to);
2. every stream ends gracefully with a final `: shutdown` comment and the end of the
   response; streams that open meanwhile end right after their opening frames. Clients
   reconnect (to another process) with Last-Event-ID and lose nothing;
3. then the signal goes to the server's own handler, which now finds no stream open and
   exits at once.
The drain is bounded by CHORUS_SHUTDOWN_GRACE_SECONDS. A second SIGINT (Ctrl-C twice) goes
straight to the server (uvicorn then exits without waiting).

Handlers are installed only in a process whose server handles SIGTERM itself (uvicorn,
daphne's Twisted reactor), from the main thread; a test process or a shell is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_installed_for: asyncio.AbstractEventLoop | None = None
_draining = False  # set by the first signal
_tasks: set[asyncio.Task] = set()  # keeps the drain task referenced


def install_signal_handlers(loop: asyncio.AbstractEventLoop) -> bool:
    """Chain the drain in front of the server's SIGTERM/SIGINT handlers, once per loop.
    Returns whether it did (it does not outside a server's main thread)."""
    global _installed_for
    if _installed_for is loop or threading.current_thread() is not threading.main_thread():
        return False
    current = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if not callable(current[signal.SIGTERM]):
        return False  # no server handling SIGTERM here (tests, shells)
    for sig, previous in current.items():
        signal.signal(sig, _chained(loop, previous))
    _installed_for = loop
    return True


def _chained(loop: asyncio.AbstractEventLoop, previous) -> Callable:
    def handler(sig: int, frame) -> None:
        global _draining
        if _draining or loop.is_closed() or not loop.is_running():
            _hand_over(previous, sig, frame)
            return
        _draining = True
        # A signal handler may interrupt the loop anywhere: only hand work to it the way
        # another thread would.
        loop.call_soon_threadsafe(_start_drain, loop, previous, sig)

    return handler


def _start_drain(loop: asyncio.AbstractEventLoop, previous, sig: int) -> None:
    logger.warning("signal %s: draining streams and regenerations before shutdown", signal.Signals(sig).name)
    _tasks.add(loop.create_task(_drain_then(previous, sig), name="chorus-shutdown-drain"))


def _hand_over(previous, sig: int, frame) -> None:
    if callable(previous):
        previous(sig, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)


async def _drain_then(previous, sig: int) -> None:
    try:
        async with asyncio.timeout(settings.CHORUS_SHUTDOWN_GRACE_SECONDS):
            await drain()
    except TimeoutError:
        logger.error("drain not finished after %ss; shutting down anyway", settings.CHORUS_SHUTDOWN_GRACE_SECONDS)
    except Exception:
        logger.exception("drain failed; shutting down anyway")
    _hand_over(previous, sig, None)


async def drain() -> None:
    """Run the shutdown hooks, then end every local stream gracefully (and every stream
    that opens from now on). Idempotent."""
    from realtime.hub import current_hub

    hub = current_hub()
    if hub is not None:
        hub.draining = True
    for path in getattr(settings, "CHORUS_SHUTDOWN_HOOKS", ()):
        try:
            await import_string(path)()
        except Exception:
            logger.exception("shutdown hook %s failed", path)
    if hub is not None:
        await hub.end_streams()


def draining() -> bool:
    return bool(_draining)
