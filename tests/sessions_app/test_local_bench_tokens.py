"""The local provider's benchmark mode (CHORUS_LOCAL_BENCH_TOKENS, bench regenerations-200):
exactly that many tokens, each stamped with the moment it left the provider."""

from __future__ import annotations

import asyncio
import re
import time

from sessions_app.providers import Turn
from sessions_app.providers.local import LocalProvider


def test_bench_tokens_are_counted_and_stamped():
    provider = LocalProvider(token_delay=0, thought_steps=0, bench_tokens=7)

    async def collect() -> list[str]:
        return [token async for token in provider.stream([Turn("user", "How do we plan the rollout?", "alice")])]

    before = time.time()
    tokens = asyncio.run(collect())
    assert len(tokens) == 7
    stamps = [float(re.match(r"bench@([0-9]+\.[0-9]+) \S", token).group(1)) for token in tokens]
    assert before <= stamps[0] <= stamps[-1] <= time.time()


def test_without_the_setting_the_answer_is_unstamped(settings):
    settings.CHORUS_LOCAL_BENCH_TOKENS = 0
    provider = LocalProvider.from_settings()

    async def collect() -> str:
        return "".join([token async for token in provider.stream([Turn("user", "Hello there", "alice")])])

    assert "bench@" not in asyncio.run(collect())
