"""The bare Channels hub: the comparator `python -m bench --peer bare-hub` measures Chorus
against (issue 12). See bench/README.md, "The bare-hub peer".

It is what a minimal, correct live hub on the same stack costs: the same server (uvicorn
with uvloop and httptools, or daphne), the same channel layer (channels_redis's
`RedisPubSubChannelLayer`, used directly), the same envelope and SSE frames
(`realtime.events`, `realtime.sse`, which import nothing of Django), and nothing else:

- one handler per stream, in the manner of Channels' `AsyncHttpConsumer`: it waits on its
  own queue and sends what arrives (plus a task that waits for the client's disconnect);
- one channel-layer subscription per session per process: the process owns one channel,
  which joins a session's group while the process has a stream of that session;
- a post takes its event id from Redis (`INCR` of a per-session key: two processes post to
  the same session, so an id counter in process memory would hand out the same id twice),
  encodes the frame once and `group_send`s it; each process fans the same bytes out;
- ids reach streams in order: the `INCR` and the `PUBLISH` of a post are two round trips,
  and two posts in flight (in one process or two) can publish in the other order, so the
  hub holds an event that comes ahead of a missing id until the id arrives, for at most
  `BARE_HUB_REORDER_WAIT_SECONDS` (then it gives the missing id up: there is nowhere to
  read it from). This costs per event and process, not per delivery;
- no database, no authentication, no membership, no replay (`Last-Event-ID` is ignored:
  a stream starts after the session's newest id), no presence, no bound on a slow
  stream's queue.

The REST calls the benchmark makes are answered just enough for it to run unchanged:
`POST /api/v1/sessions/` (a new id), `POST .../members/` (accepted, ignored),
`GET /api/v1/sessions/{id}/` (`lastEventId`), `POST .../messages/` and `GET /readyz`.

Run: `uvicorn bench.peers.bare_hub:app --loop uvloop --http httptools` with `REDIS_URL`
(the channel layer), `BARE_HUB_COUNTER_URL` (the id counters; by default `REDIS_URL`) and
`BARE_HUB_PREFIX` (Redis key and channel prefix, one per cluster) in the environment.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable

from channels_redis.pubsub import RedisPubSubChannelLayer
from redis import asyncio as aioredis

from realtime import events, sse

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").split(",")[0].strip()
COUNTER_URL = os.environ.get("BARE_HUB_COUNTER_URL", REDIS_URL)
PREFIX = os.environ.get("BARE_HUB_PREFIX", "bare-hub")
KEEPALIVE_SECONDS = float(os.environ.get("BARE_HUB_KEEPALIVE_SECONDS", "15"))
REORDER_WAIT_SECONDS = float(os.environ.get("BARE_HUB_REORDER_WAIT_SECONDS", "1"))
REDIS_CONNECTIONS = 32  # per process, for the id counters
SESSION_TTL_SECONDS = 24 * 3600  # counters of sessions made by POST /api/v1/sessions/ expire

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_UUID = r"[0-9a-fA-F-]{32,36}"
_ROUTES = [
    ("GET", re.compile(rf"^/sse/sessions/(?P<session>{_UUID})/$"), "stream"),
    ("POST", re.compile(rf"^/api/v1/sessions/(?P<session>{_UUID})/messages/$"), "post_message"),
    ("GET", re.compile(rf"^/api/v1/sessions/(?P<session>{_UUID})/$"), "session_detail"),
    ("POST", re.compile(rf"^/api/v1/sessions/(?P<session>{_UUID})/members/$"), "add_member"),
    ("POST", re.compile(r"^/api/v1/sessions/$"), "create_session"),
    ("GET", re.compile(r"^/readyz$"), "ready"),
]


def seq_key(session: str) -> str:
    """The Redis key of a session's newest event id."""
    return f"{PREFIX}:seq:{session}"


def session_group(session: str) -> str:
    return f"s.{session}"


