"""One answer's token loop on a loaded llama.cpp model (`LlamaCppBackend`'s worker thread).

The loop runs on `Llama`'s public evaluation state: `input_ids` and `n_tokens` tell what
the model holds, and `eval` reads new tokens after the first `n_tokens` (dropping the rest
of its cache itself). The longest prefix a prompt shares with what the model last read is
not evaluated again: a repair or a re-ask repeats the first request's prompt.

Each token is picked under the request's grammar (`arq.backends.llamacpp.sampling`); the
tokens the grammar then forces (the rest of a step's key, the colon, the quote that opens
a string) are llguidance's fast-forward tokens, evaluated in one batch with the token
picked instead of one forward pass each. Once the grammar is complete, the answer ends
without asking the model for its end-of-turn token.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from arq.backends.llamacpp.constraint import FIRST_VALUE
from arq.backends.llamacpp.native import last_logits
from arq.backends.llamacpp.sampling import Sampler
from arq.backends.llamacpp.vocabulary import Vocabulary

__all__ = ["Decoding"]


class Decoding:
    """One answer: `sampler` picks, `matcher` (an `llguidance.LLMatcher`) holds the grammar.

    `forced=False` samples the tokens the grammar forces like any other (for comparison).
    """

    def __init__(
        self,
        lib: Any,
        vocabulary: Vocabulary,
        matcher: Any,
        sampler: Sampler,
        *,
        forced: bool = True,
    ) -> None:
        self._lib = lib
        self._vocabulary = vocabulary
        self._llm = vocabulary.llm
        self._matcher = matcher
        self._sampler = sampler
        self._forced = forced
        self._first_done = False

    def run(
        self,
        prompt: Sequence[int],
        limit: int,
        *,
        stopped: Callable[[], bool],
        on_text: Callable[[str], None],
    ) -> tuple[str, int]:
        """Evaluate `prompt`, then write up to `limit` tokens, passing their text on.

        Returns the finish reason ("stop", "length", or "" when `stopped()` turned true)
        and the number of tokens written.

        Raises:
            RuntimeError: the grammar allows no next token.
        """
        llm, matcher, pieces = self._llm, self._matcher, self._vocabulary.pieces
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # split characters
        written = 0
        self._evaluate_prompt(list(prompt))
        while not stopped():
            token = self._sampler.pick(last_logits(self._lib, llm))
            if token == self._vocabulary.eos:
                return self._end(decoder, on_text, "stop", written)
            batch = self._take(token, limit - written)
            written += len(batch)
            text = decoder.decode(b"".join(pieces[t] for t in batch))
            if text:
                on_text(text)
            if matcher.is_stopped():  # the grammar is complete: only the end can follow
                return self._end(decoder, on_text, "stop", written)
            if written >= limit:
                return self._end(decoder, on_text, "length", written)
            llm.eval(batch)
        return "", written

    def _take(self, token: int, room: int) -> list[int]:
        """`token`, then the tokens the grammar forces after it, as many as `room` allows;
        all consumed by the matcher."""
        matcher = self._matcher
        if not matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused a token it allowed: {matcher.get_error()}")
        batch = [token]
        if self._forced and room > 1:
            forced = matcher.compute_ff_tokens()[: room - 1]
            if forced and matcher.consume_tokens(forced):
                batch += forced
        if not self._first_done and matcher.get_capture(FIRST_VALUE) is not None:
            self._first_done = True
            self._sampler.first_step_done()
        return batch

    @staticmethod
    def _end(
        decoder: Any, on_text: Callable[[str], None], finish: str, written: int
    ) -> tuple[str, int]:
        if text := decoder.decode(b"", final=True):
            on_text(text)
        return finish, written

    def _evaluate_prompt(self, prompt: list[int]) -> None:
        """Evaluate `prompt`, after the longest prefix it shares with what the model holds."""
        llm = self._llm
        held = np.asarray(llm.input_ids[: llm.n_tokens])
        n = min(len(held), len(prompt))
        same = np.asarray(prompt[:n]) == held[:n]
        shared = n if same.all() else int(np.argmin(same))
        shared = min(shared, len(prompt) - 1)  # the last token is evaluated for its logits
        if shared > 0:
            llm.n_tokens = shared  # `eval` drops the cache after it
        else:
            llm.reset()
        llm.eval(prompt[shared:])
