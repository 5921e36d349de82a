"""Real Chorus server processes for cross-process tests (and the benchmark).

A `Cluster` is N ASGI server processes (uvicorn or daphne) sharing one fresh PostgreSQL
database and the real Redis. Nothing is mocked: tests talk to it over HTTP only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(server_url: str, name: str) -> str:
    parsed = urlparse(server_url)
    return urlunparse(parsed._replace(path="/" + name))


def _admin(server_url: str, sql: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql)


_template_ready: dict[str, str] = {}


def create_database(postgres_url: str) -> str:
    """A fresh, migrated database (copied from a template migrated once per test run)."""
    template = _template_ready.get(postgres_url)
    if template is None:
        template = f"chorus_tpl_{uuid.uuid4().hex[:10]}"
        _admin(postgres_url, f'CREATE DATABASE "{template}"')
        env = {**os.environ, "DATABASE_URL": database_url(postgres_url, template)}
        env.pop("REDIS_URL", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
        )
        _template_ready[postgres_url] = template
    name = f"chorus_xp_{uuid.uuid4().hex[:10]}"
    _admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def drop_database(postgres_url: str, name: str) -> None:
    _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_templates() -> None:
    for postgres_url, template in list(_template_ready.items()):
        drop_database(postgres_url, template)
        _template_ready.pop(postgres_url)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM them all, then wait for each (SIGKILL after 10 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Cluster:
    postgres_url: str
    redis_url: str
    server: str = "uvicorn"  # or "daphne"
    processes: int = 2
    env: dict[str, str] = field(default_factory=dict)
    database: str = ""
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    # The server processes reach PostgreSQL through this port when set (a fault-injecting
    # proxy, tests/support/faults.py); the test itself still connects directly.
    database_port: int | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.server_database_url(),
            "REDIS_URL": self.redis_url,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "cross-process-test-key",
            "CHORUS_LOG_LEVEL": "WARNING",
            # Throttle counters of one cluster never meet another's in the shared Redis.
            "CHORUS_CACHE_KEY_PREFIX": self.database,
            **self.env,
        }

    def server_database_url(self) -> str:
        url = database_url(self.postgres_url, self.database)
        if self.database_port is None:
            return url
        parsed = urlparse(url)
        return urlunparse(parsed._replace(netloc=parsed.netloc.rsplit(":", 1)[0] + f":{self.database_port}"))

    def command(self, port: int) -> list[str]:
        if self.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--timeout-graceful-shutdown", "3",
                # Longer than uvicorn's 5 s: a client's pooled connection that sat idle while
                # the bench opened 1,000 streams was closed under its next request (ReadError).
                "--timeout-keep-alive", "75",
            ]  # fmt: skip
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]

    def start(self) -> Cluster:
        self.database = create_database(self.postgres_url)
        # Launched together, then awaited: each spends seconds importing Django.
        indexes = [self.start_process(wait=False) for _ in range(self.processes)]
        for index in indexes:
            self._wait_ready(index)
        return self

    def start_process(self, wait: bool = True) -> int:
        """Start one more server process; returns its index (once it is ready, unless
        `wait` is false)."""
        self.logs.append(Path(os.devnull))
        self.ports.append(0)
        self.procs.append(None)  # type: ignore[arg-type]
        index = len(self.procs) - 1
        self._launch(index)
        if wait:
            self._wait_ready(index)
        return index

    def _launch(self, index: int) -> None:
        port = free_port()
        while port in self.ports:  # processes launched together must not share a port
            port = free_port()
        proc, log = self._spawn(port, append=False)
        self.logs[index], self.ports[index], self.procs[index] = log, port, proc

    def _spawn(self, port: int, *, append: bool) -> tuple[subprocess.Popen, Path]:
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one
        # would block the server's logging. A restarted process appends to its log.
        log = Path(tempfile.gettempdir()) / f"chorus-{self.server}-{port}.log"
        with open(log, "ab" if append else "wb") as sink:
            proc = subprocess.Popen(
                self.command(port), cwd=ROOT, env=self.process_env(), stdout=sink, stderr=subprocess.STDOUT
            )
        return proc, log

    def stop_process(self, index: int, timeout: float = 15) -> None:
        """SIGTERM one process (a deploy or restart) and wait until it has exited."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart_process(self, index: int) -> None:
        """Start a stopped (or killed) process again on the same port, so that clients
        connected to that address reconnect to it; returns once it is ready."""
        if self.procs[index].poll() is None:
            raise RuntimeError(f"server {index} is still running; stop it first")
        proc, log = self._spawn(self.ports[index], append=True)
        self.procs[index] = proc
        self.logs[index] = log
        self._wait_ready(index)

    def _wait_ready(self, index: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        relaunched = False
        while time.monotonic() < deadline:
            if self.procs[index].poll() is not None:
                if not relaunched and "already in use" in self.log_text(index):
                    # Another process took the free port before the server bound it.
                    relaunched = True
                    self._launch(index)
                    continue
                raise RuntimeError(f"server {index} exited: {self.log_text(index)[-3000:]}")
            try:
                if httpx.get(self.urls[index] + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server {index} not ready after {timeout}s")

    def kill(self, index: int) -> None:
        """SIGKILL one process, as a crash would."""
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait(10)

    def stop(self) -> None:
        stop_processes(self.procs)
        if self.database:
            drop_database(self.postgres_url, self.database)

    def log_text(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def manage_script(self, code: str, timeout: float = 60) -> str:
        """Run Python with Django set up against the cluster's database; returns stdout."""
        prelude = (
            "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup()\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", prelude + code],
            cwd=ROOT, env=self.process_env(), capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip
        return result.stdout

    def create_users(
        self, *names: str, staff: tuple[str, ...] = (), password: str = "pw", timeout: float = 60
    ) -> dict[str, str]:
        """Users with API tokens: {username: token}. They can also sign in to the web
        app with `password`."""
        code = (
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from sessions_app.tokens import token_issue\n"
            f"names = {list(names)!r}; staff = {list(staff)!r}; password = {password!r}\n"
            "out = {}\n"
            "for n in names:\n"
            "    u, _ = get_user_model().objects.get_or_create(username=n, defaults={'is_staff': n in staff})\n"
            "    u.set_password(password); u.save()\n"
            "    out[n] = token_issue(user=u)[1]\n"
            "print(json.dumps(out))\n"
        )
        return json.loads(self.manage_script(code, timeout=timeout).strip().splitlines()[-1])