class Stream:
    """One open SSE response: its queue of (id, frame) and when it last wrote."""

    __slots__ = ("after", "last_write", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self.after = 0  # ids up to this one were before the stream opened
        self.last_write = 0.0


class Hub:
    """Per process: the channel, the sessions it subscribes to and their local streams."""

    def __init__(self) -> None:
        self.layer = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=PREFIX)
        # Counters are read and incremented on a bounded pool that makes a burst of
        # requests wait for a connection (the default pool refuses beyond its size).
        pool = aioredis.BlockingConnectionPool.from_url(COUNTER_URL, max_connections=REDIS_CONNECTIONS, timeout=10)
        self.redis = aioredis.Redis(connection_pool=pool)
        self.channel = ""
        self.streams: dict[str, set[Stream]] = {}
        self.joining: dict[str, asyncio.Future] = {}
        # Per subscribed session: the newest id handed to the local streams, the events
        # that came ahead of a missing id, and the timer that gives the missing id up.
        self.released: dict[str, int] = {}
        self.early: dict[str, dict[int, bytes]] = {}
        self.gap_timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.channel = await self.layer.new_channel()
        self.tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._keepalive())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.layer.flush()
        await self.redis.aclose(close_connection_pool=True)

    async def join(self, session: str, stream: Stream) -> None:
        """Add a stream; the first of its session in this process subscribes to the
        session's group (and the others wait until that subscription is made)."""
        local = self.streams.setdefault(session, set())
        local.add(stream)
        if len(local) == 1 and session not in self.joining:
            done = self.joining[session] = asyncio.get_running_loop().create_future()
            try:
                await self.layer.group_add(session_group(session), self.channel)
                # Subscribed first: every id after this one reaches the channel.
                self._start_from(session, await self.newest(session))
            finally:
                done.set_result(None)
                del self.joining[session]
        elif session in self.joining:
            await asyncio.shield(self.joining[session])

    async def leave(self, session: str, stream: Stream) -> None:
        local = self.streams.get(session)
        if local is None:
            return
        local.discard(stream)
        if not local:
            del self.streams[session]
            self.released.pop(session, None)
            self.early.pop(session, None)
            timer = self.gap_timers.pop(session, None)
            if timer is not None:
                timer.cancel()
            await self.layer.group_discard(session_group(session), self.channel)

    async def _read(self) -> None:
        """The one reader of the process's channel: each event goes to every local
        stream of its session in id order, the same frame bytes to all."""
        while True:
            message = await self.layer.receive(self.channel)
            session, seq = message["session"], message["seq"]
            if session not in self.streams:
                continue
            last = self.released.get(session)
            if last is not None and seq == last + 1 and not self.early.get(session):
                self._release(session, seq, message["frame"])  # the usual case
            elif last is None or seq > last:
                self.early.setdefault(session, {})[seq] = message["frame"]
                if last is not None:
                    self._release_ready(session)

    def _release(self, session: str, seq: int, frame: bytes) -> None:
        self.released[session] = seq
        item = (seq, frame)
        for stream in self.streams[session]:
            stream.queue.put_nowait(item)

    def _start_from(self, session: str, newest: int) -> None:
        """The session's subscription is made and its newest id read: what came in
        meanwhile up to that id is dropped, the rest released in order."""
        self.released[session] = newest
        early = self.early.get(session, {})
        for seq in [s for s in early if s <= newest]:
            del early[seq]
        self._release_ready(session)

    def _release_ready(self, session: str) -> None:
        """Release the held events that follow the newest released id without a gap; wait
        (a timer) for the missing id of those that do not."""
        early = self.early.get(session)
        while early and self.released[session] + 1 in early:
            seq = self.released[session] + 1
            self._release(session, seq, early.pop(seq))
        timer = self.gap_timers.get(session)
        if early and timer is None:
            self.gap_timers[session] = asyncio.get_running_loop().call_later(
                REORDER_WAIT_SECONDS, self._give_up_gap, session
            )
        elif not early and timer is not None:
            timer.cancel()
            del self.gap_timers[session]

    def _give_up_gap(self, session: str) -> None:
        """The missing id did not come (the layer lost it): go on from the next held one."""
        self.gap_timers.pop(session, None)
        early = self.early.get(session)
        if early and session in self.streams:
            self.released[session] = min(early) - 1
            self._release_ready(session)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.05, KEEPALIVE_SECONDS / 4)
        while True:
            await asyncio.sleep(interval)
            due = loop.time() - KEEPALIVE_SECONDS
            for local in self.streams.values():
                for stream in local:
                    if stream.last_write <= due:
                        stream.queue.put_nowait((0, sse.KEEPALIVE))

    async def newest(self, session: str) -> int:
        return int(await self.redis.get(seq_key(session)) or 0)

    async def publish(self, session: str, author: str, content: str) -> dict:
        """Number the event, encode its frame once and send it to every process."""
        seq = await self.redis.incr(seq_key(session))
        payload = events.message_created(message_id=str(uuid.uuid4()), role="user", author=author, content=content)
        envelope = events.envelope(
            seq=seq, type=payload.type.value, session_id=session, created_at=dt.datetime.now(dt.UTC), data=payload.data
        )
        frame = sse.frame(seq, payload.type.value, events.envelope_json(envelope))
        await self.layer.group_send(
            session_group(session), {"type": "session.event", "session": session, "seq": seq, "frame": frame}
        )
        return {**payload.data, "id": payload.data["messageId"], "sessionId": session, "eventId": seq}


