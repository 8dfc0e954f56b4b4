"""The incremental step parser: events, values, rule breaks, truncation, chunking, hostility."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from arq.errors import OutputParseError, SchemaError, TruncatedOutputError
from arq.parsing import (
    ObjectCompleted,
    ParseEvent,
    StepCompleted,
    StepParser,
    StepStarted,
    parse_tolerant,
)
from arq.parsing.tolerant import _MAX_ATTEMPTS, _candidates

STEPS = ["plan", "résumé", "items", "answer"]
PROPERTY = settings(max_examples=200, deadline=None)


def chunks_of(text: str, size: int) -> Iterator[str]:
    for k in range(0, len(text), size):
        yield text[k : k + size]


def feed_all(
    parser: StepParser, parts: Sequence[str] | Iterator[str], *, close: bool = True
) -> list[ParseEvent]:
    events: list[ParseEvent] = []
    for part in parts:
        events += parser.feed(part)
    if close:
        events += parser.close()
    return events


def parse_error(text: str, steps: Sequence[str] = STEPS, size: int = 1) -> OutputParseError:
    """Feed `text` in chunks of `size`; return the error and check which chunk raised it."""
    parser = StepParser(steps)
    parts = list(chunks_of(text, size))
    fed = 0
    error: OutputParseError | None = None
    for part in parts:
        try:
            parser.feed(part)
        except OutputParseError as exc:
            error = exc
            break
        fed += len(part)
    assert error is not None, f"no error for {text!r}"
    if error.problem in {"invalid_json", "not_an_object", "too_deep"}:
        # Raised by the very chunk that holds the offending character, not later.
        assert fed <= error.position < fed + size
    return error


# --- events and positions ---------------------------------------------------------------


def test_events_and_positions_of_a_small_output() -> None:
    text = '{"plan": "go", "items": [1, {"k": null}],\n "answer" :\ttrue }  \n'
    events = feed_all(StepParser(STEPS), [text])
    assert events == [
        StepStarted("plan", 9),
        StepCompleted("plan", "go", '"go"', 9, 13),
        StepStarted("items", 24),
        StepCompleted("items", [1, {"k": None}], '[1, {"k": null}]', 24, 40),
        StepStarted("answer", 54),
        StepCompleted("answer", True, "true", 54, 58),
        ObjectCompleted(59),
    ]
    for event in events:
        if isinstance(event, StepCompleted):
            assert text[event.start : event.end] == event.raw


def test_events_are_the_same_whatever_the_chunking() -> None:
    text = '{"plan": "a\\"b", "résumé": -1.5e-3, "items": [], "answer": {"x": [false]}}'
    whole = feed_all(StepParser(STEPS), [text])
    for size in (1, 2, 3, 5, 8):
        assert feed_all(StepParser(STEPS), chunks_of(text, size)) == whole
    assert [type(e).__name__ for e in whole] == ["StepStarted", "StepCompleted"] * 4 + [
        "ObjectCompleted"
    ]


def test_strings_cut_anywhere_are_keys_or_values_as_they_began() -> None:
    # A string cut by a chunk end goes on as the key or the value it began as, also when it
    # is the first member of its object or the first item of its array.
    text = '{"items": ["ab", {"cd": "e\\"f"}, [["gh"]], {}], "answer": {"ij": {"kl": ["mn"]}}}'
    whole = feed_all(StepParser(STEPS), [text])
    completed = [e for e in whole if isinstance(e, StepCompleted)]
    assert {e.step: e.value for e in completed} == json.loads(text)
    assert [e.raw for e in completed] == [text[e.start : e.end] for e in completed]
    for size in range(1, 9):
        assert feed_all(StepParser(STEPS), chunks_of(text, size)) == whole


def test_each_feed_returns_the_events_its_chunk_completed() -> None:
    parser = StepParser(STEPS)
    assert parser.feed('{"plan": ') == []
    assert parser.current_step is None
    assert parser.feed("12") == [StepStarted("plan", 9)]
    assert parser.current_step == "plan"
    # A number ends only when its delimiter arrives.
    assert parser.feed("3") == []
    assert parser.feed(" ") == [StepCompleted("plan", 123, "123", 9, 12)]
    assert parser.current_step is None
    assert parser.completed == {"plan": 123}
    assert parser.feed("} \n") == [ObjectCompleted(13)]
    assert parser.done
    assert parser.position == 16
    assert parser.close() == []


def test_properties_track_progress() -> None:
    parser = StepParser(STEPS)
    assert not parser.done
    assert parser.position == 0
    parser.feed('{"plan": "x", "items": [1')
    assert parser.position == 25
    assert parser.current_step == "items"
    assert parser.completed == {"plan": "x"}
    parser.completed["plan"] = "changed"  # a copy: the parser keeps its own
    assert parser.completed == {"plan": "x"}
    assert not parser.done


def test_a_pydantic_model_class_gives_the_steps() -> None:
    class Reply(BaseModel):
        request: str
        decision: bool
        answer: str

    parser = StepParser(Reply)
    events = feed_all(parser, ['{"request": "r", "answer": "a"}'])
    assert parser.completed == {"request": "r", "answer": "a"}
    assert [e.step for e in events if isinstance(e, StepCompleted)] == ["request", "answer"]
    with pytest.raises(OutputParseError) as info:
        feed_all(StepParser(Reply), ['{"answer": "a", "request": "r"}'])
    assert info.value.problem == "out_of_order"


def test_wrong_step_declarations_are_developer_errors() -> None:
    with pytest.raises(TypeError, match="single string"):
        StepParser("plan")
    with pytest.raises(TypeError, match="not a pydantic model"):
        StepParser(int)
    with pytest.raises(SchemaError, match="twice"):
        StepParser(["a", "b", "a"])
    with pytest.raises(ValueError, match="max_depth"):
        StepParser(STEPS, max_depth=0)


def test_steps_may_be_skipped_and_the_object_may_be_empty() -> None:
    parser = StepParser(STEPS)
    assert feed_all(parser, ["{ }"]) == [ObjectCompleted(2)]
    parser = StepParser(STEPS)
    feed_all(parser, ['{"answer": 1}'])
    assert parser.completed == {"answer": 1}


# --- values -----------------------------------------------------------------------------

VALUES = [
    '""',
    '"plain"',
    '"\\u00e9\\u4e2d \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t"',
    '"é中😀"',
    '"\\ud800"',  # a lone surrogate: valid JSON grammar, kept as json.loads keeps it
    "0",
    "-0",
    "-0.0",
    "12345678901234567890123",
    "3.25",
    "1e10",
    "1E+2",
    "-2.5e-3",
    "1e400",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '[1, [2, [3, []]], {"a": {"b": [null, true, "x"]}}]',
    '{"": 1, "dup": 1, "dup": 2}',  # duplicate keys are the model's business below the top
    "[\n  1 ,\t2\r\n]",
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_values_equal_json_loads(value: str, size: int) -> None:
    text = '{"plan": ' + value + "}"
    parser = StepParser(STEPS)
    events = feed_all(parser, chunks_of(text, size))
    expected = json.loads(value)
    completed = [e for e in events if isinstance(e, StepCompleted)]
    assert len(completed) == 1
    assert completed[0].raw == value.strip()
    assert completed[0].value == expected
    assert parser.completed == {"plan": expected}
    assert type(completed[0].value) is type(expected)


def test_negative_zero_keeps_its_sign() -> None:
    parser = StepParser(STEPS)
    feed_all(parser, ['{"plan": -0.0, "items": [-0.0]}'])
    assert math.copysign(1.0, parser.completed["plan"]) == -1.0
    assert math.copysign(1.0, parser.completed["items"][0]) == -1.0


def test_step_keys_with_escapes_are_decoded() -> None:
    parser = StepParser(STEPS)
    feed_all(parser, chunks_of('{"r\\u00e9sum\\u00e9": 1, "\\u0061nswer": 2}', 2))
    assert parser.completed == {"résumé": 1, "answer": 2}


def test_values_nested_up_to_max_depth_parse() -> None:
    deep = "[" * 255 + "]" * 255  # with the top-level object: 256 levels
    parser = StepParser(STEPS)
    feed_all(parser, ['{"plan": ' + deep + "}"])
    assert parser.completed == {"plan": json.loads(deep)}
    with pytest.raises(OutputParseError) as info:
        feed_all(StepParser(STEPS), ['{"plan": [' + deep + "]}"])
    assert (info.value.problem, info.value.position, info.value.step) == ("too_deep", 264, "plan")


# --- rule breaks ------------------------------------------------------------------------

KEY_PROBLEMS = [
    ('{"items": 1, "plan": 2}', "out_of_order", 13, "plan"),
    ('{"plan": 1, "plan": 2}', "duplicate_key", 12, "plan"),
    ('{"plan": 1, "items": 2, "plan": 3}', "duplicate_key", 24, "plan"),
    ('{"plan": 1, "extra": 2}', "unknown_key", 12, "extra"),
    ('{"Plan": 1}', "unknown_key", 1, "Plan"),
    ('{"resume": 1}', "unknown_key", 1, "resume"),
]


@pytest.mark.parametrize(("text", "problem", "position", "step"), KEY_PROBLEMS)
@pytest.mark.parametrize("size", [1, 4, 1000])
def test_key_problems(text: str, problem: str, position: int, step: str, size: int) -> None:
    parser = StepParser(STEPS)
    with pytest.raises(OutputParseError) as info:
        feed_all(parser, chunks_of(text, size), close=False)
    exc = info.value
    assert (exc.problem, exc.position, exc.step) == (problem, position, step)
    assert repr(step) in str(exc)
    # Reported as soon as the key's closing quote is read, before the value.
    closing = text.index('"', position + 1)
    assert parser.position <= closing + size


INVALID = [
    ('{"plan": "\\x"}', 11),  # bad escape
    ('{"plan": "\\u12G4"}', 14),
    ('{"plan": "a\nb"}', 11),  # raw control char in a string
    ('{"plan": "\x00"}', 10),
    ('{"plan": tru3}', 12),
    ('{"plan": nul}', 12),
    ('{"plan": 01}', 10),
    ('{"plan": 1.}', 11),
    ('{"plan": 1.e5}', 11),
    ('{"plan": 1e}', 11),
    ('{"plan": 1e+}', 12),
    ('{"plan": -}', 10),
    ('{"plan": +1}', 9),
    ('{"plan": .5}', 9),
    ('{"plan": 1.5.2}', 12),
    ('{"plan": 12x}', 11),
    ('{"plan": NaN}', 9),
    ('{"plan": Infinity}', 9),
    ('{"plan": -Infinity}', 10),
    ('{"plan": [1,]}', 12),
    ('{"plan": [,1]}', 10),
    ('{"plan": {"a": 1,}}', 17),
    ('{"plan": 1,}', 11),
    ('{"plan" 1}', 8),
    ('{"plan": {"a" 1}}', 14),
    ('{"plan": {1: 2}}', 10),
    ("{'plan': 1}", 1),
    ('{"plan": 1 "items": 2}', 11),
    ('{"plan": [1}', 11),
    ('{"plan": {"a": 1]}', 16),
    ('{"plan": 1}}', 11),
    ('{"plan": 1} x', 12),
    ('{"plan": 1}{}', 11),
    ("\ufeff{}", 0),
    ('{"plan": 1\u00a0}', 10),  # only JSON's four whitespace chars count
    ("{,}", 1),
    ("x", 0),
]


@pytest.mark.parametrize(("text", "position"), INVALID)
@pytest.mark.parametrize("size", [1, 2, 1000])
def test_invalid_json_is_reported_at_the_offending_char(
    text: str, position: int, size: int
) -> None:
    exc = parse_error(text, size=size)
    assert (exc.problem, exc.position) == ("invalid_json", position)
    assert f"character {position}" in str(exc)


def test_invalid_json_inside_a_step_names_the_step() -> None:
    assert parse_error('{"plan": 1, "items": [tru3]}').step == "items"
    assert parse_error('{"plan" 1}').step is None


@pytest.mark.parametrize(
    ("text", "position"), [("[1]", 0), ('  "x"', 2), ("\n12", 1), ("null", 0), ("true", 0)]
)
def test_top_level_value_must_be_an_object(text: str, position: int) -> None:
    exc = parse_error(text)
    assert (exc.problem, exc.position) == ("not_an_object", position)


def test_an_error_is_raised_again_by_every_later_call() -> None:
    parser = StepParser(STEPS)
    with pytest.raises(OutputParseError) as first:
        parser.feed('{"plan": tru3')
    with pytest.raises(OutputParseError) as again:
        parser.feed("e}")
    assert again.value is first.value
    with pytest.raises(OutputParseError) as again:
        parser.feed("")
    assert again.value is first.value
    with pytest.raises(OutputParseError) as again:
        parser.close()
    assert again.value is first.value


def test_truncation_error_is_raised_again_too() -> None:
    parser = StepParser(STEPS)
    parser.feed('{"plan": "x')
    with pytest.raises(TruncatedOutputError) as first:
        parser.close()
    with pytest.raises(TruncatedOutputError) as again:
        parser.feed('"}')
    assert again.value is first.value


# --- truncation -------------------------------------------------------------------------

SAMPLE = (
    '{"plan": "a\\u00e9\\"\\n", "résumé": [-1.5e+3, true, false, null, {"k": []}],'
    ' "items": 0, "answer": 12}'
)


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_truncation_at_every_prefix(size: int) -> None:
    for cut in range(len(SAMPLE)):
        prefix = SAMPLE[:cut]
        parser = StepParser(STEPS)
        feed_all(parser, chunks_of(prefix, size), close=False)
        with pytest.raises(TruncatedOutputError) as info:
            parser.close()
        assert info.value.partial == prefix
        assert info.value.position == cut
        assert "token limit" in str(info.value)
    parser = StepParser(STEPS)
    events = feed_all(parser, chunks_of(SAMPLE, size))
    assert isinstance(events[-1], ObjectCompleted)
    assert parser.done
    assert parser.completed == json.loads(SAMPLE)


def test_truncation_message_names_the_step_being_read() -> None:
    parser = StepParser(STEPS)
    parser.feed('{"plan": "x", "items": [1, 2')
    with pytest.raises(TruncatedOutputError, match="inside step 'items'"):
        parser.close()


def test_empty_output_is_truncated() -> None:
    with pytest.raises(TruncatedOutputError) as info:
        StepParser(STEPS).close()
    assert (info.value.partial, info.value.position) == ("", 0)


# --- chunking properties ----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def outputs(draw: st.DrawFn) -> str:
    present = draw(st.lists(st.booleans(), min_size=len(STEPS), max_size=len(STEPS)))
    obj = {step: draw(json_values) for step, keep in zip(STEPS, present, strict=True) if keep}
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (", ", ": "), (" ,\n", " :\r\n ")]))
    return json.dumps(obj, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))


@st.composite
def split_points(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=30))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@PROPERTY
@given(data=st.data())
def test_any_chunking_gives_json_loads_values_in_order(data: st.DataObject) -> None:
    text = data.draw(outputs())
    expected = json.loads(text)
    for parts in (data.draw(split_points(text)), list(text)):
        parser = StepParser(STEPS)
        events = feed_all(parser, parts)
        completed = [e for e in events if isinstance(e, StepCompleted)]
        assert [e.step for e in completed] == list(expected)
        assert {e.step: e.value for e in completed} == expected
        assert parser.completed == expected
        for event in completed:
            assert text[event.start : event.end] == event.raw
            assert json.loads(event.raw) == event.value
        started = [e for e in events if isinstance(e, StepStarted)]
        assert [e.position for e in started] == [e.start for e in completed]
        assert events[-1] == ObjectCompleted(text.rindex("}"))


@PROPERTY
@given(data=st.data())
def test_any_proper_prefix_is_truncated(data: st.DataObject) -> None:
    text = data.draw(outputs())
    cut = data.draw(st.integers(0, len(text) - 1))
    parser = StepParser(STEPS)
    feed_all(parser, data.draw(split_points(text[:cut])), close=False)
    with pytest.raises(TruncatedOutputError) as info:
        parser.close()
    assert info.value.partial == text[:cut]


MUTATIONS = list('{}[]":,\\ \n0123456789.eE+-tfnrulasx\x01é')


def _expected_verdict(text: str) -> bool:
    """Whether the stdlib accepts `text` as an object of the steps, in order, once each."""
    pairs_seen: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs_seen.append(pairs)
        return dict(pairs)

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(text, object_pairs_hook=hook, parse_constant=refuse)
    except ValueError:
        return False
    if not isinstance(value, dict):
        return False
    keys = [key for key, _ in pairs_seen[-1]]  # the top-level object closes last
    index = [STEPS.index(k) if k in STEPS else -1 for k in keys]
    return -1 not in index and index == sorted(set(index))


@PROPERTY
@given(data=st.data())
def test_mutated_outputs_are_judged_like_the_stdlib(data: st.DataObject) -> None:
    text = data.draw(outputs())
    at = data.draw(st.integers(0, len(text)))
    kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.sampled_from(MUTATIONS))
    if kind == "insert":
        text = text[:at] + char + text[at:]
    elif kind == "delete":
        text = text[:at] + text[at + 1 :]
    else:
        text = text[:at] + char + text[at + 1 :]
    parser = StepParser(STEPS)
    error: OutputParseError | TruncatedOutputError | None = None
    failed_at = -1
    for index, char in enumerate(text):
        try:
            parser.feed(char)
        except OutputParseError as exc:
            error, failed_at = exc, index
            break
    else:
        try:
            parser.close()
        except TruncatedOutputError as exc:
            error = exc
    accepted = error is None
    if isinstance(error, OutputParseError) and error.problem in {"invalid_json", "too_deep"}:
        assert error.position == failed_at  # raised by the offending char itself
    assert accepted == _expected_verdict(text)
    if accepted:
        assert parser.completed == json.loads(text)


@PROPERTY
@given(text=st.text(alphabet=st.sampled_from(MUTATIONS)), data=st.data())
def test_any_text_raises_only_arq_errors(text: str, data: st.DataObject) -> None:
    parser = StepParser(STEPS, max_depth=4)
    try:
        feed_all(parser, data.draw(split_points(text)))
    except (OutputParseError, TruncatedOutputError):
        return
    assert parser.completed == json.loads(text)


# --- hostile inputs ---------------------------------------------------------------------


def _raises_at(text: str, size: int, problem: str, position: int) -> None:
    """The parser stops at the offending character, without reading the rest (how long
    that takes is `bench/parser.py --hostile`'s business)."""
    exc = parse_error(text, size=size)
    assert (exc.problem, exc.position) == (problem, position)


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_deep_nesting_is_too_deep(size: int) -> None:
    _raises_at('{"plan": ' + "[" * 100_000, size, "too_deep", 9 + 255)
    _raises_at('{"plan":' + '{"a":' * 100_000, size, "too_deep", 8 + 5 * 255)


def test_deep_nesting_with_a_high_max_depth_raises_an_arq_error() -> None:
    deep = "[" * 5000 + "]" * 5000
    parser = StepParser(STEPS, max_depth=10_000)
    with pytest.raises(OutputParseError) as info:
        parser.feed('{"plan": ' + deep)
    assert (info.value.problem, info.value.step) == ("too_deep", "plan")


@pytest.mark.parametrize("size", [7, 1 << 20])
def test_huge_integers_are_refused(size: int) -> None:
    _raises_at('{"plan": ' + "9" * 100_000 + "}", size, "invalid_json", 9 + 4300)
    _raises_at('{"plan": [-0.' + "1" * 100_000 + "]}", size, "invalid_json", 10 + 4300)


def test_numbers_are_capped_at_4300_chars() -> None:
    parser = StepParser(STEPS)
    feed_all(parser, chunks_of('{"plan": ' + "7" * 4300 + "}", 100))
    assert parser.completed["plan"] == int("7" * 4300)
    assert parse_error('{"plan": -' + "7" * 4300 + "}", size=100).position == 9 + 4300


def test_lone_surrogate_escapes_are_kept_like_json_loads() -> None:
    text = '{"plan": "\\udc00\\ud800x", "items": ["\\ud83d"]}'
    parser = StepParser(STEPS)
    feed_all(parser, chunks_of(text, 1))
    assert parser.completed == json.loads(text)


def test_control_chars_in_strings_are_refused() -> None:
    for code in [*range(0x20), 0x7F]:
        text = '{"plan": "a' + chr(code) + '"}'
        if code == 0x7F:  # DEL is not a JSON control char
            parser = StepParser(STEPS)
            feed_all(parser, [text])
            assert parser.completed == {"plan": "a\x7f"}
        else:
            assert parse_error(text).position == 11


def test_huge_whitespace_and_long_strings_stay_linear() -> None:
    text = " " * 100_000 + '{"plan": "' + "ab\\n" * 50_000 + '", "answer": ' + " " * 100_000
    text += "1}" + " \n" * 50_000
    parser = StepParser(STEPS)
    feed_all(parser, chunks_of(text, 3))
    assert parser.completed == {"plan": "ab\n" * 50_000, "answer": 1}


# --- parse_tolerant ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"plan": "x", "answer": 1}',
        '  \n{"plan": "x", "answer": 1}\n',
        '```json\n{"plan": "x", "answer": 1}\n```',
        '```\n{"plan": "x", "answer": 1}\n```',
        'Sure! Here it is:\n```JSON\n{"plan": "x", "answer": 1}\n```\nHope this helps {:',
        'The {answer} is below.\n{"plan": "x", "answer": 1} -- done',
        'Use {"x": 1}? No: {"plan": "x", "answer": 1}',
    ],
)
def test_parse_tolerant_finds_the_object(text: str) -> None:
    assert parse_tolerant(text, STEPS) == {"plan": "x", "answer": 1}


