"""Process-wide tuning of the Python runtime for a server process."""

from __future__ import annotations

import gc

from django.conf import settings


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    A server process holds a few hundred thousand objects from its imports and then a
    hundred or so per open stream. With Python's default threshold (700) the collector ran
    so often that it took about a tenth of the CPU of opening a stream (py-spy: samples in
    whichever allocation tipped it over). Frozen objects are never traversed again, and a
    gen-0 threshold of 50,000 (CHORUS_GC_GEN0_THRESHOLD) leaves at most a few MB of
    cyclic garbage waiting between collections. Reference counting still frees everything
    else at once. 0 keeps Python's defaults.
    """
    threshold = settings.CHORUS_GC_GEN0_THRESHOLD
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)


def bound_database_waits() -> None:
    """Server processes only: PostgreSQL cancels any statement running longer than
    CHORUS_DB_STATEMENT_TIMEOUT_MS (a lock held elsewhere, a stalled disk), so a request
    answers 503 (config.middleware) within a bounded time instead of holding its thread
    and connection. Not set in settings, so `migrate` and other commands run unbounded.
    Must run before the first connection is opened."""
    timeout = settings.CHORUS_DB_STATEMENT_TIMEOUT_MS
    database = settings.DATABASES["default"]
    if timeout <= 0 or database["ENGINE"] != "django.db.backends.postgresql":
        return
    options = database.setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c statement_timeout={int(timeout)}".strip()
