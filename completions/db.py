"""Database (and cache) calls of the direct stream: off the event loop, in a small pool
of threads of its own (CHORUS_COMPLETIONS_DB_THREADS), so a completion's short writes
never queue behind request handlers or streams, and their number of connections is bounded."""

from __future__ import annotations

from realtime.db import DatabaseThreads

completions_db = DatabaseThreads(threads_setting="CHORUS_COMPLETIONS_DB_THREADS", name="chorus-completions-db")
