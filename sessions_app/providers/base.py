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


class ProviderError(Exception):
    """The provider could not answer. `user_message` is shown to users as is; the
    technical cause stays in the exception chain and the logs."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class Provider(Protocol):
    name: str
    model: str

    def stream(self, conversation: Sequence[Turn]) -> AsyncIterator[str]:
        """The answer as text chunks, in order; their concatenation is the answer."""
        ...

    def thoughts(self, conversation: Sequence[Turn]) -> ThoughtPlan | None:
        """A thought process to show first, or None."""
        ...

    def expected_chars(self, conversation: Sequence[Turn]) -> int:
        """An estimate of the answer's length in code points (> 0), for progress."""
        ...
