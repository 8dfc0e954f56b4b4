"""A loaded model's vocabulary, as llguidance and the token loop read it.

Built through `Llama`'s public methods only: each token's bytes from `detokenize`, text
tokenized by `tokenize`. A control token (`<|im_end|>`) writes its text only when special
tokens are rendered, which is how it is told apart from text; llguidance marks such tokens
with a leading 0xFF byte, so a grammar never matches them as text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Vocabulary"]

_SPECIAL = b"\xff"  # llguidance's mark of a special token's bytes


class Vocabulary:
    """`llm`'s tokens as bytes, and its llguidance tokenizer (made once per model)."""

    def __init__(self, llm: Any) -> None:
        import llguidance  # a dependency of the local extra, like llama-cpp-python

        self.llm = llm
        self.eos = int(llm.token_eos())
        self.bos = int(llm.token_bos())
        self.pieces: list[bytes] = []
        self.special: list[int] = []
        for token in range(llm.n_vocab()):
            text = bytes(llm.detokenize([token], special=True))
            if text and not bytes(llm.detokenize([token], special=False)):
                self.special.append(token)
            self.pieces.append(text)
        self._tokens: dict[bytes, list[int]] = {}
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Tokenizer(self)))

    def tokens(self, text: bytes) -> list[int]:
        """`text` tokenized on its own (no BOS, no special tokens), cached."""
        found = self._tokens.get(text)
        if found is None:
            found = list(self.llm.tokenize(text, add_bos=False, special=False))
            if len(self._tokens) < 4096:
                self._tokens[text] = found
        return found


class _Tokenizer:
    """What `llguidance.TokenizerWrapper` reads of a tokenizer."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.eos_token_id = vocabulary.eos
        self.bos_token_id = vocabulary.bos
        self.special_token_ids = list(vocabulary.special)
        special = set(vocabulary.special)
        self.tokens = [
            _SPECIAL + piece if token in special else piece
            for token, piece in enumerate(vocabulary.pieces)
        ]
        self._vocabulary = vocabulary

    def __call__(self, text: bytes) -> list[int]:
        return self._vocabulary.tokens(text)
