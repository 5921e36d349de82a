"""Database calls of streams and the hub: off the event loop, in threads of their own.

Channels' `database_sync_to_async` defaults to the one thread-sensitive thread of the
process, so every stream opening, catch-up read and gap fill of a process queued behind
the others there: a reconnect storm opened streams one database round trip after another
(3,000 streams took 3.3 s to open, with the server processes half idle). These calls need
no particular thread, so they run in a small pool of their own: concurrent (the round
trips overlap), yet bounded (CHORUS_STREAM_DB_THREADS, and so at most that many database
connections), and never queued behind request handlers or regeneration writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def _stream_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.CHORUS_STREAM_DB_THREADS, thread_name_prefix="chorus-stream-db"
        )
    return _executor


def stream_db(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function that runs in the streams' database threads."""
    return database_sync_to_async(func, thread_sensitive=False, executor=_stream_executor())
