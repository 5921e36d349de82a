"""The per-process hub: one channel-layer subscription per session with local streams.

Streams never join channel-layer groups themselves. The hub owns one channel; for each
session that has at least one open stream in this process it joins that session's group,
and when an event arrives it encodes the SSE frame once and offers it to each local stream
of the session. It leaves a group when the last local stream of that session goes.
A sweeper task (one per process) sends keepalives and ends streams that lived too long.

Streams that outlive their right to exist: every CHORUS_STREAM_REVALIDATE_SECONDS the hub
re-checks all its streams' grants in one batched query (realtime.access.grants_refused)
and revokes the refused ones; a `member_left` event (whichever way it reaches the hub or
a stream) and a `streams.recheck` control message (a token revoked, a user deactivated)
trigger the same check at once for the streams concerned. The check asks the database
about *current* rights, so a replayed `member_left` of someone who was added back since
revokes nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.module_loading import import_string

from realtime import metrics, sse
from realtime.access import Grant, grants_refused
from realtime.db import stream_db
from realtime.presence import PRESENCE_MESSAGE_TYPE, Change, ClusterPresence
from realtime.publish import (
    BROADCAST_MESSAGE_TYPE,
    EPHEMERAL_MESSAGE_TYPE,
    SESSION_CLOSED_MESSAGE_TYPE,
    STREAMS_CONTROL_GROUP,
    STREAMS_RECHECK_MESSAGE_TYPE,
    session_group,
    users_changed,
)
from realtime.replay import newest_event_ids, replay_rows
from realtime.shutdown import install_signal_handlers
from realtime.workers import (
    SessionLoad,
    WorkerInfo,
    process_identity,
    worker_heartbeat,
    worker_unregister,
    workers_list,
)

logger = logging.getLogger(__name__)

# How long the hub holds an event that arrived ahead of a missing id before it reads the
# gap from the database (broadcasts from two processes can cross by a few milliseconds).
REORDER_WAIT_SECONDS = 0.05
# While a regeneration runs the assistant counts as typing (CONTRACT §7): the hub tells its
# streams so when it sees the run start, renews it every half of this, and ends it with
# the run's last event. No extra message crosses the cluster for it.
ASSISTANT_TYPING_SECONDS = 6.0
_ASSISTANT_ENDS = frozenset({"message_regenerated", "regeneration_error", "regeneration_cancelled"})
# How long the first stream of a session waits for the registry's presence snapshot.
PRESENCE_LOAD_TIMEOUT = 1.0
# A presence change is written to the registry this soon (changes in between coalesce).
PRESENCE_WRITE_DELAY = 0.3
# presence_joined / presence_left frames gather this long before they go out together.
PRESENCE_FLUSH_SECONDS = 0.25


class HubStream(Protocol):
    """What the hub needs of a stream (realtime.stream.SessionStream implements it)."""

    session_key: str
    username: str
    grant: Grant | None  # None until the stream has opened (and sent its headers)

    def offer(self, seq: int, frame: bytes) -> None: ...

    def ephemeral(self, frame: bytes) -> None: ...
    def access_changed(self) -> None:
        """Something that may end the stream's right to exist happened: have it re-checked
        (once open, if it is still opening)."""
        ...

    def tick(self, now: float) -> float | None: ...

    def revoke(self) -> None: ...

    def shutdown(self) -> asyncio.Future | None:
        """End gracefully (server shutdown); returns what completes when the end is sent."""


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self._streams: dict[str, set[HubStream]] = {}
        self._joined: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._started: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._pings: dict[str, asyncio.Future] = {}
        self._handlers: dict[str, Callable[[dict], None]] = {}
        # Reconciliation against the database (see _reconcile): the newest id the hub has
        # seen per session, and ids the database had one round ago that had not arrived.
        self._seen: dict[str, int] = {}
        self._suspects: dict[str, int] = {}
        # Events that arrived ahead of a missing id, per session (see _deliver).
        self._early: dict[str, dict[int, dict]] = {}
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}
        self._filling: set[str] = set()
        self._process_groups: set[str] = set()
        self._heartbeat: asyncio.Task | None = None
        self._beat_soon = asyncio.Event()
        # Presence (realtime.presence): the streams counted, by the username they count as.
        self.presence = ClusterPresence(process_identity())
        self._present: dict[HubStream, str] = {}
        # Presence changes waiting to be sent, per session: username -> online before; and
        # the snapshots of streams that opened meanwhile.
        self._presence_pending: dict[str, dict[str, bool]] = {}
        self._presence_fresh: dict[str, dict[HubStream, set[str]]] = {}
        # Sessions whose registry view is wanted, each with a future done once it is loaded;
        # one task reads the registry for all of them at once (_presence_load_loop).
        self._presence_loads: dict[str, asyncio.Future] = {}
        self._presence_wanted: set[str] = set()
        self._presence_loader: asyncio.Task | None = None
        # Regenerations running per session (task id -> when seen), for assistant typing.
        self._assistant: dict[str, dict[str, float]] = {}
        self._assistant_renewed = 0.0
        # Streams whose grant is to be re-checked, and the task that does it (_recheck_loop).
        self._recheck_pending: set[HubStream] = set()
        self._rechecker: asyncio.Task | None = None
        # Set when the server drains for shutdown (realtime.shutdown): streams that open
        # from then on end right after their opening frames.
        self.draining = False
        # The sweep's timer wheel: streams by the sweep slot (loop time // interval) of their
        # next tick. An idle stream is visited once per keepalive, not at every sweep.
        self._sweep_interval = max(0.05, min(settings.CHORUS_KEEPALIVE_SECONDS / 4, 1.0))
        self._wheel: dict[int, list[HubStream]] = {}
        self._sweep_slot = 0

    def _spawn(self, coro, name: str) -> asyncio.Task:
        """A process-wide task, in a fresh context. Tasks copy the context they are created
        in; the hub may first start inside a request (readyz, called through async_to_sync
        under daphne), whose context names an executor that dies with the request, and every
        database_sync_to_async call of the hub's tasks and streams would then fail."""
        return self.loop.create_task(coro, name=name, context=contextvars.Context())

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Create the hub's channel and its reader task; safe to call many times."""
        if self._started is None:
            self._started = self._spawn(self._start(), "chorus-hub-start")
        try:
            await asyncio.shield(self._started)
        except Exception:
            self._started = None  # let the next stream retry (e.g. Redis came back)
            raise

    async def _start(self) -> None:
        # Bounded: a frozen Redis must not leave the hub starting forever (the next
        # stream or sweep retries).
        async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
            self.channel = await self.layer.new_channel("chorus.hub.")
        self._reader = self._spawn(self._read_loop(), "chorus-hub-reader")
        if settings.CHORUS_WORKER_HEARTBEAT_SECONDS > 0:
            self._heartbeat = self._spawn(self._heartbeat_loop(), "chorus-hub-heartbeat")
        self._handlers[STREAMS_RECHECK_MESSAGE_TYPE] = self._on_recheck_users
        await self.layer.group_add(STREAMS_CONTROL_GROUP, self.channel)
        # Apps that need a per-process presence from start-up (e.g. the regeneration
        # reaper) plug in here: each hook is called with the hub and must not block.
        for hook in getattr(settings, "CHORUS_HUB_START_HOOKS", ()):
            try:
                import_string(hook)(self)
            except Exception:
                logger.exception("hub start hook %s failed", hook)

    async def end_streams(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (a fixed budget)
        """End every local stream gracefully and wait (at most `timeout`) until each has
        handed its final bytes to the server."""
        self.draining = True
        closing = [stream.shutdown() for streams in list(self._streams.values()) for stream in list(streams)]
        pending = [c for c in closing if c is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def stop(self) -> None:
        """End every local stream and the hub's tasks (server shutdown)."""
        await self.end_streams()
        tasks = (self._reader, self._sweeper, self._heartbeat, self._rechecker, self._presence_loader)
        for task in (*tasks, *self._background):
            if task is not None:
                task.cancel()
        if self._heartbeat is not None:
            try:
                async with asyncio.timeout(2):
                    await stream_db(worker_unregister)()
            except Exception:
                logger.warning("could not remove this process from the worker registry", exc_info=True)
        self._reader = self._sweeper = self._heartbeat = self._rechecker = self._presence_loader = None
        self._started = None

    # --- membership -------------------------------------------------------------------
    async def attach(self, stream: HubStream) -> None:
        """Start offering the session's live events to `stream`; returns once the hub is
        subscribed to the session's group, so nothing published after this is missed.

        If the channel layer does not answer within CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS
        (Redis down or frozen), it returns anyway: the stream is served from the database
        by reconciliation until the sweeper has joined the group (it retries every second)."""
        key = stream.session_key
        self._streams.setdefault(key, set()).add(stream)
        metrics.OPEN_STREAMS.inc()
        if self._sweeper is None or self._sweeper.done():
            self._sweep_interval = max(0.05, min(settings.CHORUS_KEEPALIVE_SECONDS / 4, 1.0))
            self._sweep_slot = int(self.loop.time() // self._sweep_interval)
            self._wheel = {}  # what is left holds streams long detached
            self._sweeper = self._spawn(self._sweep_loop(), "chorus-hub-sweeper")
        self._schedule_tick(stream, self.loop.time())
        if key not in self._joined:
            try:
                async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
                    await self.start()
                    await self._join(key)
            except Exception as exc:
                logger.warning("session %s: channel layer unavailable (%r); serving from the database", key, exc)

    async def _join(self, key: str) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._joined and self._streams.get(key):
                await self.layer.group_add(session_group(key), self.channel)
                self._joined.add(key)
                self.presence.serve(key)
                if self._registry_enabled:
                    self._want_presence(key)

    async def _rejoin(self) -> None:
        """Join the groups that attach could not (the channel layer was unavailable)."""
        try:
            async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
                await self.start()
                missed = [k for k in self._streams if k not in self._joined]
                for key in missed:
                    await self._join(key)
            if missed:
                logger.info("hub: joined %d group(s) missed while the channel layer was away", len(missed))
        except Exception as exc:
            logger.warning("hub: channel layer still unavailable (%r)", exc)

    def detach(self, stream: HubStream) -> None:
        """Stop offering events to `stream`; idempotent."""
        key = stream.session_key
        streams = self._streams.get(key)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        metrics.OPEN_STREAMS.dec()
        username = self._present.pop(stream, None)
        if username is not None:
            delta, change = self.presence.close(key, username)
            self._presence_changed(key, delta, change)
        if not streams:
            del self._streams[key]
            self.presence.forget(key)
            self._assistant.pop(key, None)
            load = self._presence_loads.pop(key, None)
            if load is not None:
                load.cancel()
            self._seen.pop(key, None)
            self._suspects.pop(key, None)
            self._early.pop(key, None)
            timer = self._gap_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            task = self._spawn(self._leave(key), "chorus-hub-leave")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- presence and other ephemeral signals (CONTRACT §7) ------------------------------
    @property
    def _registry_enabled(self) -> bool:
        return settings.CHORUS_WORKER_HEARTBEAT_SECONDS > 0

    async def presence_enter(self, stream: HubStream) -> list[str]:
        """Count an opened stream (its username is known) in the session's presence, tell
        the cluster if its user just came online, and return who is online now (the
        stream's `presence` snapshot, its own user included)."""
        key = stream.session_key
        load = self._presence_loads.get(key)
        if load is not None and not load.done():
            try:
                await asyncio.wait_for(asyncio.shield(load), PRESENCE_LOAD_TIMEOUT)
            except Exception:
                logger.warning("presence snapshot of session %s not loaded; continuing without it", key)
        if stream in self._present or stream not in self._streams.get(key, ()):
            return self.presence.online(key)
        self._present[stream] = stream.username
        delta, change = self.presence.open(key, stream.username)
        self._presence_changed(key, delta, change)
        online = self.presence.online(key)
        if key in self._presence_pending:
            self._presence_fresh.setdefault(key, {})[stream] = set(online)
        return online

    def assistant_typing(self, key: str) -> bool:
        return bool(self._assistant.get(key))

    def _presence_changed(self, key: str, delta: dict | None, change: Change | None) -> None:
        if delta is not None:
            task = self._spawn(self.layer.group_send(session_group(key), delta), "chorus-hub-presence-send")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_log_failure)
            self._beat_soon.set()
        if change is not None:
            self._presence_frame(key, change)

    def _presence_frame(self, key: str, change: Change) -> None:
        """Tell the session's streams of a change, batched: changes gather for
        PRESENCE_FLUSH_SECONDS, then each stream gets one write with a frame per user whose
        state differs from before the batch (one who came and went within it: nothing).
        Measured (bench presence-churn-1000, 60 users coming and going at 50/s beside 1,000
        subscribers): sent one frame at a time, presence took 3.5x the CPU of the ordinary
        events and pushed their p50 from 18 to 429 ms."""
        pending = self._presence_pending.get(key)
        if pending is None:
            pending = self._presence_pending[key] = {}
            self.loop.call_later(PRESENCE_FLUSH_SECONDS, self._presence_flush, key)
        pending.setdefault(change.username, not change.joined)  # the state before the batch

    def _presence_flush(self, key: str) -> None:
        before = self._presence_pending.pop(key, None)
        # Streams that opened during the batch: their snapshot already told them part of it.
        fresh = self._presence_fresh.pop(key, {})
        if not before or key not in self._streams:
            return
        now = {username: self.presence.is_online(key, username) for username in before}
        frames = self._presence_frames({u: online for u, online in now.items() if online != before[u]})
        for stream in tuple(self._streams[key]):
            seen = fresh.get(stream)
            if seen is None:
                if frames:
                    stream.ephemeral(frames)
            else:
                own = self._presence_frames({u: online for u, online in now.items() if online != (u in seen)})
                if own:
                    stream.ephemeral(own)

    @staticmethod
    def _presence_frames(changes: dict[str, bool]) -> bytes:
        return b"".join(
            sse.unnumbered("presence_joined" if online else "presence_left", {"username": username})
            for username, online in changes.items()
        )

    def _ephemeral(self, key: str, frame: bytes, exclude: str | None = None) -> None:
        for stream in tuple(self._streams.get(key, ())):
            if exclude is None or stream.username != exclude:
                stream.ephemeral(frame)

    def _want_presence(self, key: str) -> None:
        """Load the other processes' users of a session this process just started serving.
        Sessions that start together share one read of the registry: a read parses every
        process's every session, and one per session cost O(sessions²) when a process took
        on 500 sessions at once (bench sessions-500x2: connecting 1,000 streams took 4-5 s,
        and the reads went on into the publishing that followed)."""
        self._presence_loads[key] = self.loop.create_future()
        self._presence_wanted.add(key)
        if self._presence_loader is None or self._presence_loader.done():
            self._presence_loader = self._spawn(self._presence_load_loop(), "chorus-hub-presence")

    async def _presence_load_loop(self) -> None:
        while self._presence_wanted:
            keys, self._presence_wanted = self._presence_wanted, set()
            try:
                rows = await stream_db(workers_list)()
                self._apply_registry(rows, keys=[key for key in keys if key in self._joined and key in self._streams])
            except Exception:
                logger.exception("loading presence from the worker registry failed")
            finally:
                for key in keys:
                    loaded = self._presence_loads.get(key)
                    if loaded is not None and not loaded.done():
                        loaded.set_result(None)

    def _apply_registry(self, rows: list[WorkerInfo], keys: list[str]) -> None:
        # A row's version is that of its process's newest presence change (realtime.presence).
        live = [(w, max((load.version for load in w.sessions.values()), default=0)) for w in rows if w.alive]
        for key in keys:
            views = {w.id: (version, w.sessions[key].users if key in w.sessions else None) for w, version in live}
            for change in self.presence.apply_registry(key, views):
                self._presence_frame(key, change)

    def _track_assistant(self, key: str, name: str, envelope: str) -> None:
        task_id = json.loads(envelope)["data"].get("taskId")
        running = self._assistant.setdefault(key, {})
        was_typing = bool(running)
        if name in _ASSISTANT_ENDS:
            running.pop(task_id, None)
        else:
            running[task_id] = self.loop.time()
        if bool(running) != was_typing or name not in _ASSISTANT_ENDS:
            self._ephemeral(key, assistant_typing_frame(bool(running)))
        if not running:
            del self._assistant[key]

    def _renew_assistant_typing(self, now: float) -> None:
        if now - self._assistant_renewed < ASSISTANT_TYPING_SECONDS / 2:
            return
        self._assistant_renewed = now
        longest = settings.CHORUS_REGENERATION_MAX_SECONDS + 60  # its end event was lost
        for key, running in list(self._assistant.items()):
            for task_id in [t for t, since in running.items() if now - since > longest]:
                del running[task_id]
            self._ephemeral(key, assistant_typing_frame(bool(running)))
            if not running:
                del self._assistant[key]

    async def _leave(self, key: str) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._joined and not self._streams.get(key):
                self._joined.discard(key)
                try:
                    async with asyncio.timeout(settings.CHORUS_CHANNEL_LAYER_TIMEOUT_SECONDS):
                        await self.layer.group_discard(session_group(key), self.channel)
                except Exception:
                    logger.exception("leaving group of session %s failed", key)
        if not self._streams.get(key) and not lock.locked():
            self._locks.pop(key, None)

    async def join_process_group(self, group: str, message_type: str, handler: Callable[[dict], None]) -> None:
        """Receive `message_type` messages sent to `group` for as long as the process lives
        (control messages that every process must see, e.g. cancelling a regeneration).
        `handler` runs on the event loop and must not block."""
        await self.start()
        self._handlers[message_type] = handler
        if group not in self._process_groups:
            await self.layer.group_add(group, self.channel)
            self._process_groups.add(group)

    # --- delivery ---------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub receive failed; retrying")
                await asyncio.sleep(0.5)
                continue
            try:
                self.dispatch(message)
            except Exception:
                logger.exception("hub could not dispatch a message")

    def dispatch(self, message: dict) -> None:
        kind = message.get("type")
        if kind == BROADCAST_MESSAGE_TYPE:
            self._deliver(message)
        elif kind == SESSION_CLOSED_MESSAGE_TYPE:
            for stream in tuple(self._streams.get(message["session"], ())):
                stream.revoke()
        elif kind == PRESENCE_MESSAGE_TYPE:
            change = self.presence.apply_delta(message)
            if change is not None:
                self._presence_frame(message["session"], change)
        elif kind == EPHEMERAL_MESSAGE_TYPE:
            frame = sse.unnumbered(message["event"], message["data"])
            self._ephemeral(message["session"], frame, exclude=message.get("exclude"))
        elif kind in self._handlers:
            self._handlers[kind](message)
        elif kind == "hub.ping":
            future = self._pings.pop(message.get("token", ""), None)
            if future is not None and not future.done():
                future.set_result(True)

    def _deliver(self, message: dict) -> None:
        """Offer events to the streams in id order. Two processes publishing to one session
        (two regenerations, say) can have their broadcasts cross in Redis; handed on as they
        come, the early one would make every local stream see a gap and read the database
        on its own (a thousand queries for one reordering). Instead the hub holds it up to
        REORDER_WAIT_SECONDS for the missing id, then reads the gap once for all streams."""
        key = message["session"]
        streams = self._streams.get(key)
        if not streams:
            return
        seen = self._seen.get(key)
        if seen is not None and message["seq"] > seen + 1:
            self._early.setdefault(key, {})[message["seq"]] = message
            if key not in self._gap_timers and key not in self._filling:
                self._gap_timers[key] = self.loop.call_later(REORDER_WAIT_SECONDS, self._gap_timeout, key)
            return
        self._offer(key, streams, message["seq"], message["event"], message["envelope"])
        metrics.observe_delivery(len(streams), message.get("publishedAt"))
        self._release_early(key)

    def _release_early(self, key: str) -> None:
        """Offer the held events that now continue the run."""
        early = self._early.get(key)
        while early:
            following = self._seen.get(key, 0) + 1
            for stale in [seq for seq in early if seq < following]:
                del early[stale]  # already offered (read from the database)
            message = early.pop(following, None)
            streams = self._streams.get(key)
            if message is None or not streams:
                break
            self._offer(key, streams, message["seq"], message["event"], message["envelope"])
            metrics.observe_delivery(len(streams), message.get("publishedAt"))
        if not early:
            self._early.pop(key, None)
            timer = self._gap_timers.pop(key, None)
            if timer is not None:
                timer.cancel()

    def _gap_timeout(self, key: str) -> None:
        self._gap_timers.pop(key, None)
        if self._early.get(key) and key not in self._filling:
            self._filling.add(key)
            task = self._spawn(self._fill_gap(key), "chorus-hub-gap")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _fill_gap(self, key: str) -> None:
        """Read the missing ids once and offer them, then release what was held. Ids the
        database no longer has (pruned) are skipped; streams report them as truncated."""
        try:
            early = self._early.get(key) or {}
            if early:
                after, up_to = self._seen.get(key, 0), min(early) - 1
                try:
                    rows = await stream_db(replay_rows)(
                        session_id=key, after=after, limit=settings.CHORUS_REPLAY_PAGE_SIZE, up_to=up_to
                    )
                except Exception:
                    logger.exception("hub could not read a gap of session %s", key)
                    rows = []
                for seq, name, envelope in rows:
                    streams = self._streams.get(key)
                    if streams and seq == self._seen.get(key, 0) + 1:
                        self._offer(key, streams, seq, name, envelope)
                early = self._early.get(key)
                if early and min(early) > self._seen.get(key, 0) + 1:
                    self._seen[key] = min(early) - 1  # give up on those: streams catch up themselves
        finally:
            self._filling.discard(key)
        self._release_early(key)

    def _offer(self, key: str, streams: set[HubStream], seq: int, name: str, envelope: str) -> None:
        if seq > self._seen.get(key, 0):
            self._seen[key] = seq
        frame = sse.frame(seq, name, envelope)
        for stream in tuple(streams):
            stream.offer(seq, frame)
        if name == "message_regenerating" or name in _ASSISTANT_ENDS:
            self._track_assistant(key, name, envelope)
        if name == "member_left":
            # Whoever left, each stream of the session re-checks against the database:
            # a stream still opening does not know its user yet, and this may be a
            # replayed event of someone who is a member again.
            for stream in tuple(streams):
                stream.access_changed()

    def note_position(self, key: str, newest: int) -> None:
        """A stream read the session's newest id from the database while opening: the
        starting point of the hub's run, if it has none yet. (Never moved forward over
        held events: streams already open still need what lies in between.)"""
        if key in self._streams and key not in self._seen:
            self._seen[key] = newest

    async def _reconcile(self) -> None:
        """Catch events whose doorbell never rang. Streams notice a lost event when the
        next one arrives; this notices a lost *last* event: ids the database had one round
        ago that still have not arrived are read once and offered to every local stream."""
        keys = list(self._streams)
        if not keys:
            return
        newest = await stream_db(newest_event_ids)(session_ids=keys)
        for key in keys:
            suspect = self._suspects.pop(key, None)
            seen = self._seen.get(key, 0)
            if suspect is not None and suspect > seen and self._streams.get(key):
                rows = await stream_db(replay_rows)(
                    session_id=key, after=seen, limit=settings.CHORUS_REPLAY_PAGE_SIZE, up_to=suspect
                )
                if rows:
                    logger.warning("session %s: %d event(s) arrived only through reconciliation", key, len(rows))
                for seq, name, envelope in rows:
                    streams = self._streams.get(key)
                    if streams:
                        self._offer(key, streams, seq, name, envelope)
                self._release_early(key)
            if newest.get(key, 0) > self._seen.get(key, 0):
                self._suspects[key] = newest[key]

    # --- streams' right to exist -------------------------------------------------------
    def recheck(self, streams: Iterable[HubStream]) -> None:
        """Re-check these open streams' grants soon, in one batched query, and revoke
        those refused. Never blocks; triggers that come while a check runs are batched
        into the next one."""
        self._recheck_pending.update(streams)
        if self._recheck_pending and (self._rechecker is None or self._rechecker.done()):
            self._rechecker = self._spawn(self._recheck_loop(), "chorus-hub-recheck")

    async def _recheck_loop(self) -> None:
        while self._recheck_pending:
            batch, self._recheck_pending = self._recheck_pending, set()
            grants = {
                stream: stream.grant
                for stream in batch
                if stream.grant is not None and stream in self._streams.get(stream.session_key, ())
            }
            if not grants:
                continue
            try:
                refused = await stream_db(grants_refused)(grants=list(grants.values()))
            except asyncio.CancelledError:
                raise
            except Exception:
                # Keep the streams: the next periodic check tries again.
                logger.exception("re-checking %d stream(s) failed", len(grants))
                continue
            for stream, grant in grants.items():
                if grant in refused:
                    stream.revoke()

    async def rechecks_done(self) -> None:
        """Wait until no re-check is pending or running (tests and diagnostics)."""
        while self._rechecker is not None and not self._rechecker.done():
            await asyncio.wait([self._rechecker])

    def _on_recheck_users(self, message: dict) -> None:
        """`streams.recheck`: these users' rights changed (realtime.publish.streams_recheck).
        Streams still opening may belong to them too: they re-check once open."""
        users = set(message.get("users", ()))
        try:
            users_changed.send(sender=self.__class__, user_ids=frozenset(users))
        except Exception:
            logger.exception("a users_changed receiver failed")
        for streams in tuple(self._streams.values()):
            for stream in tuple(streams):
                if stream.grant is None or stream.grant.user_id in users:
                    stream.access_changed()

    def _schedule_tick(self, stream: HubStream, due: float) -> None:
        # Never into a slot already swept (or being swept): the next one at the earliest.
        slot = max(-int(-due // self._sweep_interval), self._sweep_slot + 1)
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [stream]
        else:
            bucket.append(stream)

    def _sweep(self, now: float) -> None:
        """Tick the streams whose slot has come; each says when it wants the next tick.
        Streams detached meanwhile are dropped (they are ended or ending already)."""
        current = int(now // self._sweep_interval)
        while self._sweep_slot < current:
            self._sweep_slot += 1
            for stream in self._wheel.pop(self._sweep_slot, ()):
                if stream not in self._streams.get(stream.session_key, ()):
                    continue
                due = stream.tick(now)
                if due is not None:
                    self._schedule_tick(stream, due)

    async def _sweep_loop(self) -> None:
        """Keepalives and deadlines every tick; reconciliation and group rejoins in tasks
        of their own, one at a time: the ticks never await the database or the channel
        layer, so a stalled PostgreSQL or a frozen Redis does not stop keepalives.
        Visiting all streams at every sweep cost 3,000 calls a second at 3,000 idle streams
        (and with them the sweep's share of idle CPU); the timer wheel (`_sweep`) visits
        each about once per keepalive."""
        next_reconcile = self.loop.time() + settings.CHORUS_RECONCILE_SECONDS
        next_revalidate = self.loop.time() + settings.CHORUS_STREAM_REVALIDATE_SECONDS
        next_rejoin = self.loop.time()
        reconciling: asyncio.Task | None = None
        rejoining: asyncio.Task | None = None
        try:
            while self._streams:
                await asyncio.sleep(self._sweep_interval)
                now = self.loop.time()
                self._sweep(now)
                if self._assistant:
                    self._renew_assistant_typing(now)
                if now >= next_revalidate:
                    next_revalidate = now + settings.CHORUS_STREAM_REVALIDATE_SECONDS
                    self.recheck(stream for streams in tuple(self._streams.values()) for stream in streams)
                if now >= next_reconcile and (reconciling is None or reconciling.done()):
                    next_reconcile = now + settings.CHORUS_RECONCILE_SECONDS
                    reconciling = self._spawn(self._reconcile_logged(), "chorus-hub-reconcile")
                if (
                    now >= next_rejoin
                    and (rejoining is None or rejoining.done())
                    and any(key not in self._joined for key in self._streams)
                ):
                    next_rejoin = now + 1.0
                    rejoining = self._spawn(self._rejoin(), "chorus-hub-rejoin")
        finally:
            for task in (reconciling, rejoining):
                if task is not None:
                    task.cancel()

    async def _reconcile_logged(self) -> None:
        try:
            await self._reconcile()
        except Exception:
            logger.exception("reconciliation with the database failed")

    async def _heartbeat_loop(self) -> None:
        """Tell the worker registry, every CHORUS_WORKER_HEARTBEAT_SECONDS, that this
        process is alive and what it serves. A failed beat is logged and retried; it must
        never stop the loop (a process that stops beating is shown as gone)."""
        while True:
            self._beat_soon.clear()
            try:
                rows = await stream_db(worker_heartbeat)(sessions=self.session_loads(), connections=self.stream_count())
                # Heal presence from the registry: lost deltas, processes that died.
                self._apply_registry(rows, keys=list(self._streams))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("worker heartbeat failed; retrying", exc_info=True)
            try:
                # A presence change wakes the loop early, so the registry (and with it the
                # presence API and the next process's snapshot) follows within a second.
                await asyncio.wait_for(self._beat_soon.wait(), settings.CHORUS_WORKER_HEARTBEAT_SECONDS)
                await asyncio.sleep(PRESENCE_WRITE_DELAY)
            except TimeoutError:
                pass

    async def ping(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (a fixed probe budget)
        """A round trip through the channel layer to this hub's own channel (readiness)."""
        token = f"{time.monotonic_ns()}"
        future = self.loop.create_future()
        self._pings[token] = future
        try:
            async with asyncio.timeout(timeout):
                await self.start()
                await self.layer.send(self.channel, {"type": "hub.ping", "token": token})
                await future
        finally:
            self._pings.pop(token, None)

    # --- introspection (ops, tests) ---------------------------------------------------
    def stream_count(self) -> int:
        return sum(len(s) for s in self._streams.values())

    def session_counts(self) -> dict[str, int]:
        return {key: len(streams) for key, streams in self._streams.items()}

    def session_loads(self) -> dict[str, SessionLoad]:
        """Per session with local streams: how many, and the presence of this process (users
        and their stream counts, since when, the version). Streams still opening, whose
        user is not known yet, count as streams only."""
        loads = {}
        for key, streams in self._streams.items():
            version, users, since = self.presence.local_snapshot(key)
            loads[key] = SessionLoad(streams=len(streams), users=users, since=since, version=version)
        return loads

    def joined_groups(self) -> set[str]:
        return set(self._joined)

    def background_task_count(self) -> int:
        return len(self._background)


def assistant_typing_frame(typing: bool) -> bytes:
    data: dict = {"username": "assistant", "typing": typing}
    if typing:
        data["expiresIn"] = ASSISTANT_TYPING_SECONDS
    return sse.unnumbered("typing", data)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("channel-layer send failed: %r", task.exception())


_hub: Hub | None = None


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process; tests get a new one
    with each loop)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = Hub(loop)
        # In a server process (not in tests), SIGTERM/SIGINT first drain the streams.
        install_signal_handlers(loop)
    return _hub


def current_hub() -> Hub | None:
    return _hub
