"""The runner's `clean_text`: storable, countable text from a provider's chunks."""

from __future__ import annotations

import pytest

from sessions_app.regenerations.runner import clean_text


@pytest.mark.parametrize(
    ("chunk", "carry", "expected"),
    [
        ("plain ascii ", "", ("plain ascii ", "")),
        ("Voilà 🚀 ", "", ("Voilà 🚀 ", "")),
        ("nul\x00gone", "", ("nulgone", "")),
        ("lone \udc00 low", "", ("lone \ufffd low", "")),
        ("ends high \ud83d", "", ("ends high ", "\ud83d")),  # carried to the next chunk
        ("\ude80 joined", "\ud83d", ("\U0001f680 joined", "")),
    ],
)
def test_clean_text(chunk, carry, expected):
    assert clean_text(chunk, carry) == expected


def test_a_high_surrogate_at_the_very_end_is_replaced():
    assert clean_text("", "\ud83d", final=True) == ("\ufffd", "")