_hub: asyncio.Future[Hub] | None = None


def _started_hub() -> asyncio.Future[Hub]:
    """The process's hub, started once (requests that come meanwhile wait for it)."""
    global _hub
    if _hub is None:

        async def start() -> Hub:
            hub = Hub()
            await hub.start()
            return hub

        _hub = asyncio.ensure_future(start())
    return _hub


async def _respond(send: Send, status: int, body: dict) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def _read_json(receive: Receive) -> dict | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _author(scope: Scope) -> str:
    """The name after `Token ` (the peer's tokens are usernames); no check of any kind."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1").partition(" ")[2].strip() or "anonymous"
    return "anonymous"


async def stream(scope: Scope, receive: Receive, send: Send, hub: Hub, session: str) -> None:
    """`GET /sse/sessions/{id}/`: subscribe, read the newest id, open with `retry:` and
    the `connection` event, then send what the hub queues until the client goes."""
    own = Stream()
    watcher: asyncio.Task | None = None
    try:
        await hub.join(session, own)
        # Subscribed before the newest id is read: every later id reaches the queue.
        own.after = await hub.newest(session)
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        connection = {"status": "connected", "sessionId": session, "userId": None, "lastEventId": own.after}
        opening = sse.RETRY + sse.unnumbered("connection", connection)
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        loop = asyncio.get_running_loop()
        own.last_write = loop.time()

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            own.queue.put_nowait(None)

        watcher = asyncio.ensure_future(disconnected())
        queue = own.queue
        while True:
            item = await queue.get()
            if item is None:
                return
            seq, frame = item
            if seq and seq <= own.after:
                continue  # published before the stream opened
            own.last_write = loop.time()
            await send({"type": "http.response.body", "body": frame, "more_body": True})
    finally:
        if watcher is not None:
            watcher.cancel()
        await hub.leave(session, own)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _started_hub()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _hub is not None:
                    await (await _hub).stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    hub = await _started_hub()  # at the first request under a server without lifespan (daphne)
    for method, pattern, name in _ROUTES:
        match = pattern.match(scope["path"])
        if match is None:
            continue
        if scope["method"] != method:
            await _respond(send, 405, {"detail": f'Method "{scope["method"]}" not allowed.'})
            return
        session = match.groupdict().get("session")
        if session is not None:
            try:
                session = str(uuid.UUID(session))
            except ValueError:
                await _respond(send, 404, {"detail": "No such session."})
                return
        if name == "stream":
            await stream(scope, receive, send, hub, session)
        elif name == "ready":
            await _respond(send, 200, {"status": "ok"})
        elif name == "session_detail":
            await _respond(send, 200, {"id": session, "lastEventId": await hub.newest(session)})
        else:
            body = await _read_json(receive)
            if body is None:
                await _respond(send, 400, {"detail": "The body must be a JSON object."})
            elif name == "create_session":
                session = str(uuid.uuid4())
                await hub.redis.set(seq_key(session), 0, ex=SESSION_TTL_SECONDS)
                await _respond(send, 201, {"id": session, "title": body.get("title", ""), "lastEventId": 0})
            elif name == "add_member":
                await _respond(send, 201, {"username": body.get("username"), "role": body.get("role", "viewer")})
            elif not isinstance(body.get("content"), str) or not body["content"]:
                await _respond(send, 400, {"detail": "content: a non-empty string is required."})
            else:
                await _respond(send, 201, await hub.publish(session, _author(scope), body["content"]))
        return
    await _respond(send, 404, {"detail": "Not found."})
