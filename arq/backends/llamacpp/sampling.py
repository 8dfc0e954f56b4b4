"""Picks each next token under a grammar, asking the grammar only about the token picked.

llama.cpp's grammar sampler, run as one link of a sampler chain, tests every token of the
vocabulary against the grammar before each pick, a large share of the embedded model's
generation time (`bench/local_speed.py` compares the two). Yet inside a JSON answer the
model's own choice is almost always one the grammar allows. `GrammarSampler` picks first,
from the logits as they are, and tests that one token; only when the grammar refuses it
does it mask the whole vocabulary and pick again (as llama.cpp's own `common_sampler`
does).

- Greedy, this gives exactly the token that masking first would give: the best token,
  when allowed, is also the best allowed token.
- Sampled (top-k 40, top-p 0.95, min-p 0.05, then the temperature, as llama-cpp-python's
  defaults), the first pick is from the model's top 40 tokens. A refused pick is
  followed by a pick from the top 40 allowed tokens, so every token picked is allowed
  and is chosen among the model's likeliest.

An answer's first step may be picked at its own temperature: a repair samples the step it
redoes, then writes the steps after it as a first call would (`first_step_done`).

The grammar's state advances only through `accept`, which a caller calls with tokens that
`allows` said yes to: llama.cpp aborts the process on a token its grammar cannot take.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = ["TOP_K", "GrammarSampler"]

TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05
_CANDIDATE = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class GrammarSampler:
    """Token choice for one answer: `grammar` (GBNF) held lazily, greedy at temperature 0.

    Args:
        lib: The `llama_cpp` module.
        vocab: The model's vocabulary (`llama_model_get_vocab`).
        grammar: The GBNF text; its start rule is `root`.
        temperature: 0 for greedy decoding.
        seed: The sampling seed (used when a temperature is above 0).
        first_step_temperature: The temperature until `first_step_done` is called, if
            not `temperature`.

    Raises:
        ValueError: llama.cpp could not parse the grammar.
    """

    def __init__(
        self,
        lib: Any,
        vocab: Any,
        grammar: str,
        *,
        temperature: float,
        seed: int,
        first_step_temperature: float | None = None,
    ) -> None:
        self._lib = lib
        self._grammar = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self._grammar:
            raise ValueError("llama.cpp could not parse the grammar")
        self._later = self._chain = self._sampling_chain(temperature, seed)
        if first_step_temperature is not None and first_step_temperature != temperature:
            self._chain = self._sampling_chain(first_step_temperature, seed)
        self._one = np.zeros(1, _CANDIDATE)
        self._all: np.ndarray | None = None  # every token, made on the first refusal

    def first_step_done(self) -> None:
        """Pick at `temperature` from here on (the answer's second step has begun)."""
        if self._chain is not self._later:
            self._free(self._chain)
            self._chain = self._later

    def pick(self, logits: np.ndarray) -> int:
        """The next token for these logits (float32, one per token of the vocabulary).

        Raises:
            RuntimeError: the grammar allows no token at all.
        """
        token = self._choose(logits)
        if self.allows(token):
            return token
        masked = self._masked(logits)
        if not np.isfinite(masked).any():
            raise RuntimeError("the grammar allows no next token")
        return self._choose(masked)

    def allows(self, token: int) -> bool:
        """Whether the grammar, where it stands, can take `token` next."""
        self._one["id"], self._one["logit"] = token, 0.0
        self._apply(self._grammar, self._one)
        return bool(np.isfinite(self._one["logit"][0]))

    def accept(self, token: int) -> None:
        """Advance the grammar past `token`, which `allows` must have said yes to."""
        self._lib.llama_sampler_accept(self._grammar, token)

    def close(self) -> None:
        """Free llama.cpp's samplers."""
        self.first_step_done()  # frees the first step's chain if it is its own
        self._free(self._chain)
        self._free(self._grammar)
        self._grammar = self._chain = self._later = None

    def _sampling_chain(self, temperature: float, seed: int) -> Any:
        """llama.cpp's chain after top-k for `temperature`; None for greedy (argmax)."""
        lib = self._lib
        if temperature <= 0:
            return None
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        for link in (
            lib.llama_sampler_init_top_p(TOP_P, 1),
            lib.llama_sampler_init_min_p(MIN_P, 1),
            lib.llama_sampler_init_temp(temperature),
            lib.llama_sampler_init_dist(seed),
        ):
            lib.llama_sampler_chain_add(chain, link)
        return chain

    def _free(self, sampler: Any) -> None:
        if sampler:
            self._lib.llama_sampler_free(sampler)

    def _choose(self, logits: np.ndarray) -> int:
        if self._chain is None:
            return int(np.argmax(logits))
        finite = np.flatnonzero(np.isfinite(logits)) if np.isinf(logits).any() else None
        pool = logits if finite is None else logits[finite]
        k = min(TOP_K, len(pool))
        top = np.argpartition(pool, -k)[-k:]
        top = top[np.argsort(pool[top])[::-1]]  # best first, as llama.cpp's top-k leaves them
        candidates = np.zeros(k, _CANDIDATE)
        candidates["id"] = top if finite is None else finite[top]
        candidates["logit"] = pool[top]
        selected = self._apply(self._chain, candidates, is_sorted=True)
        return int(candidates["id"][selected])

    def _masked(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar refuses at minus infinity."""
        if self._all is None:
            self._all = np.zeros(len(logits), _CANDIDATE)
            self._all["id"] = np.arange(len(logits))
        self._all["logit"] = logits
        self._apply(self._grammar, self._all)
        return np.array(self._all["logit"])

    def _apply(self, sampler: Any, candidates: np.ndarray, *, is_sorted: bool = False) -> int:
        """Run a llama.cpp sampler over `candidates` in place; the index it selected."""
        lib = self._lib
        array = lib.llama_token_data_array(
            candidates.ctypes.data_as(lib.llama_token_data_p), len(candidates), -1, is_sorted
        )
        lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return int(array.selected)
