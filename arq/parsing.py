"""Incremental JSON step parser: checks a model's JSON output step by step while it streams.

The output must be one JSON object whose keys are the declared steps, in declared order
(a step may be skipped). `StepParser` validates the syntax as chunks arrive, so a broken
output is rejected at the exact character that broke it, and reports each step as soon as
its value is complete. Work is linear in the output size whatever the chunk sizes: runs
(string bodies, digits, whitespace) are skipped with compiled regexes, and only the text of
the step being read is joined, once, when it ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeAlias, cast

from arq.errors import OutputParseError, ParseProblem, SchemaError, TruncatedOutputError

__all__ = [
    "ObjectCompleted",
    "ParseEvent",
    "StepCompleted",
    "StepParser",
    "StepStarted",
    "parse_tolerant",
]


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A top-level step's key was read and its value began at `position`."""

    step: str
    position: int


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A top-level step's value ended; `raw` is its text, `output[start:end]`."""

    step: str
    value: Any
    raw: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ObjectCompleted:
    """The top-level closing brace was read; `position` is its offset."""

    position: int


ParseEvent: TypeAlias = StepStarted | StepCompleted | ObjectCompleted

# Modes between chunks. A number or literal cut by the chunk end is kept as `_pending` text
# and scanned again with the next chunk (it is short: numbers are capped); a string cut by
# the chunk end is streamed instead, so long strings are never scanned twice; only an
# escape cut by the chunk end is pending then (mode _ESCAPE).
_TOKEN, _STRING, _ESCAPE, _FAILED = range(4)
# Grammar states between tokens: what the next token may be.
_START, _VALUE, _STEP_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _AFTER, _END = range(9)
# What the streamed string is, so that its end can be handled when it arrives.
_STR_VALUE, _STR_KEY, _STR_STEP_KEY = range(3)

_WS = " \t\n\r"
_NUM_END = " \t\n\r,}]"
_DIGITS = "0123456789"
_VALUE_START = '{["-0123456789tfn'
_LITERALS = {"t": "true", "f": "false", "n": "null"}
# Longer numbers are refused as they arrive: CPython refuses to convert ints of more than
# 4300 digits, converting huge ones is quadratic, and a pending number is re-scanned.
_MAX_NUMBER_CHARS = 4300


class _Matcher(Protocol):
    def __call__(self, string: str, pos: int = ...) -> re.Match[str]: ...


# Patterns that can match the empty string always match: typed so, to skip None checks.
_ws_run = cast(_Matcher, re.compile(r"[ \t\n\r]*").match)
# A string body with its complete escapes; it stops at the closing quote, at a control
# character, or at an escape that is invalid or cut by the end of the chunk.
_str_body = cast(
    _Matcher,
    re.compile(r'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*').match,
)
_plain = cast(_Matcher, re.compile(r'[^"\\\x00-\x1f]*').match)  # no escapes: cheaper
# Fast check that a chunk continues a string without ending it or holding an escape.
_str_stop = re.compile(r'["\\\x00-\x1f]').search
# The part of an escape that may still be completed by more text.
_escape_prefix = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?").match
_number = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?").match
# The longest prefix of a number: as the grammar is deterministic, the char after it is
# the offending one when a number does not end well.
_number_prefix = cast(
    _Matcher,
    re.compile(
        r"-?(?:(?:0|[1-9][0-9]*)(?:\.(?:[0-9]+(?:[eE][+-]?[0-9]*)?)?|[eE][+-]?[0-9]*)?)?"
    ).match,
)


def _step_names(steps: Sequence[str] | type[Any]) -> list[str]:
    """Return the declared step keys, from a sequence or a pydantic model class."""
    if isinstance(steps, type):
        fields = getattr(steps, "model_fields", None)
        if not isinstance(fields, dict):
            raise TypeError(f"{steps.__name__} is not a pydantic model: pass step names instead")
        return list(fields)
    if isinstance(steps, str):
        raise TypeError("steps must be a sequence of step names, not a single string")
    names = list(steps)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError(f"step {name!r} is declared twice", field=name)
        seen.add(name)
    return names


