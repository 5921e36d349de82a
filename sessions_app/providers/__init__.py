"""Model providers: one small async interface, chosen by settings.CHORUS_LLM_PROVIDER.

A provider turns a conversation into an async iterator of text chunks (`stream`); it may
also offer a thought process (`thoughts`) and an estimate of the answer's length
(`expected_chars`, used for `progress`). Failures it can explain raise `ProviderError`
with a message fit to show a user. Closing the iterator (`aclose`, or cancelling the task
that iterates it) must release whatever the provider holds, e.g. an upstream HTTP stream.
"""

from __future__ import annotations

from django.conf import settings

from sessions_app.providers.base import Provider, ProviderError, StreamOptions, StreamReport, ThoughtPlan, Turn

__all__ = [
    "Provider",
    "ProviderError",
    "StreamOptions",
    "StreamReport",
    "ThoughtPlan",
    "Turn",
    "get_provider",
]


def get_provider(name: str | None = None) -> Provider:
    """A provider configured from settings; `name` defaults to CHORUS_LLM_PROVIDER.
    Raises ValueError for an unknown name."""
    name = name or settings.CHORUS_LLM_PROVIDER
    if name == "local":
        from sessions_app.providers.local import LocalProvider

        return LocalProvider.from_settings()
    if name == "openai":
        from sessions_app.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider.from_settings()
    raise ValueError(f"unknown model provider {name!r} (expected 'local' or 'openai')")
