"""One answer's token loop on a loaded llama.cpp model (`LlamaCppBackend`'s worker thread).

The loop is ours rather than `Llama.generate`'s for two savings, both measured by
`bench/local_speed.py`:

- the grammar is asked about the token picked, not about the whole vocabulary before
  every pick (`arq.backends.llamacpp.sampling`);
- a step's key, fixed by the grammar once its quote opens, is evaluated as one batch
  instead of being sampled token by token (`arq.backends.llamacpp.keys`).

What it keeps from `Llama.generate`: the longest prefix the prompt shares with what the
model last read is not evaluated again (a repair or a re-ask repeats the first request's
prompt), and the steering logits processors see the prompt and the answer's tokens so far
before each pick. It uses `Llama`'s evaluation state (`n_tokens`, `_input_ids`, `_ctx`),
which is why `local` pins llama-cpp-python's version.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from arq.backends.llamacpp.keys import KeyWriter
from arq.backends.llamacpp.sampling import GrammarSampler

__all__ = ["Decoding", "Vocabulary"]


class Vocabulary:
    """A loaded model's token texts and the tokens of key texts, cached across answers."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._pieces: dict[int, bytes] = {}
        self._tokens: dict[bytes, list[int]] = {}

    def piece(self, token: int) -> bytes:
        """The bytes `token` writes."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = bytes(self.llm.detokenize([token]))
        return piece

    def tokens(self, text: bytes) -> list[int]:
        """`text` tokenized on its own (no BOS, no special tokens)."""
        found = self._tokens.get(text)
        if found is None:
            found = self._tokens[text] = list(self.llm.tokenize(text, add_bos=False, special=False))
        return found


class Decoding:
    """One answer: `sampler` picks, `keys` writes due key text, `steering` shapes logits.

    `write_keys=False` samples key text like any other (for comparison).
    """

    def __init__(
        self,
        lib: Any,
        vocabulary: Vocabulary,
        sampler: GrammarSampler,
        keys: KeyWriter,
        steering: Sequence[Callable[[Any, np.ndarray], np.ndarray]] = (),
        *,
        write_keys: bool = True,
    ) -> None:
        self._lib = lib
        self._vocabulary = vocabulary
        self._llm = vocabulary.llm
        self._sampler = sampler
        self._keys = keys
        self._steering = steering
        self._write_keys = write_keys

    def run(
        self,
        prompt: Sequence[int],
        limit: int,
        *,
        stopped: Callable[[], bool],
        on_text: Callable[[str], None],
    ) -> tuple[str, int]:
        """Evaluate `prompt`, then write up to `limit` tokens, passing their text on; the
        sampler is closed after.

        Returns the finish reason ("stop", "length", or "" when `stopped()` turned true)
        and the number of tokens written.
        """
        try:
            return self._write(list(prompt), limit, stopped, on_text)
        finally:
            self._sampler.close()  # one answer: its grammar state is spent

    def _write(
        self,
        ids: list[int],
        limit: int,
        stopped: Callable[[], bool],
        on_text: Callable[[str], None],
    ) -> tuple[str, int]:
        """`run`'s loop; `ids` is what the steering processors read: the prompt, then the
        answer."""
        lib, llm = self._lib, self._llm
        vocab = lib.llama_model_get_vocab(llm.model)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # split characters
        written = 0
        self._evaluate_prompt(ids)
        while not stopped():
            logits = np.ctypeslib.as_array(
                lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)
            ).copy()
            for processor in self._steering:
                logits = processor(ids, logits)
            token = self._sampler.pick(logits)
            if lib.llama_vocab_is_eog(vocab, token):
                if text := decoder.decode(b"", final=True):
                    on_text(text)
                return "stop", written
            batch = self._take(token, limit - written)
            ids.extend(batch)
            written += len(batch)
            text = decoder.decode(b"".join(self._vocabulary.piece(t) for t in batch))
            if written >= limit:
                text += decoder.decode(b"", final=True)
            if text:
                on_text(text)
            if written >= limit:
                return "length", written
            llm.eval(batch)
        return "", written

    def _take(self, token: int, room: int) -> list[int]:
        """`token`, then the tokens of the key text it makes due, as many as the grammar
        takes and `room` allows; all accepted by the grammar. Once the answer's second
        step begins, the sampler leaves the first step's temperature."""
        sampler, keys, piece = self._sampler, self._keys, self._vocabulary.piece
        sampler.accept(token)
        keys.feed(piece(token))
        batch = [token]
        due = keys.due() if self._write_keys else b""
        for forced in self._vocabulary.tokens(due)[: room - 1] if due else ():
            if not sampler.allows(forced):
                break
            sampler.accept(forced)
            keys.feed(piece(forced))
            batch.append(forced)
        if keys.steps_begun > 1:
            sampler.first_step_done()
        return batch

    def _evaluate_prompt(self, prompt: list[int]) -> None:
        """Evaluate `prompt`, after the longest prefix it shares with what the model holds."""
        llm = self._llm
        held = np.asarray(llm._input_ids)
        n = min(len(held), len(prompt))
        same = np.asarray(prompt[:n]) == held[:n]
        shared = n if same.all() else int(np.argmin(same))
        shared = min(shared, len(prompt) - 1)  # the last token is evaluated for its logits
        if shared > 0 and llm._ctx.kv_cache_seq_rm(-1, shared, -1):
            llm.n_tokens = shared
        else:
            llm.reset()
        llm.eval(prompt[llm.n_tokens :])
