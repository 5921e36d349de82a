"""The `/v1/` ASGI app: OpenAI's chat completions and models endpoints (CONTRACT §8).

Why an ASGI app of its own, routed in config/asgi.py beside `/sse/`, and not a Django
view: a completion is long-lived I/O whose end the caller decides. This app reads the
body itself (and stops at CHORUS_COMPLETIONS_MAX_BODY_BYTES), keeps listening to
`receive` while it streams, and cancels the run the moment `http.disconnect` arrives,
which closes the provider's iterator and with it any upstream request. Django's handler
in this project (config/django_handler.py) does not watch for disconnects, and a DRF view
would hold a thread for the whole answer. Everything that touches the database or the
cache (authentication, limits, the mirror, the log) runs in `completions.db`'s threads,
never on the event loop.

Life of a call: read the body → validate it (errors held until the caller is known) →
one thread hop to authenticate and admit (model, session role, rate, concurrency, start
of the mirror) → wait for the provider's first chunk, so that a provider failing before
it still gets a proper status → headers and chunks → the end (`data: [DONE]`) → in every
outcome, in a `finally` shielded from cancellation: close the mirror, give back the
concurrency slot, write the generation log row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from django.conf import settings

from completions import errors
from completions.auth import authenticate
from completions.db import completions_db
from completions.errors import CompletionError
from completions.generation import Generation, Mirror
from completions.models import GenerationStatus
from completions.requests import CompletionRequest, parse_completion_request
from completions.selectors import completion_models
from completions.services import Admission, CallRecord, completion_admit, completion_release, generation_log_write
from sessions_app.providers import ProviderError
from sessions_app.regenerations.services import TOO_LONG_ERROR

logger = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
# How long a cancelled run may take to close its provider and write its log row.
_WORK_CLOSE_TIMEOUT = 5.0

GONE = "The caller closed the connection."
SHUTDOWN = "The server is shutting down; please retry."
CANCELLED_IN_SESSION = "The mirrored answer was cancelled in its session."
INTERNAL = "The server had an error while processing your request."


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*(headers or _JSON_HEADERS), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_error(send, error: CompletionError) -> None:
    await _respond(send, error.status, error.body_bytes(), error.headers())


class CompletionsApp:
    """The ASGI app mounted at `/v1/`."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"/v1/ serves HTTP only, not {scope['type']}")
        path, method = scope["path"], scope["method"]
        if path in ("/v1/chat/completions", "/v1/chat/completions/"):
            if method != "POST":
                return await _respond_error(send, _method_not_allowed(method, path))
            return await CompletionCall(scope, receive, send).run()
        if path in ("/v1/models", "/v1/models/") or path.startswith("/v1/models/"):
            if method != "GET":
                return await _respond_error(send, _method_not_allowed(method, path))
            return await self._models(scope, send, path.removeprefix("/v1/models").strip("/"))
        error = CompletionError(404, f"Unknown request URL: {method} {path}.", code="unknown_url")
        await _respond_error(send, error)

    async def _models(self, scope, send, model_id: str) -> None:
        """`GET /v1/models` (the list) and `GET /v1/models/{id}` (one, or 404)."""
        try:
            await completions_db(authenticate)(scope)
        except CompletionError as error:
            return await _respond_error(send, error)
        created = int(_STARTED_AT)
        models = [
            {"id": name, "object": "model", "created": created, "owned_by": "chorus"} for name in completion_models()
        ]
        if not model_id:
            return await _respond(send, 200, json.dumps({"object": "list", "data": models}).encode())
        found = next((m for m in models if m["id"] == model_id), None)
        if found is None:
            return await _respond_error(send, errors.model_not_found(model_id))
        await _respond(send, 200, json.dumps(found).encode())


_STARTED_AT = time.time()


def _method_not_allowed(method: str, path: str) -> CompletionError:
    return CompletionError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed")


def _admit(scope: dict, parsed: CompletionRequest | CompletionError, record: CallRecord) -> Admission:
    """One thread hop: who calls, then (only for a known caller) the request's own errors,
    then admission. Unknown callers learn nothing about their request."""
    user = authenticate(scope)
    record.user_id = user.pk
    if isinstance(parsed, CompletionError):
        raise parsed
    return completion_admit(user=user, request=parsed)


