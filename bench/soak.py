"""`python -m bench.soak` (`make soak`): subscribers that keep dropping and resuming while
messages and regenerations run through two server processes, for SOAK_SECONDS.

It checks what the contract promises over a long, messy run: every subscriber ends with
every id after its start exactly once (0 lost, 0 duplicated, however often it reconnected
with Last-Event-ID), and the servers' memory stays flat after warm-up (RSS sampled every
few seconds). It prints one table and exits non-zero if anything was lost or duplicated.
The subscribers are the benchmark's light client (bench.client) in a worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from bench import procstats
from bench.client import Spec, WorkerHandle, raise_nofile_limit
from bench.publisher import Api, ApiError

# Faster regenerations and short leases: a soak should see many of them.
SOAK_SERVER_ENV = {
    "CHORUS_LOCAL_TOKEN_DELAY_MS": "15",
    "CHORUS_LOCAL_THOUGHT_STEPS": "2",
    "CHORUS_REGENERATION_RATE_USER": "10000/minute",
    "CHORUS_REGENERATION_RATE_SESSION": "10000/minute",
    "CHORUS_LOG_LEVEL": "ERROR",
}
VIEWERS = 3


@dataclass
class SoakResult:
    seconds: float
    subscribers: int
    sessions: int
    messages: int = 0
    regenerations: int = 0
    failed_posts: int = 0
    events_published: int = 0
    delivered: int = 0
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    churned: int = 0
    not_connected: int = 0
    rss_kb: dict[int, list[int]] = field(default_factory=dict)  # pid -> samples after warm-up

    def rss_growth_kb(self) -> dict[int, int]:
        return {pid: samples[-1] - samples[0] for pid, samples in self.rss_kb.items() if samples}

    def table(self) -> str:
        rows = [
            ("duration", f"{self.seconds:.0f} s"),
            ("subscribers / sessions", f"{self.subscribers} / {self.sessions}"),
            ("messages / regenerations started", f"{self.messages} / {self.regenerations}"),
            ("failed posts", str(self.failed_posts)),
            ("events published", str(self.events_published)),
            ("delivered / expected", f"{self.delivered} / {self.expected}"),
            ("lost", str(self.lost)),
            ("duplicated", str(self.duplicated)),
            ("out of order", str(self.out_of_order)),
            ("drops injected / reconnects", f"{self.churned} / {self.reconnects}"),
            ("never connected", str(self.not_connected)),
        ]
        for pid, samples in self.rss_kb.items():
            if samples:
                middle = samples[len(samples) // 2]
                rows.append(
                    (
                        f"RSS pid {pid} (after warm-up -> middle -> end)",
                        f"{samples[0] / 1024:.1f} -> {middle / 1024:.1f} -> {samples[-1] / 1024:.1f} MB",
                    )
                )
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0 and self.failed_posts == 0


async def run_soak(
    urls: list[str],
    tokens: dict[str, str],
    pids: list[int],
    *,
    seconds: float,
    subscribers: int,
    sessions: int = 2,
    message_rate: float = 8.0,
    regeneration_every: float = 3.0,
    churn_per_second: float = 0.05,
    seed: int = 1,
    log=print,
) -> SoakResult:
    """Run the soak against running servers (`urls`, their `pids`); `tokens` holds
    "soak-owner" and "soak-viewer-<i>" for i < VIEWERS. Returns the figures."""
    rng = random.Random(seed)
    api = Api(urls, tokens["soak-owner"])
    worker = WorkerHandle(0)
    result = SoakResult(seconds=seconds, subscribers=subscribers, sessions=sessions)
    try:
        session_ids = []
        for n in range(sessions):
            session = (await api.create_session(f"soak {n}"))["id"]
            for i in range(VIEWERS):
                await api.add_member(session, f"soak-viewer-{i}", "viewer")
            session_ids.append(session)
        starts = {s: await api.last_event_id(s) for s in session_ids}
        hostports = [(urlparse(u).hostname or "127.0.0.1", urlparse(u).port or 80) for u in urls]
        specs = []
        for i in range(subscribers):
            session = session_ids[i % sessions]
            token = tokens[f"soak-viewer-{i % VIEWERS}"]
            specs.append(Spec(*hostports[i % len(hostports)], session, token, starts[session]))
        opened = await worker.call("open", rpc_timeout=120, specs=specs, concurrency=100, timeout=60)
        result.not_connected = opened["failed"]
        log(f"soak: {opened['opened']}/{subscribers} subscribers open; running {seconds:.0f} s")

        # Thread pools, connection pools and caches fill during the first minute or two
        # (measured: +7 MB in the first half of a 300 s run, +0.7 MB in the second).
        warm_up_end = time.monotonic() + min(60.0, seconds / 3)
        stop_at = time.monotonic() + seconds
        regenerations: list[str] = []

        async def publish() -> None:
            n = 0
            next_regeneration = time.monotonic() + 1.0
            while time.monotonic() < stop_at:
                session = session_ids[n % sessions]
                try:
                    message = await api.post_message(session, f"soak {n}", index=n)
                    result.messages += 1
                    if time.monotonic() >= next_regeneration:
                        started = await api.regenerate(session, message["id"], index=n + 1)
                        regenerations.append(started["regenerationId"])
                        result.regenerations += 1
                        next_regeneration = time.monotonic() + regeneration_every
                except ApiError as exc:
                    result.failed_posts += 1
                    log(f"soak: {exc}")
                n += 1
                await asyncio.sleep(rng.expovariate(message_rate))

        async def churn() -> None:
            step = 0
            while time.monotonic() < stop_at:
                await asyncio.sleep(1.0)
                count = max(1, round(subscribers * churn_per_second))
                result.churned += await worker.call("churn", count=count, seed=seed * 100_000 + step)
                step += 1

        async def sample_memory() -> None:
            while time.monotonic() < stop_at:
                if time.monotonic() >= warm_up_end:
                    for pid in pids:
                        result.rss_kb.setdefault(pid, []).append(procstats.rss_kb(pid))
                await asyncio.sleep(2.0)

        await asyncio.gather(publish(), churn(), sample_memory())

        # Let the regenerations finish (their last event is stored), then every
        # subscriber must reach its session's newest id.
        deadline = time.monotonic() + 60
        for regeneration in regenerations:
            while time.monotonic() < deadline:
                status = (await api.regeneration(regeneration))["status"]
                if status not in ("queued", "running"):
                    break
                await asyncio.sleep(0.2)
        targets = {s: await api.last_event_id(s) for s in session_ids}
        result.events_published = sum(targets[s] - starts[s] for s in session_ids)
        await worker.call("set_targets", targets=targets)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            progress = await worker.call("progress")
            if progress["caught_up"] >= opened["opened"]:
                break
            await asyncio.sleep(0.1)
        for pid in pids:
            result.rss_kb.setdefault(pid, []).append(procstats.rss_kb(pid))
        report = await worker.call("report", rpc_timeout=120)
        result.delivered = report["received"]
        result.expected = report["expected"]
        result.lost = report["expected"] - report["received"]
        result.duplicated = report["duplicated"]
        result.out_of_order = report["out_of_order"]
        result.reconnects = report["reconnects"]
        return result
    finally:
        await api.aclose()
        worker.stop()


def main(argv: list[str]) -> int:
    from tests.support.servers import Cluster, drop_templates

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 180)))
    parser.add_argument("--subscribers", type=int, default=int(os.environ.get("SOAK_SUBSCRIBERS", 300)))
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    args = parser.parse_args(argv)
    raise_nofile_limit()
    cluster = Cluster(postgres_url=args.postgres, redis_url=args.redis, server=args.server, env=SOAK_SERVER_ENV)
    try:
        cluster.start()
        tokens = cluster.create_users("soak-owner", *(f"soak-viewer-{i}" for i in range(VIEWERS)))
        result = asyncio.run(
            run_soak(
                cluster.urls,
                tokens,
                [p.pid for p in cluster.procs],
                seconds=args.seconds,
                subscribers=args.subscribers,
            )
        )
    finally:
        cluster.stop()
        drop_templates()
    print(result.table())
    print("OK: nothing lost or duplicated" if result.ok else "FAILED: events lost, duplicated or refused")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
