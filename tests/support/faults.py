"""Real faults for the fault tests: a private redis-server that can be restarted or frozen,
and a TCP proxy that can stall or cut the connections that pass through it.

Nothing here pretends a fault happened: a restarted Redis loses every connection and
subscription, a stalled proxy holds bytes the way a hung network or server does (the
sender's kernel still accepts them), and a cut drops every connection at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.servers import free_port


def wait_port(port: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A redis-server of our own on a free port (the shared one on 6379 is left alone):
    no persistence, so a restart loses everything, as a fresh failover would."""

    def __init__(self, *options: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed")
        self.executable = executable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chorus-redis-"))
        self.proc: subprocess.Popen | None = None
        self.options = list(options)  # more redis-server options, e.g. "--requirepass", "secret"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", "", *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop (every client connection breaks), stay down `down_for` seconds, start
        again on the same port with nothing in it."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and the kernel keeps accepting bytes, but
        nothing answers, as on a hung host."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """An asyncio TCP proxy on its own thread, between server processes and a backend.

    `stall()` stops forwarding in both directions (connections stay open: a client's
    writes are accepted by the kernel and its reads wait, as when the backend hangs);
    `resume()` forwards what was held. `cut()` drops every connection at once, as a
    backend restart does. `refuse(True)` closes new connections as soon as they arrive.
    """

    def __init__(self, backend_host: str, backend_port: int) -> None:
        self.backend = (backend_host, backend_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="chorus-test-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        try:
            backend_reader, backend_writer = await asyncio.open_connection(*self.backend)
        except OSError:
            writer.close()
            return
        pair = (writer, backend_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, backend_writer), self._pipe(backend_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _call(self, func) -> None:
        async def run() -> None:
            func()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def stall(self) -> None:
        self._call(self._flowing.clear)

    def resume(self) -> None:
        self._call(self._flowing.set)

    def refuse(self, refusing: bool) -> None:
        self._refusing = refusing

    def cut(self) -> None:
        def drop() -> None:
            for pair in list(self._pairs):
                for writer in pair:
                    writer.transport.abort()
            self._pairs.clear()

        self._call(drop)

    def connection_count(self) -> int:
        return len(self._pairs)

    def close(self) -> None:
        def shutdown() -> None:
            self._flowing.set()
            if self._server is not None:
                self._server.close()
            for pair in list(self._pairs):
                for writer in pair:
                    writer.transport.abort()

        try:
            self._call(shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
