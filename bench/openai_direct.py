"""Measure the direct stream (/v1/chat/completions): time to first token, tokens per
second and server CPU per streamed chunk, through Chorus against the provider directly.

    .venv/bin/python -m bench.openai_direct [--runs 30] [--chunks 2000]

It starts one uvicorn process of Chorus (SQLite in a temporary directory, so it needs no
PostgreSQL or Redis) per provider: `local` with no token delay, and `openai` pointed at
the project's fake upstream (tests/sessions_app/fake_openai.py, `count-N` model) served
in a process of its own. The same light client (httpx, reading the SSE bytes itself) reads the
provider directly and through Chorus. Server CPU is read from /proc for the server
process over the measured calls only. Nothing here is a test; numbers vary with the
machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sessions_app.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

MESSAGES = [{"role": "user", "content": "Plan the launch of the new product for the whole team"}]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_CONTENT = re.compile(rb'"content": ?"(?!")')  # a non-empty delta.content, however spaced


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Server:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "DJANGO_SECRET_KEY": "bench",
            "CHORUS_LOG_LEVEL": "WARNING",
            "CHORUS_COMPLETIONS_RATE_USER": "",
            "CHORUS_COMPLETIONS_MAX_CONCURRENT": "0",
            "CHORUS_COMPLETIONS_MAX_TOKENS": "1000000",
            "CHORUS_LOCAL_TOKEN_DELAY_MS": "0",
            **env,
        }
        self.env.pop("REDIS_URL", None)
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def token(self) -> str:
        code = (
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "u, _ = get_user_model().objects.get_or_create(username='bench')\n"
            "print(Token.objects.get_or_create(user=u)[0].key)\n"
        )
        return self.manage("shell", "-c", code).strip().splitlines()[-1]

    def start(self) -> Server:
        self.manage("migrate", "--noinput", "-v0")
        command = [
            sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port",
            str(self.port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


async def one_call(client: httpx.AsyncClient, url: str, headers: dict, body: dict) -> tuple[float, float, int]:
    """(time to first content chunk, time from first to last chunk, content chunks)."""
    started = time.perf_counter()
    first = last = None
    chunks = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        async for data in response.aiter_bytes():
            count = len(_CONTENT.findall(data))
            if count:
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += count
    return (first - started), (last - first), chunks


async def measure(url: str, headers: dict, body: dict, runs: int, pid: int | None) -> dict:
    async with httpx.AsyncClient(timeout=60) as client:
        await one_call(client, url, headers, body)  # warm-up (imports, connections)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        results = [await one_call(client, url, headers, body) for _ in range(runs)]
        cpu = (cpu_seconds(pid) - cpu_before) if pid else None
    ttft = [r[0] * 1000 for r in results]
    chunks = sum(r[2] for r in results)
    stream_time = sum(r[1] for r in results)
    return {
        "ttft_ms_p50": statistics.median(ttft),
        "ttft_ms_p90": sorted(ttft)[int(len(ttft) * 0.9) - 1],
        "tokens_per_s": chunks / stream_time if stream_time else float("inf"),
        "chunks": chunks,
        "cpu_us_per_chunk": cpu / chunks * 1e6 if cpu is not None else None,
    }


async def local_direct(runs: int) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from sessions_app.providers import Turn
    from sessions_app.providers.local import LocalProvider

    provider = LocalProvider(token_delay=0, thought_steps=0)
    turns = [Turn("user", MESSAGES[0]["content"])]
    ttft, chunks, stream_time = [], 0, 0.0
    for _ in range(runs):
        started = time.perf_counter()
        first = last = None
        async for _chunk in provider.stream(turns):
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
        ttft.append((first - started) * 1000)
        stream_time += last - first
    return {
        "ttft_ms_p50": statistics.median(ttft),
        "ttft_ms_p90": sorted(ttft)[int(len(ttft) * 0.9) - 1],
        "tokens_per_s": chunks / stream_time,
        "chunks": chunks,
        "cpu_us_per_chunk": None,
    }


def show(name: str, result: dict) -> None:
    cpu = f"{result['cpu_us_per_chunk']:.0f}" if result["cpu_us_per_chunk"] is not None else "-"
    print(
        f"| {name} | {result['ttft_ms_p50']:.2f} | {result['ttft_ms_p90']:.2f} | "
        f"{result['tokens_per_s']:,.0f} | {result['chunks']} | {cpu} |"
    )


async def serve_fake() -> None:
    """The fake upstream, in its own process (sharing the client's loop would delay the
    client's reads behind the fake's writes): prints its base URL, serves until killed."""
    async with FakeOpenAI() as upstream:
        print(upstream.base_url, flush=True)
        await asyncio.Event().wait()


class FakeProcess:
    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.openai_direct", "--serve-fake"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        return self.proc.stdout.readline().strip()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per call from the fake upstream")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        return await serve_fake()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print("| path | TTFT p50 (ms) | TTFT p90 (ms) | tokens/s | chunks | server CPU µs/chunk |")
    print("| --- | --- | --- | --- | --- | --- |")
    show("local provider, called directly", await local_direct(args.runs))
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), {"CHORUS_LLM_PROVIDER": "local"}).start()
        try:
            headers = {"Authorization": f"Bearer {server.token()}"}
            body = {"model": "chorus-local", "messages": MESSAGES, "stream": True}
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            show("local provider, through Chorus", await measure(url, headers, body, args.runs, server.proc.pid))
        finally:
            server.stop()
    with FakeProcess() as upstream_url:
        body = {"model": f"count-{args.chunks}", "messages": MESSAGES, "stream": True}
        direct = await measure(upstream_url + "/chat/completions", {}, body, args.runs, None)
        show(f"fake upstream ({args.chunks} chunks), called directly", direct)
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(
                Path(tmp),
                {
                    "CHORUS_LLM_PROVIDER": "openai",
                    "CHORUS_LLM_BASE_URL": upstream_url,
                    "CHORUS_LLM_MODEL": f"count-{args.chunks}",
                },
            ).start()
            try:
                headers = {"Authorization": f"Bearer {server.token()}"}
                url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
                through = await measure(url, headers, body, args.runs, server.proc.pid)
                show(f"fake upstream ({args.chunks} chunks), through Chorus", through)
            finally:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