def test_parse_tolerant_without_steps_takes_the_first_object() -> None:
    assert parse_tolerant('[1] then {"x": 1} then {"plan": 2}') == {"x": 1}


def test_parse_tolerant_prefers_objects_with_step_keys() -> None:
    text = 'example: {"x": 1}\n```json\n{"answer": 2}\n```'
    assert parse_tolerant(text, STEPS) == {"answer": 2}

    class Reply(BaseModel):
        answer: int

    assert parse_tolerant(text, Reply) == {"answer": 2}
    assert parse_tolerant('{"x": 1}', STEPS) == {"x": 1}  # better than nothing
    nested = '{"x": {"answer": 1}}'  # an object inside another is no candidate
    assert parse_tolerant(nested, STEPS) == {"x": {"answer": 1}}


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("no json here", 0),
        ("[1, 2, 3]", 0),
        ('{"plan": "x"', 12),
        ('```json\n{"plan": tru}\n```', 17),
    ],
)
def test_parse_tolerant_without_an_object_raises(text: str, position: int) -> None:
    with pytest.raises(OutputParseError) as info:
        parse_tolerant(text, STEPS)
    assert (info.value.problem, info.value.position) == ("invalid_json", position)
    assert "JSON object" in str(info.value)


HOSTILE = ["{" * 200_000, "[" * 200_000, '{"a": ' * 50_000, "x {" * 100_000, "```" * 100_000]


def test_parse_tolerant_on_hostile_text_tries_a_bounded_number_of_starts() -> None:
    for text in [*HOSTILE, "```" * 100_000 + "{"]:
        assert len(_candidates(text)) <= _MAX_ATTEMPTS  # each try is linear in the text
        with pytest.raises(OutputParseError):
            parse_tolerant(text)
    big = "{" * 100_000 + ' {"answer": 1}'
    with pytest.raises(OutputParseError):  # beyond the bounded number of attempts
        parse_tolerant(big)
    assert parse_tolerant('{"n": ' + "1" * 100_000 + '} {"answer": 1}') == {"answer": 1}