def _show(c: str) -> str:
    """Quote a char for a message; control chars as U+XXXX."""
    return repr(c) if c.isprintable() else f"U+{ord(c):04X}"


class StepParser:
    """Parse a streamed JSON object of ordered steps, chunk by chunk.

    Args:
        steps: The step keys in declared order, or a pydantic model class whose fields
            are the steps.
        max_depth: Deepest container nesting allowed; the top-level object counts as 1.
    """

    def __init__(self, steps: Sequence[str] | type[Any], *, max_depth: int = 256) -> None:
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        self._steps = _step_names(steps)
        self._index = {name: k for k, name in enumerate(self._steps)}
        self._max_depth = max_depth
        self._chunks: list[str] = []  # everything received: joined per step, and for errors
        self._offset = 0  # chars received
        self._error: OutputParseError | TruncatedOutputError | None = None
        self._mode = _TOKEN
        self._pending = ""  # a cut number or literal, or a cut escape in a streamed string
        self._g = _START
        self._stack: list[bool] = []  # True for an object, False for an array
        self._str_kind = _STR_VALUE
        self._cap = (0, 0)  # chunk index and offset where the step key or value began
        self._key_pos = 0
        self._key = ""
        self._last = -1  # declared index of the last step key read
        self._seen: set[str] = set()
        self._current: str | None = None
        self._vstart = 0
        self._completed: dict[str, Any] = {}

    @property
    def current_step(self) -> str | None:
        """The step whose value is being read now, else None."""
        return self._current

    @property
    def position(self) -> int:
        """Characters received so far."""
        return self._offset

    @property
    def done(self) -> bool:
        """Whether the top-level object has been closed."""
        return self._g == _END

    @property
    def completed(self) -> dict[str, Any]:
        """A copy of the values of the completed steps, in output order."""
        return dict(self._completed)

    def feed(self, chunk: str) -> list[ParseEvent]:
        """Read the next chunk of output and return the events it completed, in order.

        Raises:
            OutputParseError: The output broke a rule; `position` is the offending char.
                Once raised, every later call raises it again.
        """
        mode = self._mode
        e = 0
        if mode:
            if mode == _STRING:
                # Hot path: inside a long string most chunks hold no quote, escape or
                # control char, and most others only whole escapes.
                m = _str_stop(chunk)
                if m is not None:
                    e = m.start()  # if a quote, the closing one: no backslash before it
                    if chunk[e] != '"':
                        e = _str_body(chunk, e).end()
                if m is None or e == len(chunk):
                    self._chunks.append(chunk)
                    self._offset += len(chunk)
                    return []
            elif mode == _FAILED:
                assert self._error is not None
                raise self._error.with_traceback(None)
        # One flat loop with few calls on the common paths: it runs for every token.
        self._chunks.append(chunk)
        events: list[ParseEvent] = []
        pending = self._pending
        base = self._offset  # offset of text[0] in the output
        self._offset = base + len(chunk)
        if pending:
            text = pending + chunk
            base -= len(pending)
            self._pending = ""
        else:
            text = chunk
        n = len(text)
        i = 0
        stack = self._stack
        g = self._g
        if mode != _TOKEN:  # continue a streamed string
            if mode == _ESCAPE:  # else `e` is known from the hot path's test
                e = _str_body(text).end()
            if e == n or text[e] != '"':
                self._mode = _STRING
                if e < n:
                    self._string_stop(text, e, base)
                return events
            i = e + 1
            self._mode = _TOKEN
            kind = self._str_kind
            if kind == _STR_VALUE:
                g = _AFTER
                if len(stack) == 1:
                    self._finish_step(base + i, events)
            else:
                if kind == _STR_STEP_KEY:
                    self._check_key(self._captured(base + i))
                g = _COLON
        while i < n:
            c = text[i]
            if c in _WS:
                i += 1
                if i < n and text[i] in _WS:  # a run, e.g. indentation; else a lone space
                    i = _ws_run(text, i).end()
                if i == n:
                    break
                c = text[i]
            if g == _AFTER:
                if c == ",":
                    g = _KEY if stack[-1] else _VALUE
                    i += 1
                    continue
                if c != ("}" if stack[-1] else "]"):
                    self._fail(base + i, "',' or '}'" if stack[-1] else "',' or ']'", c)
            elif g <= _VALUE_OR_CLOSE and (g != _VALUE_OR_CLOSE or c != "]"):
                if g == _STEP_VALUE:
                    self._start_step(base + i, events)
                    g = _VALUE
                elif g == _START and c != "{":
                    self._not_object(base + i, c)
                if c == '"':
                    e = _plain(text, i + 1).end()
                    if e < n and text[e] == "\\":
                        e = _str_body(text, e).end()
                    if e < n and text[e] == '"':
                        i = e + 1
                        g = _AFTER
                        if len(stack) == 1:
                            self._finish_step(base + i, events)
                        continue
                    self._str_kind = _STR_VALUE
                    self._mode = _STRING
                    if e < n:
                        self._string_stop(text, e, base)
                    break
                if c == "{" or c == "[":
                    if len(stack) >= self._max_depth:
                        msg = f"the JSON nests deeper than {self._max_depth} levels"
                        self._stop(
                            "too_deep", f"{msg} at character {base + i}", base + i, self._current
                        )
                    stack.append(c == "{")
                    g = _KEY_OR_CLOSE if c == "{" else _VALUE_OR_CLOSE
                    i += 1
                    continue
                if c in "-0123456789":
                    m = _number(text, i)
                    if m is not None:  # a whole number, and the delimiter after it?
                        e = m.end()
                        if e < n and text[e] in _NUM_END and e - i <= _MAX_NUMBER_CHARS:
                            i = e
                            g = _AFTER
                            if len(stack) == 1:
                                self._finish_step(base + i, events)
                            continue
                    # Cut by the chunk end, too long, or invalid: the longest valid prefix
                    # tells which, and where.
                    e = _number_prefix(text, i).end()
                    if e - i > _MAX_NUMBER_CHARS:
                        self._fail(
                            base + i + _MAX_NUMBER_CHARS,
                            f"a number of at most {_MAX_NUMBER_CHARS} characters",
                            text[i + _MAX_NUMBER_CHARS],
                        )
                    if e == n:  # it may go on in the next chunk
                        self._pending = text[i:]
                        break
                    self._fail(
                        base + e,
                        "',', '}', ']' or whitespace after the number"
                        if text[e - 1] in _DIGITS
                        else "a digit",
                        text[e],
                    )
                word = _LITERALS.get(c)
                if word is None:
                    self._fail(base + i, "a JSON value", c)
                if text.startswith(word, i):
                    i += len(word)
                    g = _AFTER
                    if len(stack) == 1:
                        self._finish_step(base + i, events)
                    continue
                for k in range(1, len(word)):
                    if i + k == n:  # cut by the chunk end
                        self._pending = text[i:]
                        break
                    if text[i + k] != word[k]:
                        self._fail(base + i + k, repr(word), text[i + k])
                break
            elif g == _KEY or (g == _KEY_OR_CLOSE and c != "}"):
                if c != '"':
                    self._fail(base + i, "a quoted key", c)
                e = _plain(text, i + 1).end()
                if e < n and text[e] == "\\":
                    e = _str_body(text, e).end()
                if e < n and text[e] == '"':
                    if len(stack) == 1:
                        self._key_pos = base + i
                        self._check_key(text[i : e + 1])
                    i = e + 1
                    if i < n and text[i] == ":":  # the usual `"key":`, in one step
                        i += 1
                        g = _STEP_VALUE if len(stack) == 1 else _VALUE
                    else:
                        g = _COLON
                    continue
                self._mode = _STRING
                if e < n:
                    self._string_stop(text, e, base)
                if len(stack) == 1:
                    self._key_pos = base + i
                    self._cap = self._locate(base + i)
                    self._str_kind = _STR_STEP_KEY
                else:
                    self._str_kind = _STR_KEY
                break
            elif g == _COLON:
                if c != ":":
                    self._fail(base + i, "':' after the key", c)
                g = _STEP_VALUE if len(stack) == 1 else _VALUE
                i += 1
                continue
            elif g == _END:
                self._fail(base + i, "nothing but whitespace after the JSON object", c)
            # Here c closes the innermost container, and it is the right bracket for it.
            stack.pop()
            i += 1
            g = _AFTER
            if len(stack) == 1:
                self._finish_step(base + i, events)
            elif not stack:
                g = _END
                events.append(ObjectCompleted(base + i - 1))
        self._g = g
        return events

    def close(self) -> list[ParseEvent]:
        """Signal the end of the output; return any remaining events (there are none).

        Raises:
            TruncatedOutputError: The object was not complete.
        """
        if self._mode == _FAILED:
            assert self._error is not None
            raise self._error.with_traceback(None)
        if self._g == _END:
            return []
        where = f" inside step {self._current!r}" if self._current is not None else ""
        error = TruncatedOutputError(
            f"the output ended after {self._offset} characters{where}, before the JSON"
            " object was complete; usually the token limit was reached: raise max_tokens"
            " or bound the long steps",
            partial="".join(self._chunks),
            position=self._offset,
        )
        self._error = error
        self._mode = _FAILED
        raise error

    def _stop(self, problem: ParseProblem, msg: str, pos: int, step: str | None) -> NoReturn:
        """Raise an OutputParseError and remember it: the parser is unusable from now on."""
        self._error = OutputParseError(msg, problem=problem, position=pos, step=step)
        self._mode = _FAILED
        raise self._error

    def _fail(self, pos: int, expected: str, found: str) -> NoReturn:
        """Raise invalid_json for the char `found` at offset `pos`."""
        msg = f"invalid JSON at character {pos}: expected {expected}, found {_show(found)}"
        self._stop("invalid_json", msg, pos, self._current)

    def _string_stop(self, text: str, e: int, base: int) -> None:
        """A string body stopped at `e`, not at a quote: keep a cut escape pending, or raise."""
        m = _escape_prefix(text, e)
        if m is None:
            self._fail(base + e, "control characters to be escaped in a string", text[e])
        end = m.end()
        if end < len(text):
            self._fail(
                base + end, 'an escape: \\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX', text[end]
            )
        self._pending = text[e:]
        self._mode = _ESCAPE

    def _not_object(self, pos: int, c: str) -> NoReturn:
        if c not in _VALUE_START:
            self._fail(pos, "a JSON object", c)
        msg = f"the output must be a JSON object, but its value at character {pos} is not"
        self._stop("not_an_object", msg, pos, None)

    def _locate(self, pos: int) -> tuple[int, int]:
        """Chunk index and offset in it of output offset `pos`, which is in the last chunk.

        Captures start at a step key or value seen for the first time: pending text is
        always re-read before them, so they are never inside it.
        """
        last = len(self._chunks) - 1
        return last, pos - self._offset + len(self._chunks[last])

    def _captured(self, end: int) -> str:
        """Output text from the capture start to offset `end`, which is in the last chunk."""
        first, off = self._cap
        last = len(self._chunks) - 1
        stop = end - self._offset + len(self._chunks[last])
        if first == last:
            return self._chunks[last][off:stop]
        parts = self._chunks[first:last]
        parts[0] = parts[0][off:]
        parts.append(self._chunks[last][:stop])
        return "".join(parts)

    def _check_key(self, raw: str) -> None:
        """Check a top-level key against the declared steps, as soon as it is read."""
        key: str = raw[1:-1] if "\\" not in raw else json.loads(raw)
        pos = self._key_pos
        problem: ParseProblem
        index = self._index.get(key)
        if index is None:
            problem = "unknown_key"
            msg = f"unknown key {key!r} at character {pos}: the steps are {self._steps}"
        elif key in self._seen:
            problem = "duplicate_key"
            msg = f"step {key!r} appears twice, again at character {pos}"
        elif index < self._last:
            problem = "out_of_order"
            msg = (
                f"step {key!r} at character {pos} comes after {self._steps[self._last]!r} but"
                f" is declared before it: the steps must come in order {self._steps}"
            )
        else:
            self._seen.add(key)
            self._last = index
            self._key = key
            return
        self._stop(problem, msg, pos, key)

    def _start_step(self, pos: int, events: list[ParseEvent]) -> None:
        self._current = self._key
        self._cap = self._locate(pos)
        self._vstart = pos
        events.append(StepStarted(self._key, pos))

    def _finish_step(self, end: int, events: list[ParseEvent]) -> None:
        raw = self._captured(end)
        step = self._key
        if raw[0] == '"' and "\\" not in raw:
            value: Any = raw[1:-1]
        else:
            # The syntax is validated and the depth bounded, so this cannot fail on
            # well-formed input; map anything else (e.g. a lowered int digit limit).
            try:
                value = json.loads(raw)
            except RecursionError:
                self._stop("too_deep", f"step {step!r} nests too deeply", self._vstart, step)
            except ValueError as exc:
                msg = f"step {step!r} cannot be decoded: {exc}"
                self._stop("invalid_json", msg, self._vstart, step)
        self._completed[step] = value
        self._current = None
        events.append(StepCompleted(step, value, raw, self._vstart, end))


