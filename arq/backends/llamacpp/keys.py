"""Writes each step's key for the model once the grammar leaves it no choice.

The grammar lists the answer's keys in step order, so once a key's opening quote is
written, the rest of the key and its closing quote are fixed; the colon comes next, with
optional whitespace before it that no model writes. Sampling those tokens one at a time
costs a forward pass each, for nothing: `KeyWriter` says what text is due, and the
backend evaluates its tokens in one batch with the token that opened the key. Much of a
form's answer is key text. The tokens still pass the grammar, one by one,
before they are taken.
"""

from __future__ import annotations

from collections.abc import Sequence

from arq.backends.llamacpp.reader import JsonReader, json_content

__all__ = ["KeyWriter"]


class KeyWriter:
    """Follows an answer whose grammar fixes its top-level keys to `keys`, in order.

    With `inside_object` the answer continues an object its prefill opened.
    """

    def __init__(self, keys: Sequence[str], *, inside_object: bool) -> None:
        self._keys = [json_content(key) for key in keys]
        self._reader = JsonReader(depth=1 if inside_object else 0)

    def feed(self, piece: bytes) -> None:
        """Take the bytes of the next token of the answer."""
        self._reader.feed(piece)

    @property
    def steps_begun(self) -> int:
        """Steps of this answer whose key has been opened."""
        return self._reader.keys_opened

    def due(self) -> bytes:
        """The text the grammar fixes next: the rest of the key being written and the
        colon after it, or nothing when the answer is not inside a step's key."""
        reader = self._reader
        opened = reader.keys_opened
        if not (reader.in_string and reader.role == "key") or opened > len(self._keys):
            return b""
        key, written = self._keys[opened - 1], bytes(reader.content)
        if not key.startswith(written):
            return b""  # not the key the grammar expects: leave it to the grammar
        return key[len(written) :] + b'":'
