"""The `local` provider: an offline assistant whose answer is derived from the conversation.

The same conversation always gives the same answer (a hash of it seeds the choices), a
different one gives a different answer, and tokens arrive with a configurable pace
(CHORUS_LOCAL_TOKEN_DELAY_MS), so `make run` shows a realistic stream with no network.
The text deliberately mixes in non-ASCII letters and emoji, which exercises offsets in
code points end to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from django.conf import settings

from sessions_app.providers.base import StreamOptions, ThoughtPlan, Turn

_WORD_RE = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_TOKEN_RE = re.compile(r"\S+\s*|\s+")
_STOP_WORDS = frozenset(
    {
        *("this", "that", "with", "have", "from", "what", "when", "where", "which", "would", "could"),
        *("should", "about", "there", "their", "they", "them", "your", "yours", "into", "than", "then"),
        *("just", "also", "very", "much", "more", "most", "some", "such", "only", "been", "were", "will"),
    }
)

_OPENINGS = [
    "You asked about {topic}, so let me take that step by step.",
    "Good question on {topic} — here is how I would approach it.",
    "Let's look at {topic} together.",
    "On {topic}, a few things stand out.",
]
_BODY = [
    "First, {kw} matters most, because everything else builds on it.",
    "It helps to write down what “done” means for {kw} before starting.",
    "A small experiment with {kw} will tell you more than a long debate.",
    "Keep {kw} simple at first; you can refine it once it works.",
    "The risky part is usually {kw}, so tackle it early.",
    "Ask the team how {kw} looks from their side — opinions differ more than you'd expect.",
    "If {kw} is unclear, a quick sketch on the whiteboard goes a long way.",
    "Measure {kw} before and after, otherwise you are guessing.",
]
_CLOSINGS = [
    "That covers the {count} messages so far. ✨",
    "I hope that helps — happy to go deeper on any point. 🙂",
    "In short: start small, check often, adjust. 👍",
    "Voilà, a plan for the next step. 🚀",
]


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str
    keywords: list[str]
    topic: str


def _keywords(text: str, limit: int = 3) -> list[str]:
    found: list[str] = []
    for word in _WORD_RE.findall(text):
        lowered = word.lower()
        if lowered not in _STOP_WORDS and lowered not in found:
            found.append(lowered)
        if len(found) == limit:
            break
    return found


def compose_answer(conversation: Sequence[Turn]) -> _Answer:
    """The deterministic answer to `conversation` (exposed for tests and demos)."""
    digest = hashlib.sha256()
    for turn in conversation:
        digest.update(f"{turn.role}\x1f{turn.content}\x1e".encode())
    rng = random.Random(int.from_bytes(digest.digest()[:8], "big"))
    last_user = next((t.content for t in reversed(conversation) if t.role == "user"), "")
    keywords = _keywords(last_user) or ["the idea"]
    snippet = " ".join(last_user.split()[:6]) or "this"
    topic = f"“{snippet}”"
    sentences = [rng.choice(_OPENINGS).format(topic=topic)]
    for kw in keywords:
        sentences.append(rng.choice(_BODY).format(kw=kw))
    sentences.append(rng.choice(_CLOSINGS).format(count=len(conversation)))
    return _Answer(text=" ".join(sentences), keywords=keywords, topic=topic)


class LocalProvider:
    name = "local"

    def __init__(self, *, token_delay: float, thought_steps: int, bench_tokens: int = 0) -> None:
        self.model = "chorus-local"  # the model name of the direct stream (CONTRACT §8)
        self.token_delay = token_delay
        self.thought_steps = thought_steps
        self.bench_tokens = bench_tokens

    @classmethod
    def from_settings(cls) -> LocalProvider:
        return cls(
            token_delay=max(0.0, settings.CHORUS_LOCAL_TOKEN_DELAY_MS / 1000),
            thought_steps=settings.CHORUS_LOCAL_THOUGHT_STEPS,
            bench_tokens=settings.CHORUS_LOCAL_BENCH_TOKENS,
        )

    def expected_chars(self, conversation: Sequence[Turn]) -> int:
        return max(1, len(compose_answer(conversation).text))

    def thoughts(self, conversation: Sequence[Turn]) -> ThoughtPlan | None:
        if self.thought_steps <= 0:
            return None
        answer = compose_answer(conversation)
        steps = [
            f"Read the {len(conversation)} message(s) of the conversation.",
            f"Pick out what matters: {', '.join(answer.keywords)}.",
            "Outline an answer: an opening, one point per key term, a closing.",
            "Check the outline against the question.",
        ]
        while len(steps) < self.thought_steps:
            steps.append(f"Double-check point {len(steps) - 2}.")
        return ThoughtPlan(
            thinking_about=f"How to answer {answer.topic}",
            steps=steps[: self.thought_steps],
            conclusion=f"Answer in {len(answer.keywords) + 2} sentences.",
            pause_seconds=self.token_delay * 3,
        )

    async def stream(self, conversation: Sequence[Turn], options: StreamOptions | None = None) -> AsyncIterator[str]:
        """Each chunk is one token (a word and the space after it); with
        `options.max_tokens` the answer stops after that many ("length")."""
        tokens = _TOKEN_RE.findall(compose_answer(conversation).text)
        if self.bench_tokens > 0:
            # The benchmark's answers (CHORUS_LOCAL_BENCH_TOKENS): that many tokens, the
            # answer repeated, each stamped with the moment it leaves the provider.
            async for token in self._bench_stream(tokens):
                yield token
            return
        limit = options.max_tokens if options is not None and options.max_tokens is not None else len(tokens)
        report = options.report if options is not None else None
        if report is not None:
            report.prompt_tokens = sum(count_tokens(turn.content) for turn in conversation)
            report.completion_tokens = 0
        for token in tokens[:limit]:
            # Even with no delay, give the loop a turn per token: many runs share it.
            await asyncio.sleep(self.token_delay)
            if report is not None:
                report.completion_tokens += 1
            yield token
        if report is not None:
            report.finish_reason = "length" if limit < len(tokens) else "stop"

    async def _bench_stream(self, tokens: list[str]) -> AsyncIterator[str]:
        """`bench@<unix time> <token>` per token: the bench's subscribers read the stamp
        back (bench/client.py) and measure provider-to-subscriber time."""
        for index in range(self.bench_tokens):
            await asyncio.sleep(self.token_delay)
            yield f"bench@{time.time():.6f} {tokens[index % len(tokens)]}"


def count_tokens(text: str) -> int:
    """The local provider's token count of `text`: its words (each with the whitespace
    after it), the unit its answers stream in."""
    return len(_TOKEN_RE.findall(text))
