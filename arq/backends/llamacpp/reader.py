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
    """Where the answer's JSON stands: which step, and inside which string.

    `role` names the string being written: a step's "key" or "value" (top level), an
    "item" of the list a step holds, a "field_key" or "field" (value) of the object a step
    holds or of each object of its list; anything deeper is "".
    """

    __slots__ = (
        "after_colon",
        "awaiting",
        "container",
        "content",
        "depth",
        "escaped",
        "field",
        "field_after_colon",
        "field_awaiting",
        "in_string",
        "inner",
        "key",
        "keys_opened",
        "role",
    )

    def __init__(self, depth: int) -> None:
        self.depth = depth  # 1 when the answer continues an object its prefill opened
        self.in_string = False
        self.escaped = False  # the string's last byte is an escaping backslash
        self.role = ""
        self.container = 0  # the byte that opened the step's list or object (depth 2)
        self.inner = 0  # the byte that opened a container inside that one (depth 3)
        self.content = bytearray()
        self.key = b""  # the latest top-level key
        self.awaiting = False  # that key is written and its value has not started
        self.after_colon = False  # ... and the colon before the value is written too
        self.keys_opened = 0  # top-level keys whose opening quote is written
        self.field = b""  # the latest key of the step's object (or of its list's object)
        self.field_awaiting = False  # as `awaiting`, for that key
        self.field_after_colon = False

    @property
    def in_list(self) -> bool:
        """Directly inside the list a step holds (between or in its items)."""
        return self.depth == 2 and self.container == 0x5B

    @property
    def in_fields(self) -> bool:
        """Directly inside the object a step holds, or an object of the list it holds."""
        if self.depth == 2:
            return self.container == 0x7B
        return self.depth == 3 and self.container == 0x5B and self.inner == 0x7B

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self.in_string:
                if byte == 0x22 and not self.escaped:  # the closing quote
                    self.in_string = False
                    if self.role == "key":
                        self.key = bytes(self.content)
                        self.awaiting = True
                    elif self.role == "field_key":
                        self.field = bytes(self.content)
                        self.field_awaiting = True
                    continue
                self.escaped = byte == 0x5C and not self.escaped
                self.content.append(byte)
                continue
            if byte in WHITESPACE:
                continue
            starts_value, starts_field = self.after_colon, self.field_after_colon
            self.after_colon = self.field_after_colon = False
            colon = byte == 0x3A and self.depth == 1
            field_colon = byte == 0x3A and not colon and self.in_fields
            self.awaiting = self.awaiting and colon
            self.field_awaiting = self.field_awaiting and field_colon
            if byte == 0x22:
                self.in_string = True
                self.content = bytearray()
                if self.depth == 1:
                    self.role = "value" if starts_value else "key"
                elif self.in_list:
                    self.role = "item"
                elif self.in_fields:
                    self.role = "field" if starts_field else "field_key"
                else:
                    self.role = ""
                self.keys_opened += self.role == "key"
            elif byte in b"{[":
                self.depth += 1
                if self.depth == 2:
                    self.container = byte
                elif self.depth == 3:
                    self.inner = byte
            elif byte in b"}]":
                self.depth -= 1
            elif colon:
                self.after_colon = True
            elif field_colon:
                self.field_after_colon = True
