"""Usage, its estimate and redaction: the pieces of `arq.trace` every other module shares."""

from __future__ import annotations

import pytest

from arq.trace import Usage, estimate_tokens, redact, redact_all, redact_headers


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


def test_redact_masks_keys_and_bearer_tokens_in_text() -> None:
    text = 'key sk-abcdef123456, Authorization: Bearer tok_abcdef, {"api_key": "zyx987654"}'
    assert redact(text) == 'key ***, Authorization: Bearer ***, {"api_key": "***"}'
    assert redact("a short sk-abc and plain words") == "a short sk-abc and plain words"


def test_redact_all_reaches_every_string_of_json_like_data() -> None:
    data = {"a": ["Bearer abcdef123", 3, None], "b": {"c": "sk-abcdef123456"}}
    assert redact_all(data) == {"a": ["Bearer ***", 3, None], "b": {"c": "***"}}


def test_redact_headers_masks_credential_headers_whole_and_the_rule_elsewhere() -> None:
    headers = {
        "authorization": "Bearer azure-hex-0123456789",
        "Proxy-Authorization": "Basic dXNlcjpwYXNz",
        "api-key": "0123456789abcdef",
        "cookie": "session=abc",
        "x-forwarded-key": "sk-abcdef123456",
        "content-type": "application/json",
    }
    assert redact_headers(headers) == {
        "authorization": "Bearer [REDACTED]",
        "Proxy-Authorization": "Basic [REDACTED]",
        "api-key": "[REDACTED]",
        "cookie": "[REDACTED]",
        "x-forwarded-key": "***",
        "content-type": "application/json",
    }
