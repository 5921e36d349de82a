"""The light SSE subscriber and the worker processes that host thousands of them.

A subscriber is an `asyncio.Protocol` on a raw TCP connection: it writes one hand-made
HTTP/1.1 GET, parses the response head, decodes chunked transfer encoding and splits SSE
frames on blank lines. A Protocol rather than `asyncio.open_connection` streams because
the callback gets the bytes directly: no StreamReader buffer, no future and no coroutine
resumption per read, which matters at 60,000 frames a second in one Python process.

Per frame it reads only what the benchmark needs: the `id:` line, and the publish time,
found by a byte search for the `bench@<unix time>` marker the publisher puts in message
content (or, for events the server writes itself, such as regeneration progress, the
envelope's `timestamp`). Every subscriber keeps a bitmap of the ids it received, so lost,
duplicated and out-of-order events are exact.

Subscribers live in worker processes (`WorkerHandle` starts one and talks to it over a
pipe), so the publishing process keeps its own core share and its pacing stays precise.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import random
import re
import resource
import time
import traceback
from array import array
from dataclasses import dataclass

MARKER = b"bench@"
_STAMP = re.compile(rb"[0-9]+\.[0-9]+")
_REGENERATED = b'"type":"message_regenerated"'
_TIMESTAMP_KEY = b'"timestamp":"'
RECONNECT_DELAY = 0.5  # seconds; browsers wait `retry:` (3 s), the benchmark wants the figure sooner


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class Spec:
    """Where one subscriber connects, as whom, and from which event id."""

    host: str
    port: int
    session: str
    token: str
    last_id: int | None = None


class Subscriber:
    """One logical SSE client; survives reconnects (its received-id bitmap carries over)."""

    __slots__ = (
        "caught_up_at",
        "connect_time",
        "connected",
        "contig",
        "count",
        "drop_time",
        "dups",
        "ended",
        "history_truncated",
        "last_rx",
        "latencies",
        "manual_close",
        "max_id",
        "ooo",
        "protocol",
        "reconnects",
        "seen",
        "spec",
        "start_id",
        "waiter",
    )

    def __init__(self, spec: Spec, latencies: array) -> None:
        self.spec = spec
        self.latencies = latencies
        self.seen = bytearray(64)
        self.max_id = 0
        self.contig = 0
        self.count = 0
        self.dups = 0
        self.ooo = 0
        self.start_id: int | None = spec.last_id
        self.connected = False
        self.connect_time = 0.0
        self.reconnects = 0
        self.ended = 0  # streams the server ended (final chunk or connection lost)
        self.history_truncated = 0
        self.manual_close = False
        self.protocol: StreamProtocol | None = None
        self.drop_time: float | None = None
        self.caught_up_at: float | None = None
        self.waiter: tuple[int, asyncio.Future] | None = None
        self.last_rx = 0.0
        if spec.last_id is not None:
            self.contig = self.max_id = spec.last_id

    def request(self, last_id: int | None) -> bytes:
        lines = [
            f"GET /sse/sessions/{self.spec.session}/ HTTP/1.1",
            f"Host: {self.spec.host}:{self.spec.port}",
            f"Authorization: Token {self.spec.token}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if last_id is not None:
            lines.append(f"Last-Event-ID: {last_id}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def connect(self, last_id: int | None, timeout: float) -> float:  # noqa: ASYNC109
        """Open the stream and wait for its `connection` event; returns seconds taken."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        started = time.perf_counter()
        self.manual_close = False
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                lambda: StreamProtocol(self, ready, last_id), self.spec.host, self.spec.port
            )
            self.protocol = protocol
            try:
                await ready
            except BaseException:
                transport.abort()
                raise
        self.connected = True
        self.connect_time = time.perf_counter() - started
        return self.connect_time

    def close(self) -> None:
        self.manual_close = True
        self.connected = False
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abort()
        self.protocol = None

    def resume(self) -> None:
        """Reconnect after a `close()`, with the last id seen (the soak's churn)."""
        self.manual_close = False
        self._reconnect_soon()

    # --- what the protocol calls --------------------------------------------------
    def on_connected(self, newest: int) -> None:
        if self.start_id is None:
            self.start_id = newest
            self.contig = self.max_id = max(self.max_id, newest)

    def on_event(self, seq: int, published: float | None, now: float) -> None:
        seen = self.seen
        if seq >= len(seen):
            seen.extend(bytes(seq - len(seen) + 256))
        if seen[seq]:
            self.dups += 1
            return
        seen[seq] = 1
        self.count += 1
        self.last_rx = now
        if seq < self.max_id:
            self.ooo += 1
        else:
            self.max_id = seq
        if seq == self.contig + 1:
            contig = seq
            size = len(seen)
            while contig + 1 < size and seen[contig + 1]:
                contig += 1
            self.contig = contig
            if self.waiter is not None and contig >= self.waiter[0] and not self.waiter[1].done():
                self.waiter[1].set_result(None)
        if published is not None:
            self.latencies.append((now - published) * 1000.0)
            if (
                self.drop_time is not None
                and self.caught_up_at is None
                and published > self.drop_time
                and self.contig >= seq
            ):
                self.caught_up_at = now

    def on_lost(self) -> None:
        self.connected = False
        self.protocol = None
        if self.manual_close:
            return
        self.ended += 1
        asyncio.get_running_loop().call_later(RECONNECT_DELAY, self._reconnect_soon)

    def _reconnect_soon(self) -> None:
        if self.manual_close:
            return
        task = asyncio.ensure_future(self._reconnect())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _reconnect(self) -> None:
        """What EventSource does when a stream ends: reconnect with the last id seen."""
        self.reconnects += 1
        try:
            await self.connect(self.max_id if self.start_id is not None else None, timeout=30)
        except Exception:
            if not self.manual_close:
                asyncio.get_running_loop().call_later(RECONNECT_DELAY, self._reconnect_soon)

    # --- results ------------------------------------------------------------------
    def lost(self, end: int) -> tuple[int, int]:
        """(received, expected) ids in (start, end]."""
        start = self.start_id or 0
        if end <= start:
            return 0, 0
        window = self.seen[start + 1 : end + 1]
        received = len(window) - window.count(0)
        return received, end - start


