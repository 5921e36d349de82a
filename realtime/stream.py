"""The SSE consumer: `GET /sse/sessions/{id}/` (CONTRACT §5).

It speaks the protocol and nothing else: authentication and the access rule, the log
position and replay pages come from `realtime.access` and `realtime.replay`; live events
come from the process's hub, already framed.

Life of a stream: `http_request` checks credentials, attaches to the hub (live events are
held from then on), reads the log position and the first replay page in one database
round trip, sends headers and the replay, then releases the held events that continue the
run. Whenever a live event's id is not the next one the stream expects (the channel layer
may drop or reorder), the stream goes back to holding and reads the missing ids from the
database. The handler returns after setup, so the consumer keeps dispatching, and stops on
`http.disconnect` (which servers also send after the final body).

Limits: a user may hold CHORUS_STREAM_MAX_PER_USER streams open at once in one server
process (0: no limit); one more is refused with 429 before it starts. The count is per
process, kept on the event loop (no round trip): a cluster-wide count through the cache
would cost a round trip per opening and leak counts when a process dies, and with N
processes a user holds at most N times the limit. What can be refused without the
database or Redis (a forged or expired ticket, a user known to be at the limit) is refused
before attaching to the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from urllib.parse import parse_qs
from uuid import UUID

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY

from realtime import metrics, sse
from realtime.access import Credentials, Grant, StreamRefused, StreamStart, stream_open
from realtime.db import stream_db
from realtime.eager import start_eagerly
from realtime.hub import Hub, assistant_typing_frame, get_hub
from realtime.replay import replay_rows
from realtime.tickets import TicketInvalid, ticket_verify

logger = logging.getLogger(__name__)

_ID_RE = re.compile(r"[0-9]+")  # ASCII digits only (\d would take any script's), fullmatch
_ID_MAX_DIGITS = 30
_TOKEN_RE = re.compile(r"[!-~]{1,512}")  # visible ASCII: what any token of ours is made of
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_CLOSE_TIMEOUT = 5.0
_RETRY_AFTER_SECONDS = b"5"  # a 429 for too many streams: one may have closed by then


class UserStreamCount:
    """Open streams per user in this process (CHORUS_STREAM_MAX_PER_USER). Used on the
    event loop only, so a check and its count need no lock."""

    def __init__(self) -> None:
        self._open: dict[int, int] = {}

    def full(self, user_id: int) -> bool:
        limit = settings.CHORUS_STREAM_MAX_PER_USER
        return limit > 0 and self._open.get(user_id, 0) >= limit

    def take(self, user_id: int) -> bool:
        """Count one more stream of the user; False (nothing counted) at the limit."""
        if self.full(user_id):
            return False
        self._open[user_id] = self._open.get(user_id, 0) + 1
        return True

    def give_back(self, user_id: int) -> None:
        left = self._open.get(user_id, 0) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)

    def count(self, user_id: int) -> int:
        return self._open.get(user_id, 0)


user_streams = UserStreamCount()
TOO_MANY_STREAMS = "Too many open streams for this user; close one and retry."


def parse_last_event_id(header: bytes | None, query_value: str | None) -> int | None:
    """The resume point: the header wins over the query parameter. Raises ValueError
    unless it is a non-negative integer in ASCII digits; the header's surrounding spaces
    and tabs are not part of its value (RFC 9110), anything else is. Ids too long for
    `int()` are far above any newest id, which they then mean (CONTRACT §5)."""
    raw = header.strip(b" \t").decode("latin-1") if header is not None else query_value
    if raw is None:
        return None
    if not _ID_RE.fullmatch(raw):
        raise ValueError(raw[:50])
    digits = raw.lstrip("0")
    return int(digits or "0") if len(digits) <= _ID_MAX_DIGITS else 10**_ID_MAX_DIGITS


class SessionStream(AsyncHttpConsumer):
    # No channel-layer channel per stream: the hub receives for all of them. An alias
    # that is not configured makes Channels skip creating one.
    channel_layer_alias = "chorus.streams-use-the-hub"

    session_key = ""
    username = ""
    grant: Grant | None = None  # set once the headers are sent (realtime.hub re-checks it)

    # Per-stream state. What most streams never change is a class-level default and becomes
    # an instance attribute only when set: thousands of streams sit idle, and every object
    # a stream holds is memory times that (issue 12: 18.5 -> see bench/README.md).
    _hub: Hub | None = None
    _task: asyncio.Task | None = None
    _opened = False  # headers and the opening frames sent
    _closed = False
    _aborted = False
    _live = False
    _last_seq = 0
    _held: list[tuple[int, bytes]] | tuple = ()  # live events held while catching up
    _inflight: asyncio.Task | None = None  # a write waiting on the client's socket
    _backlog: list[bytes] | None = None  # what is written meanwhile
    _catchup: asyncio.Task | None = None
    _closer: asyncio.Task | None = None
    _last_write = 0.0
    _deadline = 0.0
    _counted_user: int | None = None  # the user this stream counts against
    _ending: bytes | None = None  # ended before its headers: the last words
    _shutdown_pending = False  # the server began draining while this opened
    _recheck_when_open = False  # a re-check was asked for while this opened

    def __init__(self, *args, **kwargs) -> None:
        # Not AsyncHttpConsumer's: its request-body buffer is never used by a stream.
        pass

    # --- ASGI plumbing ----------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        # AsyncConsumer.__call__ without a channel layer, minus its per-connection Task:
        # it receives through `await_many_dispatch`, which wraps every `receive()` in a
        # Task of its own and waits on it with asyncio.wait (a Task, a waiter future and
        # their frames per idle stream). One receive source needs none of that.
        self._task = asyncio.current_task()
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            if not self._aborted:
                raise
            # We cancelled ourselves (a frozen client): returning lets the server drop
            # the connection without waiting for its socket to drain.
        finally:
            self._close()

    async def dispatch(self, message: dict) -> None:
        # The base class closes stale database connections before every handler, a
        # thread hop per message; streams only touch the database inside
        # realtime.db.stream_db, which does that itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_request(self, message: dict) -> None:
        if message.get("more_body"):
            return  # a GET body is ignored; wait for its end
        try:
            await self._open()
        except StreamRefused as refusal:
            self._close()
            headers = [(b"content-type", b"application/json")]
            if refusal.status == 401:
                headers.append((b"www-authenticate", b"Token"))
            if refusal.status == 429:
                headers.append((b"retry-after", _RETRY_AFTER_SECONDS))
            body = json.dumps({"detail": refusal.detail}).encode()
            await self.send_response(refusal.status, body, headers=headers)
            raise StopConsumer() from None

    async def http_disconnect(self, message: dict) -> None:
        self._close()
        raise StopConsumer()

    # --- opening ----------------------------------------------------------------------
    async def _open(self) -> None:
        session_id: UUID = self.scope["url_route"]["kwargs"]["session_id"]
        self.session_key = str(session_id)
        headers = dict(self.scope.get("headers", []))
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            after = parse_last_event_id(headers.get(b"last-event-id"), (query.get("lastEventId") or [None])[-1])
        except ValueError:
            raise StreamRefused(400, "Last-Event-ID must be a non-negative integer.") from None
        credentials = self._credentials(headers, query)
        if not credentials.present:
            raise StreamRefused(401, "Authentication credentials were not provided.")
        if credentials.token is not None and not _TOKEN_RE.fullmatch(credentials.token):
            # Never a token; and PostgreSQL would refuse to even look up one with a NUL.
            raise StreamRefused(401, "Invalid credentials.")
        # What can be refused without the database or Redis is refused before attaching
        # to the hub (a group subscription, then a query): a forged or expired ticket, and
        # a user already at the stream limit (when the user is known without a query).
        known_user = credentials.user_id
        if credentials.ticket and not (credentials.user_id or credentials.token):
            try:
                known_user = ticket_verify(ticket=credentials.ticket, session_id=session_id)
            except TicketInvalid as exc:
                raise StreamRefused(401, f"Invalid stream ticket: {exc}.") from None
        if known_user is not None and user_streams.full(known_user):
            raise StreamRefused(429, TOO_MANY_STREAMS)

        hub = self._hub = get_hub()
        try:
            await hub.attach(self)  # from here on, live events are held in self._held
            # Bounded: with the database stalled the client gets a 503 and retries, rather
            # than a request that hangs (the thread finishes its query when it can).
            start: StreamStart = await asyncio.wait_for(
                stream_db(stream_open)(
                    credentials=credentials,
                    session_id=session_id,
                    after=after,
                    page_size=settings.CHORUS_REPLAY_PAGE_SIZE,
                ),
                settings.CHORUS_STREAM_OPEN_TIMEOUT_SECONDS,
            )
        except StreamRefused:
            raise
        except Exception as exc:
            logger.exception("stream setup failed for session %s", session_id)
            raise StreamRefused(503, "The event stream is unavailable; retry later.") from exc

        if not user_streams.take(start.user_id):
            raise StreamRefused(429, TOO_MANY_STREAMS)
        self._counted_user = start.user_id
        self.username = start.username
        self.grant = start.grant
        online = await hub.presence_enter(self)
        hub.note_position(self.session_key, start.newest)
        now = hub.loop.time()
        self._deadline = now + settings.CHORUS_STREAM_MAX_SECONDS
        await self.send_headers(status=200, headers=_STREAM_HEADERS)
        if self._ending is not None:
            # Ended while opening (revoked, shut down): say so and end now. Detached from
            # the hub already, a stream that went on would get no keepalive and no deadline.
            await self.base_send({"type": "http.response.body", "body": sse.RETRY + self._ending, "more_body": False})
            return
        opening = [
            sse.RETRY,
            sse.unnumbered(
                "connection",
                {
                    "status": "connected",
                    "sessionId": self.session_key,
                    "userId": start.user_id,
                    "lastEventId": start.newest,
                },
            ),
            sse.unnumbered("presence", {"online": online}),
        ]
        if hub.assistant_typing(self.session_key):
            opening.append(assistant_typing_frame(True))
        if start.after is None:
            self._last_seq = start.newest
        else:
            self._last_seq = start.after
            if start.after < start.newest and start.after + 1 < start.oldest:
                opening.append(
                    sse.unnumbered("history_truncated", {"requested": start.after, "oldestAvailable": start.oldest})
                )
                self._last_seq = start.oldest - 1  # told: the stream goes on from `oldest`
            opening.extend(self._frames(start.rows))
        self._write(b"".join(opening))
        self._opened = True
        if self._shutdown_pending or hub.draining:
            self.shutdown()
            return
        if self._recheck_when_open:
            # Something that may end this stream happened while it was opening (a
            # member_left, a revoked token) after its opening query had already run.
            hub.recheck([self])
        if len(start.rows) >= settings.CHORUS_REPLAY_PAGE_SIZE or not self._release_held():
            self._start_catch_up()

    def _credentials(self, headers: dict[bytes, bytes], query: dict[str, list[str]]) -> Credentials:
        user = self.scope.get("user")
        user_id = user.pk if user is not None and user.is_authenticated else None
        token = None
        authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() in ("token", "bearer"):
            token = value.strip() or None
        ticket = (query.get("ticket") or [None])[-1]
        login = self.scope.get("session") if user_id else None
        return Credentials(
            user_id=user_id,
            token=token,
            ticket=ticket,
            login_session=login.session_key if login is not None else None,
            login_hash=login.get(HASH_SESSION_KEY) if login is not None else None,
        )

    # --- what the hub calls -----------------------------------------------------------
    def offer(self, seq: int, frame: bytes) -> None:
        """A live event from the hub, framed. Never blocks."""
        if self._closed:
            return
        if self._live:
            if seq <= self._last_seq:
                return  # already sent (replay covered it, or the layer repeated it)
            if seq == self._last_seq + 1:
                self._last_seq = seq
                self._write(frame)
                return
            self._live = False  # a gap: hold live events and read the missing ones
            self._hold(seq, frame)
            self._start_catch_up()
            return
        if len(self._held) >= settings.CHORUS_STREAM_QUEUE_SIZE:
            self._abort("queue_full")
            return
        self._hold(seq, frame)

    def _hold(self, seq: int, frame: bytes) -> None:
        if self._held:
            self._held.append((seq, frame))
        else:
            self._held = [(seq, frame)]

    def ephemeral(self, frame: bytes) -> None:
        """An unnumbered frame (presence, typing, read positions): written as it comes,
        once the stream is open; it takes no part in ids, holding or replay."""
        if self._opened and not self._closed:
            self._write(frame)

    def tick(self, now: float) -> float | None:
        """Keepalive and lifetime, called by the hub's sweep. Returns when the stream next
        needs a tick (None: it ended), so that the hub visits an idle stream about once per
        CHORUS_KEEPALIVE_SECONDS instead of at every sweep."""
        if self._closed:
            return None
        if not self._opened:
            return now  # still opening: no deadline yet, and nothing may precede the headers
        if now >= self._deadline:
            self._end("max_lifetime")
            return None
        keepalive = settings.CHORUS_KEEPALIVE_SECONDS
        if self._inflight is None and now - self._last_write >= keepalive:
            self._write(sse.KEEPALIVE)
        return min(self._deadline, self._last_write + keepalive)

    def access_changed(self) -> None:
        if self._closed:
            return
        if self.grant is None:
            self._recheck_when_open = True
        elif self._hub is not None:
            self._hub.recheck([self])

    def revoke(self) -> None:
        self._end("access_revoked", sse.unnumbered("access_revoked", {"sessionId": self.session_key}))

    def shutdown(self) -> asyncio.Future | None:
        """Server shutdown: end with a final comment (the client reconnects elsewhere).
        A stream still opening ends right after its opening frames."""
        if not self._opened:
            self._shutdown_pending = True
            return None
        self._end("shutdown", sse.SHUTDOWN)
        return self._closer

    # --- catching up from the database ------------------------------------------------
    def _start_catch_up(self) -> None:
        if self._catchup is None or self._catchup.done():
            self._catchup = asyncio.ensure_future(self._catch_up())

    async def _catch_up(self) -> None:
        """Write stored events after `_last_seq` until the held live events continue the
        run; then the stream is live again."""
        page_size = settings.CHORUS_REPLAY_PAGE_SIZE
        try:
            while not self._closed:
                up_to = max(seq for seq, _ in self._held) if self._held else None
                rows = await stream_db(replay_rows)(
                    session_id=self.session_key, after=self._last_seq, limit=page_size, up_to=up_to
                )
                if self._closed:
                    return
                if rows:
                    self._write(b"".join(self._page(rows)))
                    await self._drained()
                    if len(rows) >= page_size:
                        continue
                elif self._held and min(seq for seq, _ in self._held) > self._last_seq + 1:
                    # The missing ids are no longer stored (pruned meanwhile): say so, and
                    # continue from what we hold rather than wait forever.
                    oldest = min(seq for seq, _ in self._held)
                    self._write(
                        sse.unnumbered("history_truncated", {"requested": self._last_seq, "oldestAvailable": oldest})
                    )
                    self._last_seq = oldest - 1
                if self._release_held():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("catch-up failed for a stream of session %s", self.session_key)
            self._end("error")

    def _release_held(self) -> bool:
        """Write the held events that continue the run. True if none is left (live)."""
        held = sorted(self._held)
        self._held = ()
        out = []
        for index, (seq, frame) in enumerate(held):
            if seq <= self._last_seq:
                continue
            if seq != self._last_seq + 1:
                self._held = held[index:]
                break
            self._last_seq = seq
            out.append(frame)
        if out:
            self._write(b"".join(out))
        self._live = not self._held
        return self._live

    def _page(self, rows: list[tuple[int, str, str]]) -> list[bytes]:
        """Frames of a page read from the database after `_last_seq`. A page that does not
        start right after it skips ids pruned meanwhile: `history_truncated` says so first
        (CONTRACT §5), as at the opening."""
        out = []
        if rows and rows[0][0] > self._last_seq + 1:
            notice = {"requested": self._last_seq, "oldestAvailable": rows[0][0]}
            out.append(sse.unnumbered("history_truncated", notice))
        out.extend(self._frames(rows))
        return out

    def _frames(self, rows: list[tuple[int, str, str]]) -> list[bytes]:
        """Frames of stored events (replay, catch-up). A `member_left` among them has the
        stream's right to exist re-checked, as when one arrives live."""
        if rows:
            self._last_seq = rows[-1][0]
        frames = []
        for seq, name, data in rows:
            if name == "member_left":
                self.access_changed()
            frames.append(sse.frame(seq, name, data))
        return frames

    # --- writing ----------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        """Hand bytes to the server now, or queue them behind a write that is waiting on
        this client's socket. Too long a queue ends the stream (CONTRACT §5)."""
        if self._closed:
            return
        if self._hub is not None:
            self._last_write = self._hub.loop.time()
        if self._inflight is not None:
            if self._backlog is None:
                self._backlog = [data]
            else:
                self._backlog.append(data)
            if len(self._backlog) > settings.CHORUS_STREAM_QUEUE_SIZE:
                self._abort("queue_full")
            return
        try:
            pending = start_eagerly(self.base_send({"type": "http.response.body", "body": data, "more_body": True}))
        except Exception:
            self._abort("send_failed")
            return
        if pending is not None:
            self._inflight = pending
            pending.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task) -> None:
        self._inflight = None
        if task.cancelled() or task.exception() is not None:
            self._abort("send_failed")
            return
        if self._backlog and not self._closed:
            data = b"".join(self._backlog)
            self._backlog = None
            self._write(data)

    async def _drained(self) -> None:
        while self._inflight is not None and not self._closed:
            await asyncio.wait([self._inflight])

    # --- ending -----------------------------------------------------------------------
    def _end(self, reason: str, last_words: bytes = b"") -> None:
        """End gracefully: detach, then send what is queued and the final (empty) body."""
        if self._closed or self._closer is not None or self._ending is not None:
            return
        metrics.STREAMS_ENDED.labels(reason).inc()
        self._detach()
        if not self._opened:
            self._ending = last_words  # nothing may precede the headers: `_open` ends it
            return
        if self._catchup is not None:
            self._catchup.cancel()
        self._closer = asyncio.ensure_future(self._send_final(last_words))

    async def _send_final(self, last_words: bytes) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._drained()
                body = b"".join(self._backlog or ()) + last_words
                self._backlog = None
                await self.base_send({"type": "http.response.body", "body": body, "more_body": False})
        except TimeoutError:
            self._abort("close_timeout")
        # The server answers the final body with http.disconnect, which stops the consumer.

    def _abort(self, reason: str) -> None:
        """End now, without waiting on the client (it is not reading)."""
        if self._closed:
            return
        metrics.STREAMS_ENDED.labels(reason).inc()
        logger.info("ending a stream of session %s: %s", self.session_key, reason)
        self._close()
        self._aborted = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _detach(self) -> None:
        if self._hub is not None:
            self._hub.detach(self)

    def _close(self) -> None:
        """Release everything the stream holds; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._detach()
        if self._counted_user is not None:
            user_streams.give_back(self._counted_user)
            self._counted_user = None
        self._held = ()
        self._backlog = None
        for task in (self._catchup, self._inflight, self._closer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
