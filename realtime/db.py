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


class DatabaseThreads:
    """A bounded pool of threads of its own for one part's database calls, created on first
    use with `threads_setting` threads (and so at most that many database connections)."""

    def __init__(self, *, threads_setting: str, name: str) -> None:
        self.threads_setting = threads_setting
        self.name = name
        self._executor: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=getattr(settings, self.threads_setting), thread_name_prefix=self.name
            )
        return self._executor

    def __call__(self, func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
        """`func` as a coroutine function that runs in these threads."""
        return database_sync_to_async(func, thread_sensitive=False, executor=self.executor())


# The streams' and the hub's threads.
stream_db = DatabaseThreads(threads_setting="CHORUS_STREAM_DB_THREADS", name="chorus-stream-db")
