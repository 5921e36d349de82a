"""`python -m bench` (`make bench BENCH_ARGS="..."`): run the scenarios, print one table,
write bench/results/<time>-<server>.json. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import procstats
from bench.client import raise_nofile_limit
from bench.peers.cluster import PEER_KINDS, PEER_SKIPPED, PEERS
from bench.report import comparison_text, table, write_json
from bench.scenarios import DEFAULT, QUICK, Bench, Options


def git_state() -> dict:
    """The commit measured, and the files changed on top of it (others edit the tree)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        status = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True)
    except OSError:
        return {}
    return {"commit": head.stdout.strip(), "modified": [line[3:] for line in status.stdout.splitlines()]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [s.name for s in DEFAULT]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(names)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run in about a minute")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument("--processes", type=int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--client-procs", type=int, default=0, help="subscriber processes (default: 1 up to 1,000 subscribers, else 2)"
    )
    parser.add_argument("--connect-concurrency", type=int, default=200, help="connections opening at once")
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server processes (repeat), e.g. DJANGO_CONN_MAX_AGE=0",
    )
    parser.add_argument(
        "--token-parallel",
        type=int,
        default=0,
        metavar="N",
        help="regenerations running at once in tokens-1000 (default 2; 1 means one publisher at a time)",
    )
    parser.add_argument(
        "--peer",
        choices=PEERS,
        default="",
        help="also run each scenario against this comparator, right after Chorus, and print the ratios "
        "(bench/README.md, 'The bare-hub peer')",
    )
    parser.add_argument("--peer-only", action="store_true", help="run the scenarios against the peer alone")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.peer_only and not args.peer:
        args.peer = PEERS[0]
    wanted = [n.strip() for item in args.scenario for n in item.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(names)}")
    args.wanted = wanted
    try:
        args.server_env = dict(item.split("=", 1) for item in args.server_env)
    except ValueError:
        parser.error("--server-env takes KEY=VALUE")
    return args


async def run(args: argparse.Namespace) -> int:
    catalogue = QUICK if args.quick else DEFAULT
    scenarios = [s for s in catalogue if not args.wanted or s.name in args.wanted]
    if args.token_parallel:
        scenarios = [
            replace(s, extra={**s.extra, "parallel": args.token_parallel}) if s.kind == "tokens" else s
            for s in scenarios
        ]
    options = Options(
        server=args.server,
        processes=args.processes,
        client_procs=args.client_procs,
        connect_concurrency=args.connect_concurrency,
        postgres_url=args.postgres,
        redis_url=args.redis,
        server_env=args.server_env,
    )
    nofile = raise_nofile_limit()  # before the servers start: they inherit it
    # The servers get their own key from the Cluster; this one quiets the migrate step.
    os.environ.setdefault("DJANGO_SECRET_KEY", "chorus-bench-only")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    meta = {
        "server": args.server,
        "peer": args.peer,
        "peer_only": args.peer_only,
        "processes": args.processes,
        "quick": args.quick,
        "server_env": args.server_env,
        "git": git_state(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": procstats.cpu_model(),
            "python": platform.python_version(),
            "loadavg_at_start": procstats.loadavg(),
            "nofile": nofile,
        },
    }
    log(
        f"chorus bench: {len(scenarios)} scenario(s), {args.processes} {args.server} process(es), "
        f"{os.cpu_count()} cpus, load {meta['machine']['loadavg_at_start']}, nofile {nofile}"
    )
    bench = Bench(options, log)
    rows = []
    skipped = []
    try:
        for scenario in scenarios:
            # Chorus first, then the peer at once: the two figures are taken minutes apart.
            targets = [] if args.peer_only else ["chorus"]
            if args.peer and scenario.kind in PEER_KINDS:
                targets.append(args.peer)
            elif args.peer:
                skipped.append(f"{scenario.name} on {args.peer}: {PEER_SKIPPED.get(scenario.kind, 'does not apply')}")
                log(f"-- {scenario.name}: skipped on {args.peer} ({PEER_SKIPPED.get(scenario.kind, '')})")
            for target in targets:
                on = "" if target == "chorus" else f" [on {target}]"
                log(f"-- {scenario.name}{on}: {scenario.describe()}")
                row = await bench.run(scenario, target)
                rows.append(row)
                log(table([row]).splitlines()[2] + f"  [{row.notes.get('wall_seconds')} s]")
    finally:
        bench.stop()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta["loadavg_at_end"] = procstats.loadavg()
    meta["skipped"] = skipped
    path = write_json(rows, meta)
    git = meta["git"]
    peer = f", peer {args.peer}{' only' if args.peer_only else ''}" if args.peer else ""
    print(
        f"\nChorus bench: {args.server} x{args.processes}{peer}, {os.cpu_count()} cpus, quick={args.quick}, "
        f"commit {git.get('commit', '?')}{' + local changes' if git.get('modified') else ''}, "
        f"load {meta['machine']['loadavg_at_start']} -> {meta['loadavg_at_end']}"
    )
    print(table(rows))
    for row in rows:
        if row.target == "chorus" or args.peer_only:
            print(f"  {row.scenario}: {row.description}; client processes: {row.notes.get('client_processes')}")
    comparison = comparison_text(rows)
    if comparison:
        print("\n" + comparison)
    for line in skipped:
        print(f"  skipped {line}")
    print(f"\nfull results: {path}")
    return 1 if any(r.error for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for scenario in DEFAULT:
            peer = "" if scenario.kind in PEER_KINDS else "  (not on the bare-hub peer)"
            print(f"{scenario.name:20} {scenario.describe()}{peer}")
        return 0
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
