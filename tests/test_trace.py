"""Usage, its estimate and redaction: the pieces of `arq.trace` every other module shares."""

from __future__ import annotations

import pytest

from arq.trace import Usage, estimate_tokens


@pytest.mark.parametrize(
    ("text_or_chars", "down", "up"),
    [("", 0, 0), ("abc", 0, 1), ("abcd", 1, 1), ("Say something.", 3, 4), (9, 2, 3)],
)
def test_a_token_is_about_four_characters(text_or_chars: str | int, down: int, up: int) -> None:
    assert estimate_tokens(text_or_chars) == down
    assert estimate_tokens(text_or_chars, round_up=True) == up


def test_usage_adds_up_and_stays_estimated_once_any_part_is() -> None:
    total = Usage(10, 2) + Usage(5, 1, estimated=True)
    assert total == Usage(15, 3, estimated=True)
    assert total.total_tokens == 18
    assert not (Usage(1, 1) + Usage(1, 1)).estimated