# Bounds the raw_decode attempts of parse_tolerant, each linear in the text after it.
_MAX_ATTEMPTS = 32
_fence = re.compile(r"```[A-Za-z0-9_+-]*")


def _candidates(text: str) -> list[int]:
    """Offsets where a JSON object may start, the likeliest first, at most _MAX_ATTEMPTS."""
    found: dict[int, None] = {}  # an ordered set
    stripped = len(text) - len(text.lstrip())
    if text.startswith("{", stripped):
        found[stripped] = None
    brace = -1  # only grows, so the searches after fences read the text once in all
    for m in _fence.finditer(text):
        if m.end() > brace:
            brace = text.find("{", m.end())
            if brace < 0:
                break
            found[brace] = None
            if len(found) >= _MAX_ATTEMPTS:
                break
    brace = text.find("{")
    while brace >= 0 and len(found) < _MAX_ATTEMPTS:
        found[brace] = None
        brace = text.find("{", brace + 1)
    return list(found)


def parse_tolerant(text: str, steps: Sequence[str] | type[Any] | None = None) -> dict[str, Any]:
    """Find the JSON object in a model's text, which may hold fences or prose around it.

    For backends without constrained decoding. Objects are tried at the start of the text,
    then after code fences, then at each brace (a bounded number of tries). With `steps`,
    the first object having at least one step key wins over other objects; objects inside
    an object already decoded are not candidates.

    Raises:
        OutputParseError: No JSON object was found (problem "invalid_json").
    """
    wanted = set(_step_names(steps)) if steps is not None else None
    decoder = json.JSONDecoder()
    fallback: dict[str, Any] | None = None
    failed_at: int | None = None
    decoded: list[tuple[int, int]] = []
    for start in _candidates(text):
        if any(a < start < b for a, b in decoded):
            continue
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            failed_at = exc.pos if failed_at is None else failed_at
            continue
        except (ValueError, RecursionError):  # e.g. an int too long to convert
            failed_at = start if failed_at is None else failed_at
            continue
        decoded.append((start, end))
        if wanted is None or not wanted.isdisjoint(obj):
            return cast("dict[str, Any]", obj)
        if fallback is None:
            fallback = obj
    if fallback is not None:
        return fallback
    hint = "the output should be one JSON object, bare or in a ```json fence"
    if failed_at is None:
        raise OutputParseError(
            f"no JSON object found in the output, which holds no '{{': {hint}",
            problem="invalid_json",
            position=0,
        )
    raise OutputParseError(
        f"no valid JSON object found in the output; the first one breaks at character"
        f" {failed_at}: {hint}",
        problem="invalid_json",
        position=failed_at,
    )
