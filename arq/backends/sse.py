"""Server-sent events (`text/event-stream`) read incrementally from a response's bytes.

`SSEDecoder` follows the WHATWG event-stream rules a chat stream needs, with the standard
library only, so it reads whatever HTTP client delivers the bytes:

- lines end with LF, CRLF or CR, also when a CRLF is split between two reads;
- a line starting with ``:`` is a comment (a keep-alive) and is skipped;
- ``data:`` lines accumulate, joined by LF, until a blank line dispatches the event;
- ``event:`` names the event; ``id:``, ``retry:`` and unknown fields are ignored;
- a blank line with no data dispatches nothing;
- the end of the body ends the last line and event (`finish`).

An event's data stays bytes, as JSON decoders read them; its name is text.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "ServerEvent"]

_COLON = 58  # b":"[0]


class ServerEvent(NamedTuple):
    """One dispatched event: its name ("" when none was given) and its data."""

    name: str
    data: bytes


class SSEDecoder:
    """Turns a stream's bytes, fed in any pieces, into `ServerEvent`s."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the start of a line not yet ended
        self._skip_lf = False  # the last read ended with CR: a LF starting the next is its pair
        self._name = b""
        self._data: list[bytes] = []

    def feed(self, piece: bytes) -> list[ServerEvent]:
        """The events that `piece` completes, in order."""
        if self._skip_lf and piece[:1] == b"\n":
            piece = piece[1:]
        self._skip_lf = False
        if (  # most pieces are one whole event of one data line: read those at once
            piece[:6] == b"data: "
            and piece.find(b"\n") == len(piece) - 2
            and piece[-1:] == b"\n"
            and not (self._partial or self._data or self._name)
            and b"\r" not in piece
        ):
            return [ServerEvent("", piece[6:-2])]
        if b"\n" not in piece and b"\r" not in piece:
            if piece:
                self._partial.append(piece)
            return []
        if self._partial:
            self._partial.append(piece)
            piece = b"".join(self._partial)
            self._partial.clear()
        if b"\r" in piece:
            self._skip_lf = piece.endswith(b"\r")
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = piece.split(b"\n")
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        events = []
        for line in lines:
            if line:
                self._field(line)
            elif self._data:
                events.append(self._dispatch())
            else:
                self._name = b""
        return events

    def finish(self) -> list[ServerEvent]:
        """The event the stream's end cuts off, if its data began: the end of the body
        ends its last line and event, so a cut shows as data that is not whole JSON, and a
        last event sent without its blank line is still read."""
        line = b"".join(self._partial)
        self._partial.clear()
        if line:
            self._field(line)
        return [self._dispatch()] if self._data else []

    def _field(self, line: bytes) -> None:
        if line[0] == _COLON:
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._name = value

    def _dispatch(self) -> ServerEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        name = self._name.decode(errors="replace") if self._name else ""
        self._data.clear()
        self._name = b""
        return ServerEvent(name, data)
