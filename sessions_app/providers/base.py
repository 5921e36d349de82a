"""The provider interface and the values that cross it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation a provider answers."""

    role: str  # "user", "assistant" or "system"
    content: str
    author: str | None = None


@dataclass(frozen=True, slots=True)
class ThoughtPlan:
    """A thought process to show before the answer (thought_process_* events)."""

    thinking_about: str
    steps: list[str] = field(default_factory=list)
    conclusion: str = ""
    pause_seconds: float = 0.0  # between two steps


@dataclass(slots=True)
class StreamReport:
    """What a provider learnt while streaming, filled in as it goes (all optional):
    the upstream's own token counts and why it stopped ("stop", "length", …)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Per-call options of `Provider.stream` (the direct stream, CONTRACT §8). Every field
    is optional; a provider ignores what it cannot honour (the caller enforces
    `max_tokens` itself too). `model` overrides the provider's configured model; with
    `as_given`, the conversation is sent exactly as given (no system prompt of ours, no
    author names). `report`, if set, receives what the provider learns."""

    max_tokens: int | None = None
    temperature: float | None = None
    model: str | None = None
    as_given: bool = False
    report: StreamReport | None = None


class ProviderError(Exception):
    """The provider could not answer. `user_message` is shown to users as is; the
    technical cause stays in the exception chain and the logs. `kind` says what went
    wrong, for callers that map it to a status: "failed", "unreachable", "timeout",
    "busy" (the upstream rate-limited us; `retry_after` seconds if it said) or
    "misconfigured"."""

    def __init__(self, user_message: str, *, kind: str = "failed", retry_after: float | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.kind = kind
        self.retry_after = retry_after


class Provider(Protocol):
    name: str
    model: str

    def stream(self, conversation: Sequence[Turn], options: StreamOptions | None = None) -> AsyncIterator[str]:
        """The answer as text chunks, in order; their concatenation is the answer.
        `options` may be omitted (regenerations do)."""
        ...

    def thoughts(self, conversation: Sequence[Turn]) -> ThoughtPlan | None:
        """A thought process to show first, or None."""
        ...

    def expected_chars(self, conversation: Sequence[Turn]) -> int:
        """An estimate of the answer's length in code points (> 0), for progress."""
        ...
