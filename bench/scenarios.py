"""The scenarios: each starts a fresh cluster (PostgreSQL database, Redis, N server
processes), sets up through the REST API, measures, and returns one result row."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx

from bench import procstats
from bench.client import Spec, WorkerHandle
from bench.peers.cluster import PEER_KINDS, BareHubCluster
from bench.publisher import Api, PublishResult, bounded, closed_loop_publish, paced_publish, stamp
from bench.report import Row, percentiles
from tests.support.servers import Cluster

VIEWERS = 10  # fan-out subscribers take turns among this many member accounts


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    subs: int = 0
    events: int = 0
    rate: float = 0.0
    sessions: int = 1
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "fanout":
            return f"1 session, {self.subs} subscribers, {self.events} events at {self.rate:g}/s"
        if self.kind == "sessions":
            return (
                f"{self.sessions} sessions x {self.subs // self.sessions} subscribers, "
                f"{self.events} events at {self.rate:g}/s"
            )
        if self.kind == "idle":
            return f"{self.subs} idle streams on 1 session"
        if self.kind == "replay":
            return f"{self.events} stored events, {self.extra['runs']} clients with Last-Event-ID: 0 (one at a time)"
        if self.kind == "storm":
            return (
                f"{self.subs} subscribers, events at {self.rate:g}/s for {self.extra['seconds']:g}s, "
                f"all drop at {self.extra['drop_at']:g}s and reconnect with Last-Event-ID"
            )
        if self.kind == "writers":
            return (
                f"{self.extra['writers']} writers posting back to back (each to its own session, "
                f"{self.subs // self.sessions} subscribers each), {self.events} posts"
            )
        if self.kind == "regenerations":
            return (
                f"{self.sessions} sessions x {self.subs // self.sessions} subscribers, one local regeneration each "
                f"at once ({self.extra['tokens']} tokens, token delay {self.extra['token_delay_ms']:g} ms)"
            )
        if self.kind == "presence":
            churn = self.extra["churn_rate"]
            who = f"{self.extra['churn_users']} other users joining and leaving at {churn:g}/s" if churn else "no churn"
            return f"1 session, {self.subs} subscribers, {self.events} events at {self.rate:g}/s; {who}"
        return (
            f"{self.subs} subscribers, {self.extra['regenerations']} local regenerations "
            f"({self.extra['parallel']} at a time, token delay {self.extra['token_delay_ms']:g} ms)"
        )


PRESENCE = {"churn_users": 60, "hold_seconds": 0.5}

DEFAULT = [
    Scenario("fanout-100", "fanout", subs=100, events=200, rate=20),
    Scenario("fanout-1000", "fanout", subs=1000, events=200, rate=20),
    Scenario("fanout-3000", "fanout", subs=3000, events=200, rate=20),
    Scenario("sessions-500x2", "sessions", subs=1000, sessions=500, events=1000, rate=100),
    Scenario("idle-3000", "idle", subs=3000, extra={"seconds": 5}),
    Scenario("replay-5000", "replay", events=5000, extra={"runs": 5}),
    Scenario("storm-1000", "storm", subs=1000, rate=20, extra={"seconds": 14, "drop_at": 4}),
    Scenario(
        "tokens-1000",
        "tokens",
        subs=1000,
        extra={"regenerations": 20, "parallel": 2, "token_delay_ms": 5},
    ),
    Scenario("presence-1000", "presence", subs=1000, events=200, rate=20, extra={**PRESENCE, "churn_rate": 0}),
    Scenario("presence-churn-1000", "presence", subs=1000, events=200, rate=20, extra={**PRESENCE, "churn_rate": 50}),
    Scenario("writers-8", "writers", subs=16, sessions=8, events=4000, extra={"writers": 8}),
    Scenario(
        "regenerations-200",
        "regenerations",
        subs=600,
        sessions=200,
        extra={"tokens": 300, "token_delay_ms": 10},
    ),
]

QUICK = [
    Scenario("fanout-100", "fanout", subs=50, events=40, rate=20),
    Scenario("fanout-1000", "fanout", subs=200, events=40, rate=20),
    Scenario("fanout-3000", "fanout", subs=400, events=40, rate=20),
    Scenario("sessions-500x2", "sessions", subs=100, sessions=50, events=200, rate=100),
    Scenario("idle-3000", "idle", subs=300, extra={"seconds": 2}),
    Scenario("replay-5000", "replay", events=500, extra={"runs": 3}),
    Scenario("storm-1000", "storm", subs=100, rate=20, extra={"seconds": 6, "drop_at": 2}),
    Scenario(
        "tokens-1000",
        "tokens",
        subs=100,
        extra={"regenerations": 4, "parallel": 2, "token_delay_ms": 5},
    ),
    Scenario("presence-1000", "presence", subs=100, events=40, rate=20, extra={**PRESENCE, "churn_rate": 0}),
    Scenario("presence-churn-1000", "presence", subs=100, events=40, rate=20, extra={**PRESENCE, "churn_rate": 50}),
    Scenario("writers-8", "writers", subs=16, sessions=8, events=400, extra={"writers": 8}),
    Scenario("regenerations-200", "regenerations", subs=60, sessions=20, extra={"tokens": 60, "token_delay_ms": 10}),
]


@dataclass
class Options:
    server: str = "uvicorn"
    processes: int = 2
    client_procs: int = 0  # 0: one per 1,000 subscribers, at most 2
    connect_concurrency: int = 200
    postgres_url: str = "postgres://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379"
    scenario_timeout: float = 240.0
    settle: float = 1.0
    server_env: dict[str, str] = field(default_factory=dict)  # extra environment for the servers


class Bench:
    """What outlives one scenario: the options and the subscriber worker processes."""

    def __init__(self, options: Options, log: Callable[[str], None]) -> None:
        self.options = options
        self.log = log
        self.all_workers: list[WorkerHandle] = []
        self.workers: list[WorkerHandle] = []
        self.target = "chorus"  # or a peer (bench/peers): what the scenario running now measures

    def use_workers(self, subs: int) -> list[WorkerHandle]:
        wanted = self.options.client_procs or min(2, max(1, -(-subs // 1000)))
        while len(self.all_workers) < wanted:
            self.all_workers.append(WorkerHandle(len(self.all_workers)))
        self.workers = self.all_workers[:wanted]
        return self.workers

    def stop(self) -> None:
        for worker in self.all_workers:
            worker.stop()

    async def run(self, scenario: Scenario, target: str = "chorus") -> Row:
        """One scenario against Chorus (`target="chorus"`) or a peer (bench/peers)."""
        if target != "chorus" and scenario.kind not in PEER_KINDS:
            raise ValueError(f"{scenario.name} does not apply to the {target} peer")
        self.target = target
        self.use_workers(max(1, scenario.subs))
        runner = {
            "fanout": self._fanout,
            "sessions": self._sessions,
            "idle": self._idle,
            "replay": self._replay,
            "storm": self._storm,
            "tokens": self._tokens,
            "presence": self._presence,
            "writers": self._writers,
            "regenerations": self._regenerations,
        }[scenario.kind]
        row = Row(scenario=scenario.name, description=scenario.describe(), server=self.options.server, target=target)
        row.notes["client_processes"] = len(self.workers)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.scenario_timeout):
                await runner(scenario, row)
        except TimeoutError:
            row.error = f"scenario did not finish within {self.options.scenario_timeout:g}s"
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            with contextlib.suppress(Exception):
                await self._broadcast("close_all", rpc_timeout=30)
        row.notes["wall_seconds"] = round(time.monotonic() - started, 1)
        return row

    # --- cluster and subscribers --------------------------------------------------
    @contextlib.asynccontextmanager
    async def cluster(self, row: Row, env: dict[str, str] | None = None) -> AsyncIterator[Context]:
        """A fresh cluster for one scenario; on the way out, the servers' logged errors
        are summarised into `row.notes` (they explain failed requests and losses)."""
        opts = self.options
        cluster: Cluster | BareHubCluster
        if self.target == "chorus":
            cluster = Cluster(
                postgres_url=opts.postgres_url,
                redis_url=opts.redis_url,
                server=opts.server,
                processes=opts.processes,
                # Thousands of subscribers share VIEWERS accounts: lift the per-user stream cap.
                env={"CHORUS_LOG_LEVEL": "ERROR", "CHORUS_STREAM_MAX_PER_USER": "0", **opts.server_env, **(env or {})},
            )
        else:
            # The peer takes none of Chorus's settings; the same server, process count and Redis.
            cluster = BareHubCluster(redis_url=opts.redis_url, server=opts.server, processes=opts.processes)
        try:
            await asyncio.to_thread(cluster.start)
            names = ["bench-owner", *(f"bench-viewer-{i}" for i in range(VIEWERS))]
            tokens = await asyncio.to_thread(cluster.create_users, *names)
            api = Api(cluster.urls, tokens["bench-owner"])
            try:
                yield Context(self, cluster, api, tokens)
            finally:
                await api.aclose()
        finally:
            # Subscribers hang up first, so the servers do not wait out their graceful
            # shutdown on open streams.
            with contextlib.suppress(Exception):
                await self._broadcast("close_all", rpc_timeout=30)
            await asyncio.to_thread(cluster.stop)
            errors = server_log_errors(cluster)
            if errors:
                row.notes["server_log_errors"] = errors

    async def _broadcast(self, command: str, rpc_timeout: float = 60.0, **kwargs) -> list:
        return await asyncio.gather(*(w.call(command, rpc_timeout=rpc_timeout, **kwargs) for w in self.workers))

    async def open(self, specs: Sequence[Spec], timeout: float = 60.0) -> dict:  # noqa: ASYNC109
        """Connect `specs` (spread over the workers) with bounded concurrency; returns when
        every one has its `connection` event or failed."""
        parts = [list(specs[i :: len(self.workers)]) for i in range(len(self.workers))]
        per_worker = max(1, self.options.connect_concurrency // len(self.workers))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                w.call("open", rpc_timeout=timeout + 30, specs=part, concurrency=per_worker, timeout=timeout)
                for w, part in zip(self.workers, parts, strict=True)
                if part
            )
        )
        times = [t for r in results for t in r["times"]]
        failed = sum(r["failed"] for r in results)
        self.log(f"   {len(specs) - failed}/{len(specs)} streams open in {time.perf_counter() - started:.2f} s")
        return {
            "opened": sum(r["opened"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "errors": [e for r in results for e in r["errors"]][:5],
            "seconds": round(time.perf_counter() - started, 3),
            "connect_ms": percentiles([t * 1000 for t in times]),
        }

    async def wait_caught_up(self, expected_subs: int, timeout: float = 30.0, stall: float = 5.0) -> bool:  # noqa: ASYNC109
        """Poll until every subscriber holds every id up to its session's target, the
        deliveries stop moving for `stall` seconds, or `timeout`."""
        deadline = time.monotonic() + timeout
        last_delivered, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            progress = await self._broadcast("progress", rpc_timeout=30)
            if sum(p["caught_up"] for p in progress) >= expected_subs:
                return True
            delivered = sum(p["delivered"] for p in progress)
            if delivered != last_delivered:
                last_delivered, last_change = delivered, time.monotonic()
            elif time.monotonic() - last_change > stall:
                return False
            await asyncio.sleep(0.05)
        return False

    async def collect(self) -> dict:
        reports = await self._broadcast("report", rpc_timeout=120)
        merged: dict = {"latencies": []}
        for key in ("received", "expected", "duplicated", "out_of_order", "reconnects", "ended_by_server"):
            merged[key] = sum(r[key] for r in reports)
        for key in ("history_truncated", "subs_with_loss", "subs_silent"):
            merged[key] = sum(r[key] for r in reports)
        merged["not_caught_up_after_drop"] = sum(r["not_caught_up_after_drop"] for r in reports)
        merged["catch_up_times"] = [t for r in reports for t in r["catch_up_times"]]
        merged["last_rx"] = max(r["last_rx"] for r in reports)
        for r in reports:
            part = array("d")
            part.frombytes(r["latencies"])
            merged["latencies"].extend(part)
        return merged

    def client_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    # --- scenarios ----------------------------------------------------------------
    async def _fanout(self, sc: Scenario, row: Row) -> None:
        async with self.cluster(row) as ctx:
            session = await ctx.new_session_with_viewers("fanout")
            await ctx.warm_up([session])
            publish_cost = await ctx.publish_cost(session, min(40, sc.events), sc.rate)
            await ctx.open_subscribers(row, sc.subs, ctx.specs([session] * sc.subs, viewers=True))
            await ctx.publish_and_measure(row, [session], sc.events, sc.rate)
            ctx.split_cpu(row, publish_cost)

    async def _sessions(self, sc: Scenario, row: Row) -> None:
        async with self.cluster(row) as ctx:
            titles = [f"many-{i}" for i in range(sc.sessions)]
            created = await bounded(
                16, [lambda t=t, i=i: ctx.api.create_session(t, index=i) for i, t in enumerate(titles)]
            )
            sessions = [s["id"] for s in created]
            await ctx.warm_up(sessions[:1])
            per = sc.subs // sc.sessions
            await ctx.open_subscribers(
                row, sc.subs, ctx.specs([s for s in sessions for _ in range(per)], viewers=False)
            )
            await ctx.publish_and_measure(row, sessions, sc.events, sc.rate, per_event=True)

    async def _idle(self, sc: Scenario, row: Row) -> None:
        async with self.cluster(row) as ctx:
            session = await ctx.new_session_with_viewers("idle")
            await ctx.warm_up([session])
            await ctx.open_subscribers(row, sc.subs, ctx.specs([session] * sc.subs, viewers=True))
            cpu_before, started = ctx.server_cpu(), time.monotonic()
            await asyncio.sleep(sc.extra["seconds"])
            row.notes["idle_server_cpu_ms_per_s"] = round(
                (ctx.server_cpu() - cpu_before) * 1000 / (time.monotonic() - started), 1
            )
            row.notes["server_rss_mb"] = round(ctx.server_rss() / 1024, 1)
            progress = await self._broadcast("progress")
            row.notes["still_open"] = sum(p["connected"] for p in progress)

    async def _replay(self, sc: Scenario, row: Row) -> None:
        async with self.cluster(row) as ctx:
            session = (await ctx.api.create_session("replay"))["id"]
            started = time.perf_counter()
            await asyncio.to_thread(ctx.bulk_publish, session, sc.events)
            row.notes["insert_events_per_s"] = round(sc.events / (time.perf_counter() - started), 1)
            row.notes["insert_path"] = "manage_script: event_publish(message_created) in one transaction"
            end = await ctx.api.last_event_id(session)
            row.subscribers = sc.extra["runs"]
            row.connected = 0
            cpu_before = ctx.server_cpu()
            runs = []
            for i in range(sc.extra["runs"]):
                host, port = ctx.hostports[i % len(ctx.hostports)]
                spec = Spec(host, port, session, ctx.api_token, last_id=0)
                runs.append(await self.workers[0].call("replay", rpc_timeout=90, spec=spec, end=end, timeout=60))
            cpu_ms = (ctx.server_cpu() - cpu_before) * 1000
            row.connected = sum(1 for r in runs if r["error"] is None)
            row.received = sum(r["received"] for r in runs)
            row.expected = sum(r["expected"] for r in runs)
            row.lost = row.expected - row.received
            row.duplicated = sum(r["duplicated"] for r in runs)
            row.out_of_order = sum(r["out_of_order"] for r in runs)
            times = [r["elapsed"] * 1000 for r in runs if r["elapsed"] is not None]
            row.notes["replay_ms_each"] = [round(t, 1) for t in times]
            row.notes["errors"] = [r["error"] for r in runs if r["error"]][:3]
            if times:
                row.key_time = f"replay {sorted(times)[len(times) // 2]:.0f} ms (median)"
                row.deliveries_per_s = round(row.received / (sum(times) / 1000), 0)
            row.cpu_ms_per_1k = round(cpu_ms / max(1, row.received) * 1000, 1)

    async def _storm(self, sc: Scenario, row: Row) -> None:
        async with self.cluster(row) as ctx:
            session = await ctx.new_session_with_viewers("storm")
            await ctx.warm_up([session])
            opened = await ctx.open_subscribers(row, sc.subs, ctx.specs([session] * sc.subs, viewers=True))
            await self._broadcast("reset_latencies")
            count = int(sc.rate * sc.extra["seconds"])
            before = ctx.snapshot()
            publishing = asyncio.ensure_future(paced_publish(ctx.api, [session], count, sc.rate))
            await asyncio.sleep(sc.extra["drop_at"])
            per_worker = max(1, self.options.connect_concurrency // len(self.workers))
            drops = await self._broadcast("drop_and_reconnect", rpc_timeout=120, concurrency=per_worker, timeout=60)
            row.notes["reconnected"] = sum(d["reconnected"] for d in drops)
            row.notes["reconnect_failed"] = sum(d["failed"] for d in drops)
            row.notes["reconnect_errors"] = [e for d in drops for e in d["errors"]][:3]
            row.notes["all_reconnected_s"] = round(max(d["elapsed"] for d in drops), 3)
            published = await publishing
            end = await ctx.api.last_event_id(session)
            await self._broadcast("set_targets", targets={session: end})
            row.notes["all_caught_up"] = await self.wait_caught_up(opened["opened"])
            await ctx.finish(row, published, before)
            caught = row.extra.pop("catch_up_times", [])
            if caught:
                summary = percentiles([t * 1000 for t in caught])
                row.notes["catch_up_ms"] = summary
                row.key_time = f"all caught up {summary['max'] / 1000:.2f} s"

    async def _tokens(self, sc: Scenario, row: Row) -> None:
        env = {
            "CHORUS_LOCAL_TOKEN_DELAY_MS": str(sc.extra["token_delay_ms"]),
            "CHORUS_REGENERATION_RATE_USER": "100000/minute",
            "CHORUS_REGENERATION_RATE_SESSION": "100000/minute",
        }
        async with self.cluster(row, env) as ctx:
            session = await ctx.new_session_with_viewers("tokens")
            messages = []
            for i in range(sc.extra["regenerations"]):
                body = await ctx.api.post_message(session, f"Question {i}: how should we plan the rollout?", index=i)
                messages.append(body["id"])
            await ctx.warm_up([session])
            opened = await ctx.open_subscribers(row, sc.subs, ctx.specs([session] * sc.subs, viewers=True))
            await self._broadcast("reset_latencies")
            start_id = await ctx.api.last_event_id(session)
            before = ctx.snapshot()
            started = time.time()
            statuses: list[str] = []

            async def regenerate(i: int, message: str) -> None:
                answer = await ctx.api.regenerate(session, message, index=i)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    state = await ctx.api.regeneration(answer["regenerationId"], index=i)
                    if state["status"] in ("completed", "failed", "cancelled"):
                        statuses.append(state["status"])
                        return
                    await asyncio.sleep(0.05)
                statuses.append("timeout")

            await bounded(sc.extra["parallel"], [lambda i=i, m=m: regenerate(i, m) for i, m in enumerate(messages)])
            finished = time.time()
            end = await ctx.api.last_event_id(session)
            await self._broadcast("set_targets", targets={session: end})
            row.notes["all_caught_up"] = await self.wait_caught_up(opened["opened"])
            await ctx.finish(row, Published(started), before)
            row.notes["events_published"] = end - start_id
            row.notes["event_rate_per_s"] = round((end - start_id) / max(1e-9, finished - started), 1)
            row.notes["regenerations"] = {s: statuses.count(s) for s in sorted(set(statuses))}
            row.notes["latency_source"] = "envelope timestamp (server clock, ms resolution)"

    async def _writers(self, sc: Scenario, row: Row) -> None:
        await _writers_body(self, sc, row)

    async def _regenerations(self, sc: Scenario, row: Row) -> None:
        from bench.regenerations import run_regenerations

        await run_regenerations(self, sc, row)

    async def _presence(self, sc: Scenario, row: Row) -> None:
        """Ordinary events to a large session while other users' streams come and go: each
        arrival or departure is a `presence_joined`/`presence_left` frame to every
        subscriber. Run with and without churn to read what presence costs."""
        async with self.cluster(row) as ctx:
            session = await ctx.new_session_with_viewers("presence")
            churners = [f"bench-churn-{i}" for i in range(sc.extra["churn_users"] if sc.extra["churn_rate"] else 0)]
            tokens = await asyncio.to_thread(ctx.cluster.create_users, *churners, timeout=240) if churners else {}
            await bounded(
                8, [lambda n=n, i=i: ctx.api.add_member(session, n, "viewer", index=i) for i, n in enumerate(churners)]
            )
            await ctx.warm_up([session])
            await ctx.open_subscribers(row, sc.subs, ctx.specs([session] * sc.subs, viewers=True))
            stop = asyncio.Event()
            churn = asyncio.ensure_future(
                churn_presence(ctx, session, [tokens[n] for n in churners], sc.extra["churn_rate"],
                               sc.extra["hold_seconds"], stop)
            )  # fmt: skip
            try:
                await ctx.publish_and_measure(row, [session], sc.events, sc.rate, per_event=True)
            finally:
                stop.set()
                stats = await churn
            row.notes["churn"] = stats


async def _writers_body(bench: Bench, sc: Scenario, row: Row) -> None:
    """8 writers back to back: the posts/s two processes take, POST latency, CPU per post."""
    # The per-user post limit (100/s by default) is lifted: this measures the server.
    async with bench.cluster(row, {"CHORUS_MESSAGE_RATE_USER": "10000000/minute"}) as ctx:
        created = await bounded(
            8, [lambda i=i: ctx.api.create_session(f"writer-{i}", index=i) for i in range(sc.sessions)]
        )
        sessions = [s["id"] for s in created]
        await ctx.warm_up(sessions[:1])
        per = sc.subs // sc.sessions
        await ctx.open_subscribers(row, sc.subs, ctx.specs([s for s in sessions for _ in range(per)], viewers=False))

        async def publish() -> PublishResult:
            return await closed_loop_publish(ctx.api, sessions, sc.events, sc.extra["writers"])

        await ctx.publish_and_measure(row, sessions, sc.events, 0, per_event=True, publisher=publish)
        summary = row.notes["publish"]
        row.key_time = f"{summary['achieved_rate']:.0f} posts/s, POST p50 {summary['post_ms_p50']} ms"


async def churn_presence(
    ctx: Context, session: str, tokens: list[str], rate: float, hold: float, stop: asyncio.Event
) -> dict:
    """Open a stream as the next user every 1/rate s, hold it `hold` s, close it; until
    `stop`. Returns how many came and went, and how many failed to open."""
    stats = {"opened": 0, "failed": 0}
    if not rate or not tokens:
        return stats

    async def visit(client: httpx.AsyncClient, token: str) -> None:
        try:
            async with client.stream(
                "GET", f"/sse/sessions/{session}/", headers={"Authorization": f"Token {token}"}
            ) as response:
                if response.status_code != 200:
                    stats["failed"] += 1
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event: connection"):
                        break
                stats["opened"] += 1
                await asyncio.sleep(hold)
        except httpx.HTTPError:
            stats["failed"] += 1

    clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in ctx.cluster.urls]
    visits: set[asyncio.Task] = set()
    try:
        index = 0
        while not stop.is_set():
            task = asyncio.ensure_future(visit(clients[index % len(clients)], tokens[index % len(tokens)]))
            visits.add(task)
            task.add_done_callback(visits.discard)
            index += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
        if visits:
            await asyncio.wait(visits, timeout=hold + 10)
    finally:
        for client in clients:
            await client.aclose()
    return stats


@dataclass(frozen=True)
class Snapshot:
    server_cpu: float
    client_cpu: float
    at: float


@dataclass
class Published:
    """When publishing started, for phases that publish other than by `paced_publish`."""

    started: float
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return self.info


_LOG_NOISE = re.compile(r"^\d{4}-\d\d-\d\d \S+ |\b[0-9a-f]{8}-[0-9a-f-]{27}\b|\[\d+\]|\d+")


def server_log_errors(cluster: Cluster | BareHubCluster, limit: int = 5) -> dict[str, int]:
    """The most frequent ERROR/CRITICAL/exception lines of the servers' logs, normalised
    (timestamps, ids and numbers blanked), with their counts."""
    found: Counter[str] = Counter()
    for index in range(len(cluster.logs)):
        try:
            text = cluster.log_text(index)
        except OSError:
            continue
        for line in text.splitlines():
            if "ERROR" in line or "CRITICAL" in line or line.startswith(("psycopg.", "django.db.")):
                found[_LOG_NOISE.sub("#", line.strip())[:200]] += 1
    return dict(found.most_common(limit))


class Context:
    """One scenario's cluster, API client and user tokens."""

    def __init__(self, bench: Bench, cluster: Cluster | BareHubCluster, api: Api, tokens: dict[str, str]) -> None:
        self.bench = bench
        self.cluster = cluster
        self.api = api
        self.tokens = tokens
        self.api_token = tokens["bench-owner"]
        self.viewer_tokens = [tokens[f"bench-viewer-{i}"] for i in range(VIEWERS)]
        self.hostports = [(urlparse(u).hostname or "127.0.0.1", urlparse(u).port or 80) for u in cluster.urls]

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.procs]

    def server_cpu(self) -> float:
        return procstats.total_cpu(self.server_pids())

    def snapshot(self) -> Snapshot:
        return Snapshot(self.server_cpu(), procstats.total_cpu(self.bench.client_pids()), time.monotonic())

    def server_rss(self) -> int:
        return procstats.total_rss(self.server_pids())

    def kb_per_stream(self, before_kb: int, streams: int) -> float | None:
        return round((self.server_rss() - before_kb) / streams, 1) if streams else None

    def specs(self, sessions: Sequence[str], viewers: bool) -> list[Spec]:
        """Subscriber i connects to server i mod N, as a viewer (or the owner)."""
        out = []
        for i, session in enumerate(sessions):
            host, port = self.hostports[i % len(self.hostports)]
            token = self.viewer_tokens[i % VIEWERS] if viewers else self.api_token
            out.append(Spec(host, port, session, token))
        return out

    def bulk_publish(self, session: str, count: int) -> None:
        """Store `count` message_created events fast, through `realtime.publish.event_publish`
        in one transaction. It runs in a sync_to_async thread under one event loop, as in a
        server, so the broadcasts after commit share one channel-layer connection (plain
        sync code would get a new event loop, and a new Redis connection, per broadcast)."""
        self.cluster.manage_script(
            "import time, uuid\n"
            "from asgiref.sync import async_to_sync, sync_to_async\n"
            "from django.db import transaction\n"
            "from realtime import events\n"
            "from realtime.publish import event_publish\n"
            "def bulk():\n"
            "    with transaction.atomic():\n"
            f"        for i in range({count}):\n"
            "            payload = events.message_created(message_id=str(uuid.uuid4()), role='user',\n"
            "                                             author='bench-owner', content=f'bench@{time.time():.6f}')\n"
            f"            event_publish(session_id={session!r}, payload=payload)\n"
            "async def main():\n"
            "    await sync_to_async(bulk)()\n"
            "async_to_sync(main)()\n",
            timeout=180,
        )

    async def new_session_with_viewers(self, title: str) -> str:
        session = (await self.api.create_session(title))["id"]
        for i in range(VIEWERS):
            await self.api.add_member(session, f"bench-viewer-{i}", "viewer", index=i)
        return session

    async def warm_up(self, sessions: Sequence[str]) -> None:
        """A few streams on every server and a few events, then closed: first-use costs
        (imports, the channel layer's connections, thread pools) stay out of the figures."""
        bench = self.bench
        specs = self.specs([s for s in sessions for _ in range(2 * len(self.hostports))], viewers=False)
        await bench.open(specs)
        for i in range(3):
            await self.api.post_message(sessions[0], stamp(), index=i)
        await asyncio.sleep(0.3)
        await bench._broadcast("close_all")
        await asyncio.sleep(0.5)

    async def open_subscribers(self, row: Row, wanted: int, specs: Sequence[Spec]) -> dict:
        """Open `specs`, then record connect times, the server CPU per stream opened and,
        after a settling second, the server memory per open stream."""
        rss_before, cpu_before = self.server_rss(), self.server_cpu()
        opened = await self.bench.open(specs)
        cpu_ms = (self.server_cpu() - cpu_before) * 1000
        self.note_open(row, wanted, opened)
        if opened["opened"]:
            row.notes["server_cpu_ms_per_stream_open"] = round(cpu_ms / opened["opened"], 2)
        await asyncio.sleep(self.bench.options.settle)
        row.kb_per_stream = self.kb_per_stream(rss_before, opened["opened"])
        return opened

    def note_open(self, row: Row, wanted: int, opened: dict) -> None:
        row.subscribers = wanted
        row.connected = opened["opened"]
        row.notes["connect_all_s"] = opened["seconds"]
        row.notes["connect_ms"] = opened["connect_ms"]
        if opened["failed"]:
            row.notes["connect_failed"] = opened["failed"]
            row.notes["connect_errors"] = opened["errors"]
        row.key_time = f"connect {opened['seconds']:.2f} s"

    async def publish_cost(self, session: str, events: int, rate: float) -> float:
        """Server CPU ms per event published with nobody subscribed: the REST publish
        path alone (auth, transaction, insert, broadcast to Redis)."""
        before = self.server_cpu()
        published = await paced_publish(self.api, [session], events, rate)
        await asyncio.sleep(0.2)
        return (self.server_cpu() - before) * 1000 / max(1, published.ok)

    def split_cpu(self, row: Row, publish_ms_per_event: float) -> None:
        """Server CPU per 1,000 deliveries, minus what publishing itself costs."""
        published = (row.notes.get("publish") or {}).get("ok", 0)
        row.notes["publish_cpu_ms_per_event_alone"] = round(publish_ms_per_event, 2)
        if row.received:
            rest = row.extra["server_cpu_ms"] - published * publish_ms_per_event
            row.notes["delivery_only_cpu_ms_per_1k"] = round(max(0.0, rest) / row.received * 1000, 1)

    async def publish_and_measure(
        self,
        row: Row,
        sessions: Sequence[str],
        events: int,
        rate: float,
        per_event: bool = False,
        publisher: Callable[[], Awaitable[PublishResult]] | None = None,
    ) -> None:
        bench = self.bench
        # The newest ids before publishing, read outside the measured window: each post
        # then adds exactly one event, so the targets need no more requests (500 reads of
        # a session's detail had been counted as publishing cost in sessions-500x2).
        starts = await bounded(
            16, [lambda s=s, i=i: self.api.last_event_id(s, index=i) for i, s in enumerate(sessions)]
        )
        await bench._broadcast("reset_latencies")
        before = self.snapshot()
        if publisher is None:
            published = await paced_publish(self.api, sessions, events, rate)
        else:
            published = await publisher()
        bench.log(f"   published {published.ok}/{events} at {published.summary()['achieved_rate']}/s")
        if published.errors:  # a failed post may still have stored its event: ask
            ends = await bounded(
                16, [lambda s=s, i=i: self.api.last_event_id(s, index=i) for i, s in enumerate(sessions)]
            )
        else:
            ends = [start + published.per_session.get(s, 0) for s, start in zip(sessions, starts, strict=True)]
        await bench._broadcast("set_targets", targets=dict(zip(sessions, ends, strict=True)))
        row.notes["all_caught_up"] = await bench.wait_caught_up(row.connected)
        await self.finish(row, published, before)
        if per_event:
            row.notes["server_cpu_ms_per_event"] = round(row.extra["server_cpu_ms"] / max(1, published.ok), 3)

    async def finish(self, row: Row, published: PublishResult | Published, before: Snapshot) -> None:
        """Read the subscribers' report and the CPU used since `before` into `row`."""
        bench = self.bench
        after = self.snapshot()
        cpu_ms = (after.server_cpu - before.server_cpu) * 1000
        wall = max(1e-9, after.at - before.at)
        merged = await bench.collect()
        row.received = merged["received"]
        row.expected = merged["expected"]
        row.lost = merged["expected"] - merged["received"]
        row.duplicated = merged["duplicated"]
        row.out_of_order = merged["out_of_order"]
        window = max(1e-9, merged["last_rx"] - published.started)
        row.deliveries_per_s = round(row.received / window, 0)
        row.latency = percentiles(merged["latencies"])
        row.cpu_ms_per_1k = round(cpu_ms / max(1, row.received) * 1000, 1)
        row.extra["server_cpu_ms"] = round(cpu_ms, 1)
        row.extra["catch_up_times"] = merged["catch_up_times"]
        row.notes["publish"] = published.summary()
        row.notes["delivery_window_s"] = round(window, 2)
        row.notes["server_cpu_pct"] = round((after.server_cpu - before.server_cpu) / wall * 100, 1)
        row.notes["client_cpu_pct_per_process"] = round(
            (after.client_cpu - before.client_cpu) / wall * 100 / max(1, len(bench.workers)), 1
        )
        for key in (
            "reconnects",
            "ended_by_server",
            "history_truncated",
            "not_caught_up_after_drop",
            "subs_with_loss",
            "subs_silent",
        ):
            if merged[key]:
                row.notes[key] = merged[key]
