"""The runner: regenerations run as asyncio tasks on the event loop of the server process
that accepted the request.

Design
------
- **One worker per process** (per event loop: `get_worker()`), created lazily. A request
  thread hands a committed regeneration to it with `regeneration_launch`, which schedules
  `RegenerationWorker.spawn` on the server's loop (the loop Django's sync view was called
  from). Without a server loop (a sync test client, a shell) a private loop in a daemon
  thread runs it instead.
- **The loop is never blocked**: every database step is one short call through
  `database_sync_to_async`, in the worker's own pool of CHORUS_REGENERATION_DB_THREADS
  threads (so many runs proceed at once, with a bounded number of connections), and the
  provider is read by a separate *pump* task. A run lasts at most
  CHORUS_REGENERATION_MAX_SECONDS.
- **Coalescing**: the pump appends chunks to a buffer; the run flushes the buffer as one
  `regeneration_progress` at the first multiple of CHORUS_PROGRESS_FLUSH_MS (on the loop's
  clock) after its previous flush (the first chunk goes out at once), so no text waits
  longer than that. `offset` is the length in code points of what was sent before, so the
  deltas concatenate to the content exactly.
- **Batched flushes**: since every run of the process falls due at the same moments, the
  worker writes the flushes that fall due together as one batch
  (`RegenerationWorker.flush`, `services.regeneration_append_many`): one thread hop, one
  transaction, one broadcast pass. Measured on `regenerations-200` (200 runs at once,
  back to back, two rounds): server CPU per event 1.40-1.60 -> 0.83-0.93 ms with the
  batches alone, 0.74 ms with the batch's broadcast pipelined (realtime.publish).
- **Cancellation from any process**: the cancel request commits the `cancelled` status
  and its event, then sends a control message to `CONTROL_GROUP`, which every worker
  joins through `Hub.join_process_group`. The worker running it cancels the task; the
  pump's cancellation closes the provider's iterator (for `openai`, the upstream HTTP
  response). Because every run step is conditional on `status = running`, nothing is
  published after `regeneration_cancelled`, even while the command is in flight.
- **Lease and reaper**: every CHORUS_REGENERATION_HEARTBEAT_SECONDS (with jitter) each
  worker renews the lease (`heartbeat_at`) of its own runs and records their progress
  (flushes do not write the regeneration's row) — which also tells it about
  runs cancelled elsewhere whose command got lost — and reaps: any queued or running
  regeneration whose lease is older than CHORUS_REGENERATION_LEASE_SECONDS is marked
  failed with `regeneration_error` (`services.regenerations_reap_stale`). The maintenance
  loop starts in every process with its hub (settings.CHORUS_HUB_START_HOOKS calls
  `hub_started`; the hub starts at ASGI lifespan startup under uvicorn and with the first
  stream under daphne) and with the first regeneration the process runs. So a run whose
  process dies is failed within lease + heartbeat interval by any surviving process.
- **Limits**: at most CHORUS_REGENERATION_MAX_CONCURRENT runs at once per process (0: no
  limit); beyond it a run waits, still `queued` (its lease renewed like a running one's),
  for a slot, first come first served; cancelling it while it waits works as usual. A run
  stops at CHORUS_REGENERATION_MAX_CHARS characters of output: what came before the limit
  is kept (and was streamed), and the run ends `failed` with a `regeneration_error` that
  says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections

from realtime import events
from sessions_app.providers import Provider, ProviderError, get_provider
from sessions_app.regenerations import services
from sessions_app.regenerations.services import CANCEL_MESSAGE_TYPE, CONTROL_GROUP, RunPlan

logger = logging.getLogger(__name__)

# How long a cancelled pump may take to close its provider before the run gives up on it.
_PUMP_CLOSE_TIMEOUT = 2.0
# Batches of flushes being written at once per process (RegenerationWorker.flush): the
# second keeps one slow batch (a session lock held a while) from holding every run up.
_FLUSH_BATCHES_AT_ONCE = 2


def _db(func):
    """`func` as a coroutine function running in the worker's database threads."""
    return get_worker().db(func)


class _Stopped(Exception):
    """The regeneration is no longer running (cancelled or reaped elsewhere)."""


