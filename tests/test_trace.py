"""Usage, its estimate and redaction: the pieces of `arq.trace` every other module shares."""

from __future__ import annotations

import json

import pytest

from arq.trace import (
    Usage,
    credential_header,
    estimate_tokens,
    redact,
    redact_all,
    redact_headers,
    register_secret,
)


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
        "x-goog-api-key": "AIzaSyExample0123",
        "X-Auth-Token": "opaque",
        "x-note": "sk-abcdef123456",
        "x-ratelimit-remaining-tokens": "999",
        "content-type": "application/json",
    }
    assert redact_headers(headers) == {
        "authorization": "Bearer [REDACTED]",
        "Proxy-Authorization": "Basic [REDACTED]",
        "api-key": "[REDACTED]",
        "cookie": "[REDACTED]",
        "x-goog-api-key": "[REDACTED]",
        "X-Auth-Token": "[REDACTED]",
        "x-note": "***",
        "x-ratelimit-remaining-tokens": "999",
        "content-type": "application/json",
    }


def test_a_registered_secret_is_masked_whatever_its_shape() -> None:
    """Keys that match no pattern (Groq's gsk_, Google's AIza, an Azure hex key, a key
    with quotes) are masked once registered: as written, JSON-escaped and repr-escaped."""
    keys = ["gsk_Trace0registered1", "AIzaTraceRegistered2", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"]
    quoted = 'we"ird\\key:Trace3'
    for key in [*keys, quoted]:
        register_secret(key)
    text = f"echo {keys[0]}, {keys[1]}; {keys[2]}."
    assert redact(text) == "echo ***, ***; ***."
    assert redact(json.dumps({"k": quoted})) == '{"k": "***"}'
    assert redact(repr(quoted)) == "'***'"
    assert redact_all({"a": [f"x{keys[1]}y"]}) == {"a": ["x***y"]}
    assert redact_headers({"x-note": keys[2]}) == {"x-note": "***"}


def test_a_short_registered_value_is_not_masked() -> None:
    register_secret("k")
    register_secret("abc1234")  # 7 characters: masking it everywhere would garble text
    assert redact("a k in abc1234") == "a k in abc1234"


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("Authorization", True),
        ("x-goog-api-key", True),
        ("Ocp-Apim-Subscription-Key", True),
        ("x-auth-token", True),
        ("Set-Cookie", True),
        ("x-ratelimit-remaining-tokens", False),
        ("x-request-id", False),
        ("OpenAI-Organization", False),
    ],
)
def test_credential_headers_are_known_by_name(name: str, credential: bool) -> None:
    assert credential_header(name) is credential
