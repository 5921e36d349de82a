"""`regenerations-200`: many regenerations at once (issue 12).

200 sessions, each with 3 subscribers and one regeneration of the `local` provider started
at once, streaming CHORUS_LOCAL_BENCH_TOKENS tokens with CHORUS_LOCAL_TOKEN_DELAY_MS between
them. Every token carries the moment it left the provider (`bench@<time>`, a bench-only
setting of the provider), so the subscribers measure provider-to-subscriber time, the
coalescing window (CHORUS_PROGRESS_FLUSH_MS) included: the first stamp of a delta is its
oldest token. The figures:

- events/s sustained: events stored from the first start to the last end;
- server CPU per event (mostly `regeneration_progress`; its insert, the regeneration's
  update and the delivery to 3 subscribers included), as in the other scenarios;
- PostgreSQL WAL bytes per token, from `pg_current_wal_lsn()` before and after. WAL is the
  whole server's: anything else writing to the same PostgreSQL meanwhile is counted too.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from bench.report import Row
from tests.support.servers import database_url

_ACTIVE_SQL = "SELECT count(*) FROM sessions_app_regeneration WHERE status IN ('queued', 'running')"
_STATUS_SQL = (
    "SELECT status, count(*), coalesce(sum(length(content)), 0) FROM sessions_app_regeneration GROUP BY status"
)
_LAST_IDS_SQL = "SELECT id::text, last_event_id FROM sessions_app_collabsession"
_EVENTS_SQL = "SELECT type, count(*) FROM realtime_event WHERE created_at >= to_timestamp(%s) GROUP BY type"
_WAL_SQL = "SELECT pg_current_wal_lsn()::text"
_WAL_DIFF_SQL = "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint"


def _query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def run_regenerations(bench, sc, row: Row) -> None:
    from bench.publisher import bounded
    from bench.scenarios import Published

    env = {
        "CHORUS_LOCAL_TOKEN_DELAY_MS": str(sc.extra["token_delay_ms"]),
        "CHORUS_LOCAL_THOUGHT_STEPS": "0",
        "CHORUS_LOCAL_BENCH_TOKENS": str(sc.extra["tokens"]),
        # All at once: no per-process run limit, no per-user or per-session start limit.
        "CHORUS_REGENERATION_MAX_CONCURRENT": "0",
        "CHORUS_REGENERATION_RATE_USER": "100000000/minute",
        "CHORUS_REGENERATION_RATE_SESSION": "100000000/minute",
    }
    async with bench.cluster(row, env) as ctx:
        db = database_url(ctx.cluster.postgres_url, ctx.cluster.database)
        api = ctx.api
        created = await bounded(16, [lambda i=i: api.create_session(f"regen-{i}", index=i) for i in range(sc.sessions)])
        sessions = [s["id"] for s in created]
        questions = await bounded(
            16,
            [
                lambda s=s, i=i: api.post_message(s, f"Question {i}: how should we plan the rollout?", index=i)
                for i, s in enumerate(sessions)
            ],
        )
        await ctx.warm_up(sessions[:1])
        per = sc.subs // sc.sessions
        opened = await ctx.open_subscribers(
            row, sc.subs, ctx.specs([s for s in sessions for _ in range(per)], viewers=False)
        )
        await bench._broadcast("reset_latencies")
        wal_before = (await asyncio.to_thread(_query, ctx.cluster.postgres_url, _WAL_SQL))[0][0]
        before = ctx.snapshot()
        started = time.time()
        # Each regeneration runs in the process that accepted its request: half on each.
        await bounded(
            32,
            [
                lambda s=s, q=q, i=i: api.regenerate(s, q["id"], index=i)
                for i, (s, q) in enumerate(zip(sessions, questions, strict=True))
            ],
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (await asyncio.to_thread(_query, db, _ACTIVE_SQL))[0][0] == 0:
                break
            await asyncio.sleep(0.2)
        finished = time.time()
        wal_after = (await asyncio.to_thread(_query, ctx.cluster.postgres_url, _WAL_SQL))[0][0]
        ends = dict(await asyncio.to_thread(_query, db, _LAST_IDS_SQL))
        await bench._broadcast("set_targets", targets={s: ends[s] for s in sessions})
        row.notes["all_caught_up"] = await bench.wait_caught_up(opened["opened"], timeout=60)
        await ctx.finish(row, Published(started), before)

        kinds = dict(await asyncio.to_thread(_query, db, _EVENTS_SQL, (started - 1,)))
        statuses = {status: (count, chars) for status, count, chars in await asyncio.to_thread(_query, db, _STATUS_SQL)}
        events = sum(kinds.values())
        progress = kinds.get("regeneration_progress", 0)
        tokens = sc.sessions * sc.extra["tokens"]
        wal = (await asyncio.to_thread(_query, ctx.cluster.postgres_url, _WAL_DIFF_SQL, (wal_after, wal_before)))[0][0]
        window = max(1e-9, finished - started)
        row.notes["regenerations"] = {status: count for status, (count, _) in statuses.items()}
        row.notes["events_by_type"] = kinds
        row.notes["events_per_s"] = round(events / window, 1)
        row.notes["progress_events_per_s"] = round(progress / window, 1)
        row.notes["regeneration_seconds"] = round(window, 2)
        row.notes["tokens_per_progress_event"] = round(tokens / max(1, progress), 2)
        row.notes["server_cpu_ms_per_event"] = round(row.extra["server_cpu_ms"] / max(1, events), 3)
        row.notes["wal_bytes_per_token"] = round(wal / max(1, tokens), 1)
        row.notes["answer_chars"] = sum(chars for _, chars in statuses.values())
        row.notes["latency_source"] = "token stamps (bench@<time> per token, provider clock = subscriber clock)"
        row.key_time = (
            f"{row.notes['events_per_s']:.0f} ev/s, {row.notes['server_cpu_ms_per_event']} ms CPU/ev, "
            f"WAL {row.notes['wal_bytes_per_token']:.0f} B/token"
        )
