"""Where an answer's JSON stands as its bytes arrive, for the llama.cpp decoding helpers.

`Grounded` needs to know which step's value is being written; the key writer needs to know
when a step's key has been opened. Both read the answer one byte at a time, without
parsing values, since a token may end anywhere in the JSON text.
"""

from __future__ import annotations

import json

__all__ = ["WHITESPACE", "JsonReader", "json_content"]

WHITESPACE = b" \t\n\r"


def json_content(text: str) -> bytes:
    """`text` as it is written between the quotes of a JSON string (a lone surrogate gives
    bytes no model writes, so it matches nothing rather than failing)."""
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")


class JsonReader:
    """Where the answer's JSON stands: which top-level key, and inside which string."""

    __slots__ = (
        "after_colon",
        "awaiting",
        "container",
        "content",
        "depth",
        "escaped",
        "in_string",
        "key",
        "keys_opened",
        "role",
    )

    def __init__(self, depth: int) -> None:
        self.depth = depth  # 1 when the answer continues an object its prefill opened
        self.in_string = False
        self.escaped = False  # the string's last byte is an escaping backslash
        self.role = ""  # of the string being written: "key", "value" (top level), "item"
        # (directly in a top-level value's list) or ""
        self.container = 0  # the byte that opened the top-level value's list or object
        self.content = bytearray()
        self.key = b""  # the latest top-level key
        self.awaiting = False  # that key is written and its value has not started
        self.after_colon = False  # ... and the colon before the value is written too
        self.keys_opened = 0  # top-level keys whose opening quote is written

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self.in_string:
                if byte == 0x22 and not self.escaped:  # the closing quote
                    self.in_string = False
                    if self.role == "key":
                        self.key = bytes(self.content)
                        self.awaiting = True
                    continue
                self.escaped = byte == 0x5C and not self.escaped
                self.content.append(byte)
                continue
            if byte in WHITESPACE:
                continue
            starts_value = self.after_colon
            self.after_colon = False
            colon = byte == 0x3A and self.depth == 1
            self.awaiting = self.awaiting and colon
            if byte == 0x22:
                self.in_string = True
                self.content = bytearray()
                top = self.depth == 1
                self.role = "value" if top and starts_value else "key" if top else ""
                if self.in_list:
                    self.role = "item"
                self.keys_opened += self.role == "key"
            elif byte in b"{[":
                self.depth += 1
                if self.depth == 2:
                    self.container = byte
            elif byte in b"}]":
                self.depth -= 1
            elif colon:
                self.after_colon = True

    @property
    def in_list(self) -> bool:
        """Directly inside the list a top-level value opened (between or in its items)."""
        return self.depth == 2 and self.container == 0x5B