class OutputLimitReached(ProviderError):
    """The answer reached CHORUS_REGENERATION_MAX_CHARS; the run fails with this message."""

    def __init__(self, limit: int) -> None:
        super().__init__(services.too_much_output_error(limit))


def worker_identity() -> str:
    """'host:pid:nonce' of this process, stored in Regeneration.worker."""
    global _identity
    if _identity is None or _identity[0] != os.getpid():
        _identity = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    return _identity[1]


_identity: tuple[int, str] | None = None


class RegenerationWorker:
    """Runs this process's regenerations and keeps their leases; reaps dead ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, use_hub: bool = True) -> None:
        self.loop = loop
        self.use_hub = use_hub
        self.tasks: dict[str, asyncio.Task] = {}
        self._maintenance: asyncio.Task | None = None
        self._joined = False
        self._starting: asyncio.Task | None = None
        # Own threads for the runs' database calls rather than the one thread-sensitive
        # thread: runs must not queue behind each other (or behind request handlers) for
        # their short writes, and `stop` can close the connections these threads hold.
        self._threads = settings.CHORUS_REGENERATION_DB_THREADS
        self.executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="chorus-regeneration-db")
        limit = settings.CHORUS_REGENERATION_MAX_CONCURRENT
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        # The newest progress each local run has published: the lease renewal writes it
        # (flushes do not touch the regeneration's row).
        self.progress: dict[str, int] = {}
        self._flush_queue: list[tuple[services.Flush, asyncio.Future]] = []
        self._flush_batches: set[asyncio.Task] = set()

    def run_slot(self):
        """An async context manager holding one of this process's run slots
        (CHORUS_REGENERATION_MAX_CONCURRENT); waits, first come first served, when all
        are taken."""
        return self._slots if self._slots is not None else contextlib.nullcontext()

    def db(self, func):
        """`func` as a coroutine function that runs in this worker's database threads."""
        return database_sync_to_async(func, thread_sensitive=False, executor=self.executor)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Join the cancel group and start the maintenance loop; idempotent."""
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = self.loop.create_task(self._maintain(), name="chorus-regeneration-maintenance")
        if self.use_hub and not self._joined:
            from realtime.hub import get_hub

            await get_hub().join_process_group(CONTROL_GROUP, CANCEL_MESSAGE_TYPE, self.on_cancel_command)
            self._joined = True

    def start_soon(self) -> None:
        """`start` from synchronous code on the loop (a hub hook, `spawn`)."""
        if self._starting is None or self._starting.done():
            self._starting = self.loop.create_task(self._start_logged())

    async def _start_logged(self) -> None:
        try:
            await self.start()
        except Exception:
            logger.exception("the regeneration worker could not join its control group; relying on leases")

    async def stop(self) -> None:
        """Cancel the maintenance loop and every local run (tests, shutdown). Runs stopped
        this way stay `running` in the database until the reaper fails them."""
        tasks = [
            t for t in (self._maintenance, self._starting, *self.tasks.values(), *self._flush_batches) if t is not None
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_PUMP_CLOSE_TIMEOUT)
        self._maintenance = self._starting = None
        await asyncio.get_running_loop().run_in_executor(None, self._close_threads)

    async def shutdown(self) -> list[UUID]:
        """Server shutdown: stop the local runs and mark them failed now with
        SHUTDOWN_ERROR (a provider's stream cannot be resumed by another process, so they
        are failed, not handed over), then stop. Returns the ids marked failed."""
        local = self.running_ids()
        tasks = [self.tasks[key] for key in local]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_PUMP_CLOSE_TIMEOUT)
        failed: list[UUID] = []
        if local:
            failed = await self.db(services.regenerations_fail_active)(
                regeneration_ids=local, error=services.SHUTDOWN_ERROR
            )
            logger.warning("shutdown: %d regeneration(s) marked failed", len(failed))
        await self.stop()
        return failed

    def _close_threads(self) -> None:
        # One task per thread (the barrier keeps each on its own thread), each closing its
        # thread's database connections, so a test database can be dropped afterwards.
        barrier = threading.Barrier(self._threads, timeout=2)

        def close() -> None:
            connections.close_all()
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

        futures = [self.executor.submit(close) for _ in range(self._threads)]
        concurrent.futures.wait(futures, timeout=3)
        self.executor.shutdown(wait=False)
        self.executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="chorus-regeneration-db")

    # --- runs -------------------------------------------------------------------------
    def spawn(self, regeneration_id: UUID | str) -> asyncio.Task:
        """Run the regeneration on this loop (once, however often it is called)."""
        key = str(regeneration_id)
        task = self.tasks.get(key)
        if task is None or task.done():
            task = self.loop.create_task(run_regeneration(key), name=f"chorus-regeneration-{key}")
            self.tasks[key] = task
            task.add_done_callback(lambda t, key=key: self._forget(key, t))
        self.start_soon()
        return task

    def _forget(self, key: str, task: asyncio.Task) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
            self.progress.pop(key, None)

    # --- flushes ------------------------------------------------------------------------
    async def flush(self, flush: services.Flush) -> bool:
        """Publish `flush` (services.regeneration_append_many) together with the other
        local runs' flushes that fall due meanwhile: while a batch is being written, the
        next gathers, so under load one thread hop, one transaction and one commit serve
        many runs, and when idle a flush leaves at once. False if its regeneration is no
        longer running."""
        future = self.loop.create_future()
        self._flush_queue.append((flush, future))
        if len(self._flush_queue) == 1:
            # At the end of this turn of the loop: the runs woken with this one join.
            self.loop.call_soon(self._flush_next)
        stored = await future
        if stored:
            self.progress[flush.plan.task_id] = flush.progress
        return stored

    def _flush_next(self) -> None:
        while self._flush_queue and len(self._flush_batches) < _FLUSH_BATCHES_AT_ONCE:
            batch, self._flush_queue = self._flush_queue, []
            task = self.loop.create_task(self._flush_batch(batch), name="chorus-regeneration-flush")
            self._flush_batches.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task) -> None:
        self._flush_batches.discard(task)
        self._flush_next()

    async def _flush_batch(self, batch: list[tuple[services.Flush, asyncio.Future]]) -> None:
        append = self.db(services.regeneration_append_many)
        try:
            try:
                results: list[bool | BaseException] = await append(flushes=[flush for flush, _ in batch])
            except Exception:
                if len(batch) == 1:
                    raise
                # One flush's failure must not fail the others' runs: each alone.
                logger.exception("a batch of %d flushes failed; writing them one by one", len(batch))
                results = []
                for flush, _ in batch:
                    try:
                        results.append((await append(flushes=[flush]))[0])
                    except Exception as exc:
                        results.append(exc)
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def cancel_local(self, regeneration_id: UUID | str) -> bool:
        """Stop the run of this regeneration if this process has it."""
        task = self.tasks.get(str(regeneration_id))
        if task is None or task.done():
            return False
        task.cancel()
        return True

    def on_cancel_command(self, message: dict) -> None:
        """Hub handler of CANCEL_MESSAGE_TYPE (runs on the loop, must not block)."""
        regeneration_id = message.get("id")
        if isinstance(regeneration_id, str) and self.cancel_local(regeneration_id):
            logger.info("regeneration %s cancelled by command", regeneration_id)

    def running_ids(self) -> list[str]:
        return [key for key, task in self.tasks.items() if not task.done()]

    # --- leases and the reaper ----------------------------------------------------------
    async def _maintain(self) -> None:
        while True:
            interval = settings.CHORUS_REGENERATION_HEARTBEAT_SECONDS
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                await self.maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("regeneration lease renewal or reaping failed; retrying")

    async def maintain_once(self) -> list[UUID]:
        """Renew the leases of local runs (stopping those no longer running) and reap
        stale ones anywhere; returns the ids reaped."""
        local = self.running_ids()
        if local:
            progress = {key: self.progress[key] for key in local if key in self.progress}
            alive = await _db(services.regenerations_renew_leases)(regeneration_ids=local, progress=progress)
            for key in local:
                if key not in alive:
                    self.cancel_local(key)
        return await _db(services.regenerations_reap_stale)()


# --- one run --------------------------------------------------------------------------
async def run_regeneration(regeneration_id: str) -> None:
    """Wait for a run slot of this process, claim the regeneration and run it to its
    end. Cancellation (a cancel command, a lease found lost) stops it without writing:
    whoever cancelled it has written the state already; on shutdown the reaper writes it
    later."""
    async with get_worker().run_slot():
        await _claim_and_run(regeneration_id)


async def _claim_and_run(regeneration_id: str) -> None:
    try:
        plan = await _db(services.regeneration_claim)(regeneration_id=regeneration_id, worker=worker_identity())
    except Exception:
        logger.exception("regeneration %s could not be claimed; the reaper will fail it", regeneration_id)
        return
    if plan is None:
        return
    error = None
    try:
        provider = get_provider(plan.provider)
        # A provider that never ends would keep renewing its lease: bound the whole run.
        async with asyncio.timeout(settings.CHORUS_REGENERATION_MAX_SECONDS):
            await _run(plan, provider)
    except _Stopped:
        logger.info("regeneration %s stopped: no longer running", regeneration_id)
    except ProviderError as exc:
        error = exc.user_message
    except TimeoutError:
        logger.warning("regeneration %s ran out of time", regeneration_id)
        error = services.TOO_LONG_ERROR
    except Exception:
        logger.exception("regeneration %s failed", regeneration_id)
        error = services.GENERIC_ERROR
    if error is not None:
        try:
            await _db(services.regeneration_fail)(plan=plan, error=error)
        except Exception:
            logger.exception("regeneration %s could not be marked failed; the reaper will", regeneration_id)


async def _run(plan: RunPlan, provider: Provider) -> None:
    message_id, task_id = str(plan.message_id), plan.task_id
    emit = _db(services.regeneration_emit)

    thoughts = provider.thoughts(plan.conversation)
    if thoughts is not None:
        start = events.thought_process_start(
            message_id=message_id, task_id=task_id, thinking_about=thoughts.thinking_about
        )
        if not await emit(plan=plan, payload=start):
            raise _Stopped
        for number, reasoning in enumerate(thoughts.steps, start=1):
            await asyncio.sleep(thoughts.pause_seconds)
            step = events.thought_process_step(message_id=message_id, task_id=task_id, step=number, reasoning=reasoning)
            if not await emit(plan=plan, payload=step):
                raise _Stopped
        done = events.thought_process_complete(message_id=message_id, task_id=task_id, conclusion=thoughts.conclusion)
        if not await emit(plan=plan, payload=done):
            raise _Stopped

    content = await stream_coalesced(plan, provider)
    if not await _db(services.regeneration_complete)(plan=plan, content=content):
        raise _Stopped


async def stream_coalesced(plan: RunPlan, provider: Provider) -> str:
    """Read the provider and publish its text as coalesced `regeneration_progress`
    events; returns the whole content. Provider errors propagate after the text that
    came before them is published."""
    loop = asyncio.get_running_loop()
    worker = get_worker()
    window = max(0.0, settings.CHORUS_PROGRESS_FLUSH_MS / 1000)
    expected = max(1, provider.expected_chars(plan.conversation))
    limit = settings.CHORUS_REGENERATION_MAX_CHARS
    buffer: list[str] = []
    ready = asyncio.Event()

    async def pump() -> None:
        carry = ""
        received = 0
        chunks = provider.stream(plan.conversation)
        try:
            async for chunk in chunks:
                text, carry = clean_text(chunk, carry)
                if text:
                    buffer.append(text)
                    received += len(text)
                    ready.set()
                    if received > limit:
                        return  # enough: the flush cuts it at the limit and fails the run
            if carry:
                buffer.append(clean_text(carry, "", final=True)[0])
        finally:
            ready.set()
            if received > limit and hasattr(chunks, "aclose"):
                await chunks.aclose()  # close the upstream now, not when collected

    pump_task = loop.create_task(pump(), name=f"chorus-provider-{plan.task_id}")
    # The text so far in pieces, joined only for a checkpoint (services.checkpoint_due)
    # and at the end: `content + delta` at every flush copied the whole text each time.
    parts: list[str] = []
    length = 0
    last_flush: float | None = None  # none yet: the first text leaves at once
    try:
        while True:
            await ready.wait()
            # The next flush at the first multiple of the window after the last one (the
            # first at once): every run of the process then falls due at the same
            # moments, and their flushes leave as one batch (RegenerationWorker.flush).
            if not pump_task.done() and window > 0 and last_flush is not None:
                # (+0.001: a timer may fire a little early, before its multiple.)
                pause = (math.floor(last_flush / window + 0.001) + 1) * window - loop.time()
                if pause > 0:
                    await asyncio.wait([pump_task], timeout=pause)
            ready.clear()
            if buffer:
                delta = "".join(buffer)
                buffer.clear()
                over = length + len(delta) > limit
                if over:
                    delta = delta[: limit - length]
                offset = length
                parts.append(delta)
                length += len(delta)
                progress = min(99, length * 100 // expected)
                last_flush = loop.time()
                if delta:
                    content = None
                    if services.checkpoint_due(offset=offset, length=len(delta)):
                        content = "".join(parts)
                        parts[:] = [content]
                    flush = services.Flush(plan, offset, delta, progress, content)
                    if not await worker.flush(flush):
                        raise _Stopped
                if over:
                    raise OutputLimitReached(limit)
            if pump_task.done() and not buffer:
                pump_task.result()  # the provider's error, if it failed
                return "".join(parts)
    finally:
        if not pump_task.done():
            pump_task.cancel()
            # Let the provider close its upstream (the generator's finally) before leaving.
            await asyncio.wait([pump_task], timeout=_PUMP_CLOSE_TIMEOUT)


def clean_text(chunk: str, carry: str, *, final: bool = False) -> tuple[str, str]:
    """Make a provider's chunk storable and countable: a surrogate pair split across two
    chunks is joined (the high half is carried to the next chunk), lone surrogates become
    U+FFFD and NUL characters (which PostgreSQL refuses in text) are dropped. Returns the
    text to publish and the new carry."""
    text = carry + chunk
    carry = ""
    if text and not final and "\ud800" <= text[-1] <= "\udbff":
        text, carry = text[:-1], text[-1]
    if "\x00" in text:
        text = text.replace("\x00", "")
    # A regex, not a per-character generator: every token of every run passes here (the
    # generator was the runner's largest cost at 200 runs at once, profiled).
    if not text.isascii() and _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text, carry


_SURROGATE = re.compile("[\ud800-\udfff]")


# --- process-wide access ------------------------------------------------------------------
_workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RegenerationWorker] = weakref.WeakKeyDictionary()
_fallback: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
_fallback_lock = threading.Lock()


def _worker_for(loop: asyncio.AbstractEventLoop) -> RegenerationWorker:
    worker = _workers.get(loop)
    if worker is None:
        # The fallback loop has no hub (a hub belongs to the server's loop).
        worker = _workers[loop] = RegenerationWorker(loop, use_hub=_fallback is None or loop is not _fallback[0])
    return worker


def get_worker() -> RegenerationWorker:
    """The worker of the running event loop (one per server process; tests get a new
    one with each loop)."""
    return _worker_for(asyncio.get_running_loop())


def current_worker() -> RegenerationWorker | None:
    """The running loop's worker if it has one (tests, ops), without creating it."""
    try:
        return _workers.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


