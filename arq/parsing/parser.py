"""`StepParser`: the incremental JSON step parser (see `arq.parsing`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, cast

from arq.errors import InvalidArgumentError, OutputParseError, ParseProblem, TruncatedOutputError
from arq.parsing.events import (
    ObjectCompleted,
    ParseEvent,
    StepCompleted,
    StepStarted,
    step_names,
)

__all__ = ["StepParser"]

# Modes between chunks. A number or literal cut by the chunk end is kept as `_pending` text
# and read again with the next chunk (it is short: numbers are capped); a string cut by the
# chunk end is streamed instead, so long strings are never scanned twice.
_TOKEN = 0  # between tokens, or in a pending number or literal
_STRING = 1  # in a streamed string
_ESCAPE = 2  # in a streamed string whose last chunk ended in a cut escape, kept pending
_FAILED = 3  # an error was raised: every later call raises it again
# Grammar states between tokens: what the next token may be; each is the index of its
# reader in _READERS. While a string is streamed, the state is the one it began in:
# _KEY or _KEY_OR_CLOSE for a key, else a value state.
_START = 0  # the top-level object's opening brace
_VALUE = 1
_STEP_VALUE = 2  # a step's value, which starts the step
_VALUE_OR_CLOSE = 3  # an array's first item, or its closing bracket
_KEY = 4
_KEY_OR_CLOSE = 5  # an object's first key, or its closing brace
_COLON = 6
_AFTER = 7  # after a value: a comma, or the closing bracket of the innermost container
_END = 8  # nothing but whitespace, after the top-level object

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
            raise InvalidArgumentError("max_depth must be at least 1")
        self._steps = step_names(steps)
        self._index = {name: k for k, name in enumerate(self._steps)}
        self._max_depth = max_depth
        self._chunks: list[str] = []  # everything received: joined per step, and for errors
        self._offset = 0  # chars received
        self._error: OutputParseError | TruncatedOutputError | None = None
        self._mode = _TOKEN
        self._pending = ""  # a cut number or literal, or a cut escape in a streamed string
        self._g = _START
        self._stack: list[bool] = []  # True for an object, False for an array
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
        end = 0  # where a streamed string stops in the chunk
        if mode == _STRING:
            # Hot path: inside a long string most chunks hold no quote, escape or control
            # char (three tests, cheaper than a regex on short chunks), and most others
            # only whole escapes.
            if '"' not in chunk and "\\" not in chunk and chunk.isprintable():
                self._chunks.append(chunk)
                self._offset += len(chunk)
                return []
            end = _str_body(chunk).end()
            if end == len(chunk):
                self._chunks.append(chunk)
                self._offset += end
                return []
        elif mode == _FAILED:
            self._raise_again()
        self._chunks.append(chunk)
        events: list[ParseEvent] = []
        base = self._offset  # output offset of text[0]
        self._offset = base + len(chunk)
        text = chunk
        if self._pending:  # a cut token, read again whole
            text = self._pending + chunk
            base -= len(self._pending)
            self._pending = ""
        i = 0 if mode == _TOKEN else self._end_string(text, end, base, events)
        n = len(text)
        stack = self._stack
        # Whitespace and commas, the commonest tokens, are read here; any other token by
        # the reader of the state.
        while i < n:
            c = text[i]
            if c in _WS:
                i += 1
                if i < n and text[i] in _WS:  # a run, e.g. indentation; else a lone space
                    i = _ws_run(text, i).end()
                if i == n:
                    break
                c = text[i]
            if c == "," and self._g == _AFTER:
                self._g = _KEY if stack[-1] else _VALUE
                i += 1
            else:
                i = _READERS[self._g](self, text, i, base, events)
        return events

    def _end_string(self, text: str, end: int, base: int, events: list[ParseEvent]) -> int:
        """Go on with a streamed string, which stops at `end` unless an escape was cut.

        Returns where the tokens after it begin in `text`, or the end of `text`.
        """
        if self._mode == _ESCAPE:
            end = _str_body(text).end()
        n = len(text)
        if end == n or text[end] != '"':
            return self._stream(text, end, base)
        self._mode = _TOKEN
        top = len(self._stack) == 1
        if self._g == _KEY or self._g == _KEY_OR_CLOSE:
            if top:
                self._check_key(self._captured(base + end + 1))
            if end + 1 < n and text[end + 1] == ":":  # the usual `"key":`, in one step
                self._g = _STEP_VALUE if top else _VALUE
                return end + 2
            self._g = _COLON
            return end + 1
        self._g = _AFTER
        if top:
            self._finish_step(base + end + 1, events)
        return end + 1

    # The readers below, one per grammar state (see _READERS), read the token at `text[i]`,
    # which is no whitespace: each sets the next state and returns where the next token may
    # begin. A token cut by the chunk end is streamed or kept pending: they return the end
    # of `text` then.

    def _read_start(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        if text[i] != "{":
            self._not_object(base + i, text[i])
        self._stack.append(True)
        self._g = _KEY_OR_CLOSE
        return i + 1

    def _read_value(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        c = text[i]
        stack = self._stack
        if c == '"':
            e = _plain(text, i + 1).end()
            if e < len(text) and text[e] == "\\":
                e = _str_body(text, e).end()
            if e == len(text):  # cut by the chunk end
                self._mode = _STRING
                return e
            if text[e] != '"':
                return self._stream(text, e, base)
            i = e + 1
        elif c == "{" or c == "[":
            if len(stack) >= self._max_depth:
                self._too_deep(base + i)
            stack.append(c == "{")
            self._g = _KEY_OR_CLOSE if c == "{" else _VALUE_OR_CLOSE
            return i + 1
        elif c in "-0123456789":
            m = _number(text, i)
            e = m.end() if m is not None else i
            # Whole only with the delimiter after it: else it may go on in the next chunk.
            if e == len(text) or text[e] not in _NUM_END or e - i > _MAX_NUMBER_CHARS:
                return self._number_stop(text, i, base)
            i = e
        else:
            word = _LITERALS.get(c)
            if word is None:
                self._fail(base + i, "a JSON value", c)
            if not text.startswith(word, i):
                return self._literal_stop(text, i, base, word)
            i += len(word)
        self._g = _AFTER
        if len(stack) == 1:
            self._finish_step(base + i, events)
        return i

    def _read_step_value(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        self._start_step(base + i, events)
        self._g = _VALUE
        return self._read_value(text, i, base, events)

    def _read_first_item(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        if text[i] == "]":
            return self._read_after(text, i, base, events)
        return self._read_value(text, i, base, events)

    def _read_key(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        if text[i] != '"':
            self._fail(base + i, "a quoted key", text[i])
        n = len(text)
        e = _plain(text, i + 1).end()
        if e < n and text[e] == "\\":
            e = _str_body(text, e).end()
        top = len(self._stack) == 1
        if top:  # a step's key: checked as soon as it is read
            self._key_pos = base + i
            if e < n and text[e] == '"':
                self._check_key(text[i : e + 1])
            else:
                self._cap = self._locate(base + i)
        if e == n:  # cut by the chunk end
            self._mode = _STRING
            return n
        if text[e] != '"':
            return self._stream(text, e, base)
        if e + 1 < n and text[e + 1] == ":":  # the usual `"key":`, in one step
            self._g = _STEP_VALUE if top else _VALUE
            return e + 2
        self._g = _COLON
        return e + 1

    def _read_first_key(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        if text[i] == "}":
            return self._read_after(text, i, base, events)
        return self._read_key(text, i, base, events)

    def _read_colon(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        if text[i] != ":":
            self._fail(base + i, "':' after the key", text[i])
        self._g = _STEP_VALUE if len(self._stack) == 1 else _VALUE
        return i + 1

    def _read_after(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        stack = self._stack
        if text[i] != ("}" if stack[-1] else "]"):  # feed reads the commas
            self._fail(base + i, "',' or '}'" if stack[-1] else "',' or ']'", text[i])
        stack.pop()
        self._g = _AFTER
        if len(stack) == 1:
            self._finish_step(base + i + 1, events)
        elif not stack:
            self._g = _END
            events.append(ObjectCompleted(base + i))
        return i + 1

    def _read_end(self, text: str, i: int, base: int, events: list[ParseEvent]) -> int:
        self._fail(base + i, "nothing but whitespace after the JSON object", text[i])

    def _stream(self, text: str, e: int, base: int) -> int:
        """Stream a string whose body stops at `e`, short of its closing quote.

        Keeps a cut escape pending, raises at a bad escape or a control char, and returns
        the end of `text`.
        """
        self._mode = _STRING
        if e < len(text):
            m = _escape_prefix(text, e)
            if m is None:
                self._fail(base + e, "control characters to be escaped in a string", text[e])
            if m.end() < len(text):
                expected = 'an escape: \\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX'
                self._fail(base + m.end(), expected, text[m.end()])
            self._pending = text[e:]
            self._mode = _ESCAPE
        return len(text)

    def _number_stop(self, text: str, i: int, base: int) -> int:
        """Keep a number cut by the chunk end pending; raise if it is too long or invalid."""
        e = _number_prefix(text, i).end()  # the offending char follows the longest prefix
        if e - i > _MAX_NUMBER_CHARS:
            expected = f"a number of at most {_MAX_NUMBER_CHARS} characters"
            self._fail(base + i + _MAX_NUMBER_CHARS, expected, text[i + _MAX_NUMBER_CHARS])
        if e < len(text):
            expected = "',', '}', ']' or whitespace after the number"
            self._fail(base + e, expected if text[e - 1] in _DIGITS else "a digit", text[e])
        self._pending = text[i:]
        return len(text)

    def _literal_stop(self, text: str, i: int, base: int, word: str) -> int:
        """Keep a literal cut by the chunk end pending; raise if it is misspelt."""
        for k in range(1, min(len(word), len(text) - i)):
            if text[i + k] != word[k]:
                self._fail(base + i + k, repr(word), text[i + k])
        self._pending = text[i:]
        return len(text)

    def close(self) -> list[ParseEvent]:
        """Signal the end of the output; return any remaining events (there are none).

        Raises:
            TruncatedOutputError: The object was not complete.
        """
        if self._mode == _FAILED:
            self._raise_again()
        if self._g == _END:
            return []
        where = f" inside step {self._current!r}" if self._current is not None else ""
        self._error = TruncatedOutputError(
            f"the output ended after {self._offset} characters{where}, before the JSON"
            " object was complete; usually the token limit was reached: raise max_tokens"
            " or bound the long steps",
            partial="".join(self._chunks),
            position=self._offset,
        )
        self._mode = _FAILED
        raise self._error

    def _raise_again(self) -> NoReturn:
        assert self._error is not None
        raise self._error.with_traceback(None)

    def _stop(self, problem: ParseProblem, msg: str, pos: int, step: str | None) -> NoReturn:
        """Raise an OutputParseError and remember it: the parser is unusable from now on."""
        self._error = OutputParseError(msg, problem=problem, position=pos, step=step)
        self._mode = _FAILED
        raise self._error

    def _fail(self, pos: int, expected: str, found: str) -> NoReturn:
        """Raise invalid_json for the char `found` at offset `pos`."""
        msg = f"invalid JSON at character {pos}: expected {expected}, found {_show(found)}"
        self._stop("invalid_json", msg, pos, self._current)

    def _too_deep(self, pos: int) -> NoReturn:
        msg = f"the JSON nests deeper than {self._max_depth} levels at character {pos}"
        self._stop("too_deep", msg, pos, self._current)

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


# The reader of each grammar state's token, indexed by the state.
_READERS = (
    StepParser._read_start,  # _START
    StepParser._read_value,  # _VALUE
    StepParser._read_step_value,  # _STEP_VALUE
    StepParser._read_first_item,  # _VALUE_OR_CLOSE
    StepParser._read_key,  # _KEY
    StepParser._read_first_key,  # _KEY_OR_CLOSE
    StepParser._read_colon,  # _COLON
    StepParser._read_after,  # _AFTER
    StepParser._read_end,  # _END
)
