"""Database (and cache) calls of the direct stream: off the event loop, in a small pool
of threads of its own (CHORUS_COMPLETIONS_DB_THREADS), so a completion's short writes
never queue behind request handlers or streams, and their number of connections is bounded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def _completions_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.CHORUS_COMPLETIONS_DB_THREADS, thread_name_prefix="chorus-completions-db"
        )
    return _executor


def completions_db(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function that runs in the direct stream's database threads."""
    return database_sync_to_async(func, thread_sensitive=False, executor=_completions_executor())