class ChunkEncoder:
    """`chat.completion.chunk` frames. A content chunk is the hot path (one per token),
    so its JSON is a prebuilt prefix and suffix around the encoded text."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._usage_field = {"usage": None} if include_usage else {}
        head = _dumps(self._head)[:-1]
        usage = ',"usage":null' if include_usage else ""
        self._prefix = f'data: {head},"choices":[{{"index":0,"delta":{{"content":'.encode()
        self._suffix = f'}},"logprobs":null,"finish_reason":null}}]{usage}}}\n\n'.encode()

    def _frame(self, **fields) -> bytes:
        return b"data: " + _dumps({**self._head, **fields}).encode() + b"\n\n"

    def role(self) -> bytes:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return self._frame(choices=[choice], **self._usage_field)

    def content(self, text: str) -> bytes:
        return self._prefix + _dumps(text).encode() + self._suffix

    def finish(self, reason: str) -> bytes:
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        return self._frame(choices=[choice], **self._usage_field)

    def usage(self, usage: dict) -> bytes:
        return self._frame(choices=[], usage=usage)


class CompletionCall:
    """One `POST /v1/chat/completions`."""

    def __init__(self, scope, receive, send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.record = CallRecord(http_status=200)
        self.admission: Admission | None = None
        self.generation: Generation | None = None
        self.mirror: Mirror | None = None
        self.headers_sent = False
        self.finished = False  # the final body was sent
        self.ended_by: str | None = None  # why the run was cancelled from outside: GONE, SHUTDOWN, …
        self._work: asyncio.Task | None = None
        self.closed = asyncio.Event()  # the log row is written (or could not be)

    # --- the connection ---------------------------------------------------------------
    async def run(self) -> None:
        _open_calls.add(self)
        try:
            await self._run()
        finally:
            if self._work is None:
                self.closed.set()
            if self.closed.is_set():
                _open_calls.discard(self)

    async def _run(self) -> None:
        try:
            body = await self._read_body()
        except CompletionError as error:
            self.record.error, self.record.http_status = error.message, error.status
            await _respond_error(self.send, error)
            await self._write_log()
            return
        if body is None:  # the caller left before its body ended
            self.record.status, self.record.error = GenerationStatus.CANCELLED, GONE
            await self._write_log()
            return
        self._work = self.loop.create_task(self._serve(body), name="chorus-completion")
        watcher = self.loop.create_task(self._watch_disconnect(), name="chorus-completion-watch")
        try:
            await asyncio.wait({self._work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not self._work.done():
                self._stop(GONE)
                await asyncio.wait({self._work}, timeout=_WORK_CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            # The server gave up on this request (shutdown): end the run, which still
            # writes its log row and closes its mirror.
            self._stop(SHUTDOWN)
            await asyncio.wait({self._work}, timeout=_WORK_CLOSE_TIMEOUT)
            raise
        finally:
            watcher.cancel()

    async def _read_body(self) -> bytes | None:
        """The request body; CompletionError 413 past CHORUS_COMPLETIONS_MAX_BODY_BYTES
        (checked against Content-Length first, so a huge body is not even read)."""
        cap = settings.CHORUS_COMPLETIONS_MAX_BODY_BYTES
        too_large = CompletionError(
            413, f"The request body is too large (at most {cap} bytes).", code="request_too_large"
        )
        for name, value in self.scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > cap:
                raise too_large
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return

    def _stop(self, reason: str) -> None:
        """Cancel the run from outside (the caller left, shutdown, the session); not once
        the final body is sent (servers report a disconnect right after it), when only
        the shielded log write is left."""
        if self._work is not None and not self._work.done() and self.ended_by is None and not self.finished:
            self.ended_by = reason
            self._work.cancel()

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers_sent = True
        self.record.http_status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _body(self, data: bytes, *, more: bool = True) -> None:
        if not more:
            self.finished = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    # --- the run ----------------------------------------------------------------------
    async def _serve(self, body: bytes) -> None:
        record = self.record
        try:
            try:
                parsed: CompletionRequest | CompletionError = parse_completion_request(body)
            except CompletionError as error:
                parsed = error
            if isinstance(parsed, CompletionRequest):
                record.model, record.stream = parsed.model, parsed.stream
                record.message_count, record.prompt_chars = len(parsed.turns), parsed.prompt_chars
            self.admission = admission = await self._admitted(parsed)
            request: CompletionRequest = parsed  # admitted, so valid
            record.provider = admission.provider.name
            if admission.plan is not None:
                record.session_id, record.message_id = admission.plan.session_id, admission.plan.message_id
                self.mirror = Mirror(
                    plan=admission.plan,
                    expected_chars=admission.provider.expected_chars(request.turns),
                    on_stopped=lambda: self._stop(CANCELLED_IN_SESSION),
                )
            self.generation = Generation(
                provider=admission.provider,
                request=request,
                upstream_model=admission.upstream_model,
                mirror=self.mirror,
            )
            async with asyncio.timeout(settings.CHORUS_COMPLETIONS_MAX_SECONDS):
                if request.stream:
                    await self._stream(request, self.generation)
                else:
                    await self._whole(request, self.generation)
            record.status = GenerationStatus.COMPLETED
        except CompletionError as error:
            await self._fail(error)
        except ProviderError as exc:
            await self._fail(errors.from_provider(exc))
        except TimeoutError:
            await self._fail(CompletionError(504, TOO_LONG_ERROR, type="server_error", code="timeout"))
        except asyncio.CancelledError:
            record.status, record.error = GenerationStatus.CANCELLED, self.ended_by or GONE
            if self.ended_by == CANCELLED_IN_SESSION:
                asyncio.current_task().uncancel()  # our own cancel: tell the caller, end normally
                await self._say_last_words(
                    CompletionError(409, CANCELLED_IN_SESSION, type="server_error", code="cancelled")
                )
            else:
                if self.ended_by == SHUTDOWN:
                    await self._say_last_words(
                        CompletionError(503, SHUTDOWN, type="server_error", code="shutting_down")
                    )
                raise
        except Exception:
            logger.exception("completion failed")
            await self._fail(CompletionError(500, INTERNAL, type="server_error"))
        finally:
            await self._finish()

    async def _admitted(self, parsed: CompletionRequest | CompletionError) -> Admission:
        """Admission, in one thread hop. If the run is cancelled meanwhile, the hop still
        finishes (it may hold a slot and have started a mirror), and what it admitted is
        kept so that `_finish` gives it back."""
        admitting = self.loop.create_task(completions_db(_admit)(self.scope, parsed, self.record))
        try:
            return await asyncio.shield(admitting)
        except asyncio.CancelledError:
            await asyncio.wait({admitting}, timeout=_WORK_CLOSE_TIMEOUT)
            if admitting.done() and not admitting.cancelled() and admitting.exception() is None:
                self.admission = admitting.result()
                if self.admission.plan is not None:
                    self.record.session_id = self.admission.plan.session_id
                    self.record.message_id = self.admission.plan.message_id
                    self.mirror = Mirror(plan=self.admission.plan, expected_chars=1, on_stopped=lambda: None)
            raise

    async def _first(self, pieces) -> str | None:
        """The first piece; marks the time to first token."""
        first = await anext(pieces, None)
        if first is not None:
            self.record.first_token_seconds = self.loop.time() - self.started
        return first

    async def _stream(self, request: CompletionRequest, generation: Generation) -> None:
        encoder = ChunkEncoder(
            completion_id=_completion_id(), created=int(time.time()), model=request.model,
            include_usage=request.include_usage,
        )  # fmt: skip
        async with contextlib.aclosing(generation.pieces()) as pieces:
            # Headers wait for the first piece: a provider that fails before it gets a status.
            first = await self._first(pieces)
            await self._start(200, _STREAM_HEADERS)
            await self._body(encoder.role() + (encoder.content(first) if first is not None else b""))
            async for text in pieces:
                await self._body(encoder.content(text))
        tail = encoder.finish(generation.finish_reason or "stop")
        if request.include_usage:
            tail += encoder.usage(_usage(generation))
        await self._body(tail + _DONE, more=False)

    async def _whole(self, request: CompletionRequest, generation: Generation) -> None:
        async with contextlib.aclosing(generation.pieces()) as pieces:
            await self._first(pieces)
            async for _ in pieces:
                pass
        body = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": generation.finish_reason or "stop",
                }
            ],
            "usage": _usage(generation),
        }
        await self._start(200, _JSON_HEADERS)
        await self._body(json.dumps(body, ensure_ascii=False).encode(), more=False)

    async def _fail(self, error: CompletionError) -> None:
        self.record.status, self.record.error = GenerationStatus.FAILED, error.message
        await self._say_last_words(error)

    async def _say_last_words(self, error: CompletionError) -> None:
        """The error as a response before the headers, in-band after them (then
        `data: [DONE]`). A caller that is gone is not waited for."""
        if self.finished:
            return
        try:
            async with asyncio.timeout(1.0):
                if not self.headers_sent:
                    self.record.http_status = error.status
                    self.headers_sent = self.finished = True
                    await _respond_error(self.send, error)
                else:
                    await self._body(errors.in_band(error), more=False)
        except (TimeoutError, OSError):
            pass
        except Exception:
            logger.info("could not send the last words of a completion", exc_info=True)

    async def _finish(self) -> None:
        """Close the mirror, give back the slot, write the log: shielded, so that a
        cancellation (the caller left) cannot skip it."""
        record, generation = self.record, self.generation
        record.duration_seconds = self.loop.time() - self.started
        if generation is not None:
            record.completion_chars = generation.chars
            record.completion_tokens = generation.completion_tokens
            record.prompt_tokens = generation.prompt_tokens
            record.finish_reason = generation.finish_reason or ""
        finishing = self.loop.create_task(self._close_and_log())
        try:
            await asyncio.shield(finishing)
        except asyncio.CancelledError:
            await asyncio.wait({finishing}, timeout=_WORK_CLOSE_TIMEOUT)
            raise

    async def _close_and_log(self) -> None:
        record = self.record
        if self.mirror is not None:
            text = self.generation.text if self.generation is not None else ""
            await self.mirror.close(status=record.status, content=text, error=record.error)
        await self._write_log()
        self.closed.set()
        _open_calls.discard(self)

    async def _write_log(self) -> None:
        """Give back the concurrency slot and write the log row: one thread hop."""
        if self.record.duration_seconds == 0.0:
            self.record.duration_seconds = self.loop.time() - self.started
        try:
            await completions_db(_release_and_log)(admission=self.admission, record=self.record)
        except Exception:
            logger.exception("could not write the generation log row")


def _release_and_log(*, admission: Admission | None, record: CallRecord) -> None:
    if admission is not None:
        try:
            completion_release(admission=admission)
        except Exception:
            logger.exception("could not release a completion slot (it expires by itself)")
    generation_log_write(record=record)


# The calls open in this process, for `completions_drain` at shutdown.
_open_calls: set[CompletionCall] = set()


async def completions_drain() -> None:
    """End every open completion of this process (in-band "shutting down", log row
    `cancelled`, mirror cancelled) and wait a few seconds at most for their log rows."""
    calls = list(_open_calls)
    for call in calls:
        call._stop(SHUTDOWN)
    waits = [asyncio.ensure_future(call.closed.wait()) for call in calls]
    if waits:
        await asyncio.wait(waits, timeout=_WORK_CLOSE_TIMEOUT)
        for wait in waits:
            wait.cancel()


def with_completions_drain(lifespan_app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap an ASGI lifespan app so that, at `lifespan.shutdown`, this process's open
    completions are ended and logged before the rest of the app shuts down. (uvicorn
    cancels requests still running after --timeout-graceful-shutdown and then goes on to
    the lifespan shutdown without waiting for them; this is where their log rows are
    waited for.)"""

    async def app(scope, receive, send) -> None:
        async def receive_and_drain():
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                try:
                    await completions_drain()
                except Exception:
                    logger.exception("could not end the open completions at shutdown")
            return message

        await lifespan_app(scope, receive_and_drain, send)

    return app


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _usage(generation: Generation) -> dict:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


application = CompletionsApp()
