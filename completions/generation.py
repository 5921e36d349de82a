"""One completion run: the provider's chunks, `max_tokens`, token counts, and the mirror
into a session. The ASGI side (`completions.asgi`) speaks HTTP around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from django.conf import settings

from completions import services
from completions.db import completions_db
from completions.models import GenerationStatus
from completions.requests import CompletionRequest
from sessions_app.providers import Provider, StreamOptions, StreamReport
from sessions_app.providers.local import count_tokens
from sessions_app.regenerations import services as regenerations
from sessions_app.regenerations.runner import clean_text
from sessions_app.regenerations.services import RunPlan

logger = logging.getLogger(__name__)

# How long closing a mirror may take (its last flush and final write) before giving up.
_MIRROR_CLOSE_TIMEOUT = 5.0


class Generation:
    """Reads the provider for one request. `pieces()` yields the answer's text as it
    comes, each piece already made storable (`clean_text`: what the caller receives is
    exactly what a mirror stores), and stops after `max_tokens` chunks (one chunk is one
    token for the `local` provider; for an upstream, its stream sends about one token per
    chunk and is also asked for `max_tokens` itself). Afterwards `text`, `finish_reason`
    and the token counts describe what was produced."""

    def __init__(
        self, *, provider: Provider, request: CompletionRequest, upstream_model: str | None, mirror: Mirror | None
    ) -> None:
        self.provider = provider
        self.request = request
        self.upstream_model = upstream_model
        self.mirror = mirror
        self.report = StreamReport()
        self.parts: list[str] = []
        self.chars = 0
        self.chunks = 0
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def completion_tokens(self) -> int:
        reported = self.report.completion_tokens
        return reported if reported is not None and self.finish_reason != "length" else self.chunks

    @property
    def prompt_tokens(self) -> int:
        if self.report.prompt_tokens is not None:
            return self.report.prompt_tokens
        return sum(count_tokens(turn.content) for turn in self.request.turns)

    def _take(self, text: str) -> None:
        self.parts.append(text)
        self.chars += len(text)
        self.chunks += 1
        if self.mirror is not None:
            self.mirror.feed(text)

    async def pieces(self) -> AsyncIterator[str]:
        options = StreamOptions(
            max_tokens=self.request.max_tokens,
            temperature=self.request.temperature,
            model=self.upstream_model,
            as_given=True,
            report=self.report,
        )
        limit = self.request.max_tokens
        carry = ""
        async with contextlib.aclosing(self.provider.stream(self.request.turns, options)) as chunks:
            async for chunk in chunks:
                text, carry = clean_text(chunk, carry)
                if not text:
                    continue
                self._take(text)
                yield text
                if self.chunks >= limit:
                    # Closing the provider's iterator (aclosing) stops the upstream too.
                    self.finish_reason = "length"
                    return
        if carry:
            text = clean_text(carry, "", final=True)[0]
            self._take(text)
            yield text
        self.finish_reason = "length" if self.report.finish_reason == "length" else "stop"


class Mirror:
    """Writes a completion into a session as a regeneration does: the pieces it is fed
    are gathered for at most CHORUS_PROGRESS_FLUSH_MS into one `regeneration_progress`
    (through `regeneration_append`), the lease is renewed every
    CHORUS_REGENERATION_HEARTBEAT_SECONDS, and `close` ends it as completed, failed or
    cancelled. If the regeneration stops running elsewhere (a member cancelled it, the
    message was deleted, the reaper failed it), `stopped` is set and `on_stopped` called."""

    def __init__(self, *, plan: RunPlan, expected_chars: int, on_stopped: Callable[[], None]) -> None:
        self.plan = plan
        self.expected = max(1, expected_chars)
        self.on_stopped = on_stopped
        self.stopped = False
        self._stored = ""
        self._progress = 0  # written to the row by the lease renewal, not by each flush
        self._buffer: list[str] = []
        self._ready = asyncio.Event()
        self._closing = False
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self._flush_loop(), name=f"chorus-mirror-{plan.task_id}")
        self._heartbeat = loop.create_task(self._heartbeat_loop(), name=f"chorus-mirror-lease-{plan.task_id}")

    def feed(self, text: str) -> None:
        self._buffer.append(text)
        self._ready.set()

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            logger.info("mirrored completion %s stopped in its session", self.plan.task_id)
            self.on_stopped()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        window = max(0.0, settings.CHORUS_PROGRESS_FLUSH_MS / 1000)
        append = completions_db(regenerations.regeneration_append)
        last_flush = float("-inf")
        while True:
            await self._ready.wait()
            pause = last_flush + window - loop.time()
            if pause > 0 and not self._closing:
                await asyncio.sleep(pause)
            self._ready.clear()
            if self._buffer:
                delta = "".join(self._buffer)
                self._buffer.clear()
                offset, content = len(self._stored), self._stored + delta
                progress = min(99, len(content) * 100 // self.expected)
                last_flush = loop.time()
                if not await append(plan=self.plan, content=content, offset=offset, delta=delta, progress=progress):
                    self._stop()
                    return
                self._stored, self._progress = content, progress
            if self._closing and not self._buffer:
                return

    async def _heartbeat_loop(self) -> None:
        renew = completions_db(regenerations.regenerations_renew_leases)
        while True:
            await asyncio.sleep(settings.CHORUS_REGENERATION_HEARTBEAT_SECONDS)
            try:
                alive = await renew(
                    regeneration_ids=[self.plan.regeneration_id], progress={self.plan.task_id: self._progress}
                )
            except Exception:
                logger.exception("could not renew the lease of mirrored completion %s", self.plan.task_id)
                continue
            if self.plan.task_id not in alive:
                self._stop()
                return

    async def close(self, *, status: str, content: str, error: str = "") -> None:
        """End the mirror: flush what is buffered, then `regeneration_complete` with
        `content` (the whole text the caller received), `regeneration_fail` with `error`,
        or cancel it. Nothing is written if it already stopped elsewhere."""
        self._heartbeat.cancel()
        try:
            async with asyncio.timeout(_MIRROR_CLOSE_TIMEOUT):
                if status == GenerationStatus.CANCELLED:
                    self._flusher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._flusher
                    if not self.stopped:
                        await completions_db(services.completion_mirror_cancel)(plan=self.plan)
                    return
                self._closing = True
                self._ready.set()
                await self._flusher
                if self.stopped:
                    return
                if status == GenerationStatus.COMPLETED:
                    await completions_db(regenerations.regeneration_complete)(plan=self.plan, content=content)
                else:
                    await completions_db(regenerations.regeneration_fail)(
                        plan=self.plan, error=error or regenerations.GENERIC_ERROR
                    )
        except Exception:
            # The reaper fails it once its lease runs out.
            logger.exception("could not close mirrored completion %s", self.plan.task_id)
            self._flusher.cancel()
