"""Server processes of a peer, with what the scenarios use of `tests.support.servers.Cluster`
(start, stop, urls, procs, logs, create_users), so a scenario runs on either unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import redis

from tests.support.servers import ROOT, free_port, stop_processes

PEERS = ("bare-hub",)
# Scenario kinds a peer can run: live events posted over REST and read over SSE.
PEER_KINDS = frozenset({"fanout", "sessions", "writers", "idle"})
# Why the others do not apply (the bench says so instead of running them).
PEER_SKIPPED = {
    "replay": "replays stored events: the bare hub stores none",
    "storm": "reconnects with Last-Event-ID and needs the replay: the bare hub stores no events",
    "tokens": "streams regenerations of a provider: the bare hub has none",
    "regenerations": "streams regenerations of a provider: the bare hub has none",
    "presence": "measures presence frames: the bare hub sends none",
}


@dataclass
class BareHubCluster:
    """N processes of bench/peers/bare_hub.py on the real Redis, under the bench's server
    (uvicorn with uvloop and httptools, or daphne). Their Redis keys and channels carry a
    prefix of their own, deleted at `stop()`.

    The id counters live in Redis database `counter_db`, not the channel layer's: test
    suites that share this Redis empty database 0 (`cache.clear()` is a FLUSHDB), which
    restarted the counters mid-run (ids handed out twice). Pub/sub ignores databases."""

    redis_url: str
    server: str = "uvicorn"
    processes: int = 2
    env: dict[str, str] = field(default_factory=dict)
    counter_db: int = 15
    prefix: str = field(default_factory=lambda: f"bare-hub-{uuid.uuid4().hex[:10]}")
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def counter_url(self) -> str:
        return urlunparse(urlparse(self.redis_url.split(",")[0].strip())._replace(path=f"/{self.counter_db}"))

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def command(self, port: int) -> list[str]:
        app = "bench.peers.bare_hub:app"
        if self.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--timeout-graceful-shutdown", "3",
            ]  # fmt: skip
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]

    def start(self) -> BareHubCluster:
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "BARE_HUB_COUNTER_URL": self.counter_url,
            "BARE_HUB_PREFIX": self.prefix,
            **self.env,
        }
        for _ in range(self.processes):
            port = free_port()
            while port in self.ports:
                port = free_port()
            log = Path(tempfile.gettempdir()) / f"bare-hub-{self.server}-{port}.log"
            with open(log, "wb") as sink:
                proc = subprocess.Popen(self.command(port), cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
            self.ports.append(port)
            self.procs.append(proc)
            self.logs.append(log)
        for index in range(self.processes):
            self._wait_ready(index)
        return self

    def _wait_ready(self, index: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[index].poll() is not None:
                raise RuntimeError(f"bare hub {index} exited: {self.log_text(index)[-3000:]}")
            try:
                if httpx.get(self.urls[index] + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"bare hub {index} not ready after {timeout}s")

    def stop(self) -> None:
        stop_processes(self.procs)
        client = redis.Redis.from_url(self.counter_url)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()

    def log_text(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def create_users(self, *names: str, timeout: float = 60, **_: object) -> dict[str, str]:
        """The peer has no users: a name's token is the name (it becomes the author)."""
        return {name: name for name in names}

    def manage_script(self, code: str, timeout: float = 60) -> str:
        raise NotImplementedError("the bare hub has no database: this scenario does not apply to it")
