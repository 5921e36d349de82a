"""The `openai` provider: any OpenAI-compatible server, through the `openai` package.

It streams `chat.completions` and yields each chunk's `delta.content`. One client per
event loop and upstream is kept (making one costs about 70 ms of CPU, mostly its TLS
context, which was most of the time to first token); a finished answer's connection goes
back to its pool. When the iterator is closed or its task cancelled (a cancelled
regeneration, a caller of /v1/ that went away), the upstream HTTP response is closed
before it ended, which closes its connection, so the server stops generating.
CHORUS_LLM_TIMEOUT_SECONDS bounds connecting and every wait for the
next bytes, so an upstream that hangs fails the answer instead of holding it forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Sequence

import httpx2  # the `openai` package's HTTP client
import openai
from django.conf import settings

from sessions_app.providers.base import ProviderError, StreamOptions, ThoughtPlan, Turn

logger = logging.getLogger(__name__)

UNREACHABLE = "The assistant service could not be reached. Please try again later."
TIMED_OUT = "The assistant service took too long to answer. Please try again."
BUSY = "The assistant service is busy right now. Please try again in a moment."
MISCONFIGURED = "The assistant service is not configured correctly. Please tell an administrator."
FAILED = "The assistant service failed while answering. Please try again."


def user_message_for(exc: BaseException) -> str:
    """A message fit for users for an error of the `openai` package."""
    if isinstance(exc, openai.APITimeoutError):
        return TIMED_OUT
    if isinstance(exc, openai.APIConnectionError):
        return UNREACHABLE
    if isinstance(exc, openai.RateLimitError):
        return BUSY
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError):
        return MISCONFIGURED
    return FAILED


def error_kind(exc: BaseException) -> str:
    """ProviderError.kind for an error of the `openai` package."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable"
    if isinstance(exc, openai.RateLimitError):
        return "busy"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError):
        return "misconfigured"
    return "failed"


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    try:
        value = float(response.headers.get("retry-after")) if response is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value >= 0 else None


def provider_error(exc: BaseException, user_message: str | None = None) -> ProviderError:
    """The ProviderError for an error of the `openai` package."""
    return ProviderError(user_message or user_message_for(exc), kind=error_kind(exc), retry_after=_retry_after(exc))


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _client_for(*, base_url: str | None, api_key: str, timeout: float) -> openai.AsyncOpenAI:
    """The running loop's client for this upstream (clients are bound to their loop)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, api_key, timeout)
    client = per_loop.get(key)
    if client is None or client.is_closed():
        client = per_loop[key] = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
    return client


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(
        self, *, base_url: str | None, api_key: str, model: str, timeout: float, expected_chars: int = 1500
    ) -> None:
        self.base_url = base_url or None
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self._expected_chars = expected_chars

    @classmethod
    def from_settings(cls) -> OpenAICompatibleProvider:
        return cls(
            base_url=settings.CHORUS_LLM_BASE_URL,
            # Local servers often need no key, but the client insists on one.
            api_key=settings.CHORUS_LLM_API_KEY or "not-needed",
            model=settings.CHORUS_LLM_MODEL,
            timeout=settings.CHORUS_LLM_TIMEOUT_SECONDS,
        )

    def expected_chars(self, conversation: Sequence[Turn]) -> int:
        return self._expected_chars

    def thoughts(self, conversation: Sequence[Turn]) -> ThoughtPlan | None:
        return None

    def _messages(self, conversation: Sequence[Turn]) -> list[dict]:
        messages = [{"role": "system", "content": settings.CHORUS_LLM_SYSTEM_PROMPT}]
        for turn in conversation:
            message = {"role": turn.role, "content": turn.content}
            if turn.role == "user" and turn.author:
                message["name"] = _safe_name(turn.author)
            messages.append(message)
        return messages

    async def stream(self, conversation: Sequence[Turn], options: StreamOptions | None = None) -> AsyncIterator[str]:
        """With `options`, the request carries its model, `max_tokens` and `temperature`,
        asks for the usage (`stream_options.include_usage`) and fills `options.report`
        with the upstream's token counts and finish reason."""
        client = _client_for(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        extra: dict = {}
        report = options.report if options is not None else None
        if options is not None:
            if options.max_tokens is not None:
                extra["max_tokens"] = options.max_tokens
            if options.temperature is not None:
                extra["temperature"] = options.temperature
            if report is not None:
                extra["stream_options"] = {"include_usage": True}
        as_given = options is not None and options.as_given
        messages = [{"role": t.role, "content": t.content} for t in conversation] if as_given else None
        request = client.chat.completions.with_streaming_response.create(
            model=(options.model if options is not None else None) or self.model,
            messages=messages or self._messages(conversation),
            stream=True,
            **extra,
        )
        try:
            # The SDK sends the request and turns statuses and connection failures into
            # its exceptions; the body is read here: parsing each chunk into the SDK's
            # models cost about 95 µs of CPU per token, this a fraction of that.
            response = await request.__aenter__()
        except openai.OpenAIError as exc:
            logger.warning("upstream model request failed: %r", exc)
            raise provider_error(exc) from exc
        try:
            async for event in _events(response):
                if "error" in event:
                    logger.warning("upstream model stream sent an error: %r", event["error"])
                    raise ProviderError(FAILED)
                usage = event.get("usage")
                if report is not None and usage:
                    report.prompt_tokens = usage.get("prompt_tokens")
                    report.completion_tokens = usage.get("completion_tokens")
                for choice in event.get("choices") or ():
                    if report is not None and choice.get("finish_reason"):
                        report.finish_reason = choice["finish_reason"]
                    text = (choice.get("delta") or {}).get("content")
                    if text and isinstance(text, str):
                        yield text
        except httpx2.TimeoutException as exc:
            logger.warning("upstream model stream timed out: %r", exc)
            raise ProviderError(TIMED_OUT, kind="timeout") from exc
        except (httpx2.HTTPError, ValueError, AttributeError) as exc:
            logger.warning("upstream model stream failed: %r", exc)
            raise ProviderError(FAILED) from exc
        finally:
            # Closing the response before its end closes the connection: the upstream
            # stops generating. A finished one goes back to the pool.
            await request.__aexit__(None, None, None)


async def _events(response) -> AsyncIterator[dict]:
    """The JSON objects of an SSE body's `data:` lines, until `data: [DONE]`. (OpenAI's
    chunks are one `data:` line each; comments and other fields are skipped.)"""
    pending = b""
    async for data in response.iter_bytes():
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            event = json.loads(payload)
            if isinstance(event, dict):
                yield event


def _safe_name(author: str) -> str:
    # OpenAI's `name` field allows [A-Za-z0-9_-]{1,64}.
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in author)
    return cleaned[:64] or "user"