_background: set[asyncio.Task] = set()


def _published_at(buf: bytes, start: int, end: int) -> float | None:
    mark = buf.find(MARKER, start, end)
    if mark >= 0:
        # A message's content is the marker (a quote ends it); a regeneration's delta holds
        # one stamp per token (`bench@<time> <token>`, CHORUS_LOCAL_BENCH_TOKENS): the
        # first is the oldest token of the flush. The whole stamped answer in
        # `message_regenerated` measures nothing.
        number = _STAMP.match(buf, mark + 6, end)
        if buf.find(_REGENERATED, start, end) >= 0:
            return None
        return float(number.group()) if number else None
    mark = buf.find(_TIMESTAMP_KEY, start, end)
    if mark >= 0:
        mark += len(_TIMESTAMP_KEY)
        stop = buf.find(b'"', mark, end)
        return dt.datetime.fromisoformat(buf[mark:stop].decode()).timestamp()
    return None


class StreamProtocol(asyncio.Protocol):
    """HTTP/1.1 response head, chunked decoding and SSE frame splitting for one stream."""

    def __init__(self, sub: Subscriber, ready: asyncio.Future, last_id: int | None) -> None:
        self.sub = sub
        self.ready = ready
        self.last_id = last_id
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.chunks = bytearray()
        self.chunk_left = 0
        self.pending = b""  # SSE bytes after the last complete frame
        self.status = 0
        self.error_body = b""
        self.refusing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.sub.request(self.last_id))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            detail = f"HTTP {self.status} {self.error_body[:200]!r}" if self.status else f"connection lost: {exc!r}"
            self.ready.set_exception(ConnectionError(detail))
            return
        if self.sub.protocol is self:
            self.sub.on_lost()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
            self.in_body = True
            if not data:
                if self.status != 200:
                    self._refused(b"")
                return
        if self.chunked:
            data = self._dechunk(data)
        if self.status != 200:
            self._refused(data)
            return
        if data:
            self._frames(data, now)

    def _refused(self, body: bytes) -> None:
        """Not a stream (401/404/503...): keep the short JSON body for the error, then
        hang up; connection_lost fails the `ready` future with it."""
        self.error_body += body
        if not self.refusing:
            self.refusing = True
            asyncio.get_running_loop().call_later(0.2, self._fail)

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _dechunk(self, data: bytes) -> bytes:
        if not self.chunks and not self.chunk_left:
            # Fast path, the usual read: exactly one whole chunk (one write of the server).
            nl = data.find(b"\r\n")
            if nl > 0:
                try:
                    length = int(data[:nl], 16)
                except ValueError:
                    length = -1
                if length > 0 and len(data) == nl + 2 + length + 2 and data.endswith(b"\r\n"):
                    return data[nl + 2 : nl + 2 + length]
        buf = self.chunks
        buf += data
        pos = 0
        out = []
        size = len(buf)
        while pos < size:
            if self.chunk_left == 0:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                if nl == pos:  # the CRLF that ends a chunk's data
                    pos += 2
                    continue
                length = int(bytes(buf[pos:nl]).split(b";", 1)[0], 16)
                pos = nl + 2
                if length == 0:  # the final chunk: the server ended the stream
                    if self.transport is not None:
                        self.transport.close()
                    pos = size
                    break
                self.chunk_left = length
            take = min(self.chunk_left, size - pos)
            out.append(bytes(buf[pos : pos + take]))
            pos += take
            self.chunk_left -= take
        del buf[:pos]
        return b"".join(out)

    def _frames(self, data: bytes, now: float) -> None:
        buf = self.pending + data if self.pending else data
        sub = self.sub
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            if buf.startswith(b"id: ", start):
                nl = buf.find(b"\n", start)
                sub.on_event(int(buf[start + 4 : nl]), _published_at(buf, nl, end), now)
            elif buf.startswith(b"event: connection\n", start):
                data_at = buf.find(b"data: ", start, end)
                info = json.loads(buf[data_at + 6 : end])
                sub.on_connected(int(info["lastEventId"]))
                if not self.ready.done():
                    self.ready.set_result(None)
            elif buf.startswith(b"event: history_truncated\n", start):
                sub.history_truncated += 1
            start = end + 2
        self.pending = buf[start:]