def hub_started(hub) -> None:
    """settings.CHORUS_HUB_START_HOOKS entry: start this process's worker (its cancel
    subscription and the lease reaper) with the hub, on the hub's loop."""
    _worker_for(hub.loop).start_soon()


async def shutdown_hook() -> None:
    """settings.CHORUS_SHUTDOWN_HOOKS entry: fail this process's runs before it exits."""
    worker = current_worker()
    if worker is not None:
        await worker.shutdown()


def _server_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # A sync view under ASGI runs in a thread that asgiref tagged with the server's loop.
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid():
        loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
        if loop is not None and loop.is_running():
            return loop
    return None


def _fallback_loop() -> asyncio.AbstractEventLoop:
    global _fallback
    with _fallback_lock:
        if _fallback is None or not _fallback[1].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="chorus-regenerations", daemon=True)
            thread.start()
            _fallback = (loop, thread)
        return _fallback[0]


def regeneration_launch(regeneration_id: UUID | str) -> None:
    """Run a committed, queued regeneration on this process's server loop (from sync or
    async code; returns at once). Call it after commit (services do, in on_commit)."""
    loop = _server_loop() or _fallback_loop()

    def spawn() -> None:
        get_worker().spawn(regeneration_id)

    loop.call_soon_threadsafe(spawn)
