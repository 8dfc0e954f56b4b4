"""Picks each next token under the request's grammar, asking the grammar about the token
picked first and masking the vocabulary only when it refuses.

Inside a JSON answer the model's own choice is almost always one the grammar allows, so
`Sampler` picks from the logits as they are and asks llguidance about that one token; only
when the grammar refuses it does it compute the grammar's mask over the vocabulary and pick
again from the allowed tokens.

- Greedy, this gives exactly the token that masking first would give: the best token,
  when allowed, is also the best allowed token.
- Sampled (top-k 40, top-p 0.95, min-p 0.05, then the temperature, llama.cpp's defaults),
  the first pick is from the model's top 40 tokens; a refused pick is followed by a pick
  from the top 40 allowed tokens, so every token picked is allowed and is among the
  model's likeliest.

An answer's first step may be picked at its own temperature: a repair samples the step it
redoes, then writes the steps after it as a first call would (`first_step_done`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MIN_P", "TOP_K", "TOP_P", "Sampler"]

TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05


class Sampler:
    """Token choice for one answer, held to `matcher` (an `llguidance.LLMatcher`).

    Args:
        matcher: The answer's grammar state; advanced by the caller.
        vocab_size: Tokens in the model's vocabulary.
        temperature: 0 for greedy decoding.
        seed: The sampling seed (random if None), used when a temperature is above 0.
        first_step_temperature: The temperature until `first_step_done` is called, if
            not `temperature`.
    """

    def __init__(
        self,
        matcher: Any,
        vocab_size: int,
        *,
        temperature: float,
        seed: int | None,
        first_step_temperature: float | None = None,
    ) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self._matcher = matcher
        self._later = temperature
        self.temperature = temperature if first_step_temperature is None else first_step_temperature
        self._random = np.random.default_rng(seed)
        self._bitmask = allocate_token_bitmask(1, vocab_size)

    def first_step_done(self) -> None:
        """Pick at the answer's own temperature from here on."""
        self.temperature = self._later

    def pick(self, logits: np.ndarray) -> int:
        """The next token for these logits (float32, one per token of the vocabulary).

        Raises:
            RuntimeError: the grammar allows no token at all.
        """
        token = self._choose(logits)
        if self.allows(token):
            return token
        masked = self.masked(logits)
        if not np.isfinite(masked).any():
            raise RuntimeError(f"the grammar allows no next token: {self._matcher.get_error()}")
        return self._choose(masked)

    def allows(self, token: int) -> bool:
        """Whether the grammar, where it stands, takes `token` next."""
        return bool(self._matcher.validate_tokens([token]) == 1)

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar refuses at minus infinity."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, self._bitmask)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: len(logits)]
        out = np.array(logits)
        out[bits == 0] = -np.inf
        return out

    def _choose(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        finite = np.flatnonzero(np.isfinite(logits)) if np.isinf(logits).any() else None
        pool = logits if finite is None else logits[finite]
        k = min(TOP_K, len(pool))
        top = np.argpartition(pool, -k)[-k:]
        top = top[np.argsort(pool[top])[::-1]]  # best first
        values = pool[top].astype(np.float64)
        probs = _softmax(values)
        kept = max(int(np.searchsorted(np.cumsum(probs), TOP_P)) + 1, 1)  # top-p
        kept = min(kept, int(np.count_nonzero(probs >= MIN_P * probs[0])))  # min-p
        final = _softmax(values[: max(kept, 1)] / self.temperature)
        index = int(self._random.choice(len(final), p=final))
        chosen = top[index]
        return int(chosen if finite is None else finite[chosen])


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return np.asarray(shifted / shifted.sum())