# --- the worker process -----------------------------------------------------------------
class Pool:
    """The subscribers of one worker process; each `cmd_*` answers one request."""

    def __init__(self) -> None:
        self.subs: list[Subscriber] = []
        self.latencies = array("d")
        self.targets: dict[str, int] = {}
        self._churning: set[Subscriber] = set()

    async def _bounded(self, jobs, concurrency: int) -> list:
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def run(job):
            async with semaphore:
                return await job()

        return await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)

    async def cmd_open(self, specs: list[Spec], concurrency: int, timeout: float) -> dict:  # noqa: ASYNC109
        subs = [Subscriber(spec, self.latencies) for spec in specs]
        self.subs.extend(subs)
        started = time.perf_counter()
        results = await self._bounded([lambda s=s: s.connect(s.spec.last_id, timeout) for s in subs], concurrency)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {
            "opened": len(results) - len(errors),
            "failed": len(errors),
            "errors": errors[:5],
            "elapsed": time.perf_counter() - started,
            "times": [r for r in results if isinstance(r, float)],
        }

    async def cmd_close_all(self) -> int:
        self._churning.clear()
        for sub in self.subs:
            sub.close()
        count = len(self.subs)
        self.subs = []
        self.latencies = array("d")
        self.targets = {}
        await asyncio.sleep(0.05)
        return count

    async def cmd_reset_latencies(self) -> None:
        del self.latencies[:]

    async def cmd_set_targets(self, targets: dict[str, int]) -> None:
        self.targets = dict(targets)

    async def cmd_newest_seen(self) -> int:
        return max((s.max_id for s in self.subs), default=0)

    async def cmd_progress(self) -> dict:
        caught_up = 0
        for sub in self.subs:
            end = self.targets.get(sub.spec.session)
            if end is not None and sub.start_id is not None and sub.contig >= end:
                caught_up += 1
        return {
            "subs": len(self.subs),
            "connected": sum(1 for s in self.subs if s.connected),
            "caught_up": caught_up,
            "delivered": sum(s.count for s in self.subs),
        }

    async def cmd_report(self) -> dict:
        received = expected = dups = ooo = with_loss = silent = 0
        for sub in self.subs:
            if sub.start_id is None:
                continue  # never connected: counted as a connect failure, not as losses
            end = self.targets.get(sub.spec.session, 0)
            got, want = sub.lost(end)
            with_loss += got < want
            silent += got == 0 and want > 0
            received += got
            expected += want
            dups += sub.dups
            ooo += sub.ooo
        caught = [s.caught_up_at - s.drop_time for s in self.subs if s.drop_time and s.caught_up_at]
        return {
            "subs": len(self.subs),
            "received": received,
            "expected": expected,
            "duplicated": dups,
            "out_of_order": ooo,
            "subs_with_loss": with_loss,
            "subs_silent": silent,
            "reconnects": sum(s.reconnects for s in self.subs),
            "ended_by_server": sum(s.ended for s in self.subs),
            "history_truncated": sum(s.history_truncated for s in self.subs),
            "not_caught_up_after_drop": sum(1 for s in self.subs if s.drop_time and not s.caught_up_at),
            "catch_up_times": caught,
            "last_rx": max((s.last_rx for s in self.subs), default=0.0),
            "latencies": self.latencies.tobytes(),
        }

    async def cmd_drop_and_reconnect(self, concurrency: int, timeout: float) -> dict:  # noqa: ASYNC109
        """Every subscriber drops its connection at once (abort, as a network blip would),
        then reconnects with the last id it saw, as EventSource does."""
        now = time.time()
        for sub in self.subs:
            sub.close()
            sub.drop_time = now
            sub.caught_up_at = None
        await asyncio.sleep(0)
        started = time.perf_counter()

        async def back(sub: Subscriber) -> float:
            return await sub.connect(sub.max_id, timeout)

        results = await self._bounded([lambda s=s: back(s) for s in self.subs], concurrency)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {
            "dropped_at": now,
            "reconnected": len(results) - len(errors),
            "failed": len(errors),
            "errors": errors[:5],
            "elapsed": time.perf_counter() - started,
        }

    async def cmd_churn(self, count: int, seed: int, max_delay: float = 1.0) -> int:
        """`count` random subscribers drop their connection (abort, as a flaky network
        would) and reconnect after up to `max_delay` s with the last id they saw."""
        rng = random.Random(seed)
        connected = [sub for sub in self.subs if sub.connected]
        chosen = rng.sample(connected, min(count, len(connected)))
        loop = asyncio.get_running_loop()
        for sub in chosen:
            sub.close()
            self._churning.add(sub)
            loop.call_later(rng.uniform(0.05, max_delay), self._resume, sub)
        return len(chosen)

    def _resume(self, sub: Subscriber) -> None:
        if sub in self._churning:  # not if close_all came first
            self._churning.discard(sub)
            sub.resume()

    async def cmd_replay(self, spec: Spec, end: int, timeout: float) -> dict:  # noqa: ASYNC109
        """One client with `Last-Event-ID: spec.last_id`: seconds until it holds every id
        up to `end`."""
        sub = Subscriber(spec, array("d"))
        started = time.perf_counter()
        error = None
        try:
            done = asyncio.get_running_loop().create_future()
            sub.waiter = (end, done)
            await sub.connect(spec.last_id, timeout)
            if sub.contig < end:
                async with asyncio.timeout(timeout):
                    await done
            elapsed = time.perf_counter() - started
        except Exception as exc:
            elapsed, error = None, repr(exc)
        finally:
            sub.close()
        received, expected = sub.lost(end)
        return {
            "elapsed": elapsed,
            "error": error,
            "received": received,
            "expected": expected,
            "duplicated": sub.dups,
            "out_of_order": sub.ooo,
        }


