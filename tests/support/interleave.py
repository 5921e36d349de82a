"""Force two database writers to interleave, for real, on PostgreSQL.

`interleave(first, second)` runs `first` in a thread of its own (its own connection) and
pauses it right after its first statement inside a transaction, when it holds its first
lock; then it runs `second` in another thread until that one is blocked on a lock (as
PostgreSQL's pg_stat_activity says) or done; then it lets `first` go on. Whatever the
writers' lock order, this is the interleaving that deadlocks when two of them take the
same locks in opposite orders. No sleeps decide the order: events and the server's own
view of who waits for what do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

TIMEOUT = 15.0


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None
    pid: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _backend_pid() -> int | None:
    connection.ensure_connection()
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _run(action: Callable[[], Any], outcome: Outcome, wrapper=None, started: threading.Event | None = None) -> None:
    try:
        outcome.pid = _backend_pid()
        if started is not None:
            started.set()
        if wrapper is None:
            outcome.result = action()
        else:
            with connection.execute_wrapper(wrapper):
                outcome.result = action()
    except BaseException as exc:
        outcome.error = exc
    finally:
        connection.close()
        outcome.done.set()


def is_waiting_on_lock(pid: int) -> bool:
    """Whether backend `pid` waits for a lock (asked on this thread's connection)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll `condition` (a database question, cheap) until true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def interleave(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Outcome, Outcome]:
    """Run `first` up to its first statement in a transaction, then `second` until it
    waits on a lock (or ends), then let `first` finish. Returns both outcomes."""
    paused, resume = threading.Event(), threading.Event()
    state = {"paused": False}

    def pause_after_first_statement(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        words = sql.lstrip().split(None, 1)
        is_savepoint = bool(words) and words[0].upper() in ("SAVEPOINT", "RELEASE")
        if not state["paused"] and connection.in_atomic_block and not is_savepoint:
            state["paused"] = True
            paused.set()
            if not resume.wait(TIMEOUT):
                raise AssertionError("the first writer was never resumed")
        return result

    one, two = Outcome(), Outcome()
    second_thread: threading.Thread | None = None
    first_thread = threading.Thread(target=_run, args=(first, one, pause_after_first_statement))
    first_thread.start()
    try:
        wait_until(lambda: paused.is_set() or one.done.is_set(), "the first writer holds its first lock")
        second_started = threading.Event()
        second_thread = threading.Thread(target=_run, args=(second, two, None, second_started))
        second_thread.start()
        second_started.wait(TIMEOUT)
        wait_until(
            lambda: two.done.is_set() or (two.pid is not None and is_waiting_on_lock(two.pid)),
            "the second writer waits on a lock or is done",
        )
    finally:
        resume.set()
        first_thread.join(TIMEOUT)
    if second_thread is not None:
        second_thread.join(TIMEOUT)
    assert one.done.is_set() and two.done.is_set(), "a writer is stuck (deadlock not detected?)"
    return one, two