async def _serve(conn) -> None:
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    pool = Pool()
    while True:
        # A blocking read in a thread: watching the pipe with add_reader lets uvloop make
        # it non-blocking, and a command larger than the pipe's buffer (1,000 subscriber
        # specs) then fails half-read with BlockingIOError.
        command, kwargs = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            await pool.cmd_close_all()
            conn.send(("ok", None))
            return
        try:
            result = await getattr(pool, f"cmd_{command}")(**kwargs)
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def worker_main(conn) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn))
        return
    uvloop.run(_serve(conn))


class WorkerHandle:
    """A subscriber worker process and its command pipe (one command at a time)."""

    def __init__(self, index: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child,), name=f"bench-subscribers-{index}")
        self.process.daemon = True
        self.process.start()
        child.close()
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _call(self, command: str, kwargs: dict, timeout: float):  # noqa: ASYNC109
        self.conn.send((command, kwargs))
        if not self.conn.poll(timeout):
            raise TimeoutError(f"subscriber worker did not answer {command!r} within {timeout}s")
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"subscriber worker failed on {command!r}:\n{result}")
        return result

    async def call(self, command: str, rpc_timeout: float = 60.0, **kwargs):
        """Run `Pool.cmd_<command>(**kwargs)` in the worker; `rpc_timeout` bounds the wait."""
        async with self._lock:
            return await asyncio.to_thread(self._call, command, kwargs, rpc_timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("exit", {}))
            self.conn.poll(5)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
