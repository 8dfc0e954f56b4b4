"""Two constrained-decoding libraries on the embedded model's requests: llguidance and
outlines-core.

    python bench/constraint_libs.py [--repeats 3] [--skip-outlines-over 300]

For the fixed requests of `bench/local_speed.py` (the demo, the guideline-adherence
blueprint, the convergence forms at N = 8 and 32), with the bundled model's vocabulary:

- the time to build each request's constraint: llguidance compiles arq's grammar for the
  request (`arq.backends.llamacpp.constraint`, grounding included); outlines-core turns
  the request's JSON Schema into a regex and builds its token index (grounding left out:
  a regex can only list quotes one by one, and has no complement for rejected values);
- the wall time of a greedy answer on the real model from an empty cache, and its output
  tokens, both libraries driven by the same token loop and sampler
  (`arq.backends.llamacpp.decoding`), on the JSON Schema alone so that both hold the same
  constraint (outlines-core has no fast-forward tokens: each token is sampled).

outlines-core needs `pip install outlines-core` (it is not one of arq's dependencies). A
request whose index takes longer than `--skip-outlines-over` seconds to build is reported
as such and not answered.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from typing import Any

import local_speed

from arq.backends import LlamaCppBackend, Settings
from arq.backends.llamacpp.constraint import WHITESPACE


class OutlinesMatcher:
    """outlines-core's `Guide` behind the part of llguidance's `LLMatcher` the token loop
    uses."""

    def __init__(self, index: Any) -> None:
        import outlines_core

        self.guide = outlines_core.Guide(index)

    def validate_tokens(self, tokens: list[int]) -> int:
        return 1 if self.guide.accepts_tokens(tokens[:1]) else 0

    def consume_token(self, token: int) -> bool:
        self.guide.advance(token, return_tokens=False)
        return True

    def consume_tokens(self, tokens: list[int]) -> bool:
        return all(self.consume_token(t) for t in tokens)

    def compute_ff_tokens(self) -> list[int]:
        return []

    def is_stopped(self) -> bool:
        return bool(self.guide.is_finished())

    def get_capture(self, name: str) -> bytes | None:
        return None

    def get_error(self) -> str:
        return ""

    def unsafe_compute_mask_ptr(self, pointer: int, size: int) -> None:
        self.guide.write_mask_into(pointer, size // 4, 4)


class Comparison(LlamaCppBackend):
    """The embedded backend, its grammar state from outlines-core while `index` is set."""

    index: Any = None

    def _matcher(self, request: Any) -> Any:
        if self.index is not None:
            return OutlinesMatcher(self.index)
        return super()._matcher(request)


def outlines_vocabulary(pieces: list[bytes], special: list[int], eos: int) -> Any:
    import outlines_core

    tokens: dict[bytes, list[int]] = {}
    skipped = set(special) | {eos}
    for token, piece in enumerate(pieces):
        if token not in skipped and piece:
            tokens.setdefault(piece, []).append(token)
    return outlines_core.Vocabulary(eos, tokens)


def timed(job: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = job()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-outlines-over", type=float, default=300.0)
    args = parser.parse_args(argv)
    import llguidance
    import outlines_core

    from arq.backends.llamacpp.vocabulary import Vocabulary

    backend = Comparison(n_threads=2, seed=0)
    fixed = local_speed.requests()
    backend.prompt_tokens(fixed["demo"])  # loads the model
    llm = backend._llm  # the worker is idle between the answers below
    vocabulary = Vocabulary(llm)
    backend._vocabulary = vocabulary
    ours = outlines_vocabulary(vocabulary.pieces, vocabulary.special, vocabulary.eos)
    rows = []
    for case, request in fixed.items():
        grounded = backend.grammar(request)
        builds = [
            timed(lambda g=grounded: llguidance.LLMatcher(vocabulary.tokenizer, g))[0]
            for _ in range(args.repeats)
        ]
        regex = outlines_core.json_schema.build_regex_from_schema(
            json.dumps(request.output_schema), f"{WHITESPACE}?"
        )
        seconds, index = timed(lambda r=regex: outlines_core.Index(r, ours))
        row = {
            "case": case,
            "llguidance build (s)": statistics.median(builds),
            "outlines index (s)": seconds,
        }
        plain = dataclasses.replace(request, allowed={})
        row["llguidance answer (s, tokens)"] = answer(backend, plain, None)
        row["outlines answer (s, tokens)"] = (
            answer(backend, plain, index) if seconds <= args.skip_outlines_over else None
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    asyncio.run(backend.aclose())


def answer(backend: Comparison, request: Any, index: Any) -> tuple[float, int]:
    """Seconds for a greedy answer from an empty cache, and its output tokens, held by
    outlines-core's `index`, or by llguidance."""
    backend.index = index
    backend._llm.reset()  # the worker is idle: each answer reads its prompt afresh
    tokens = 0
    try:
        start = time.perf_counter()

        async def run() -> None:
            nonlocal tokens
            async for chunk in backend.stream(request, Settings(max_tokens=512, temperature=0)):
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens

        asyncio.run(run())
        return time.perf_counter() - start, tokens
    finally:
        backend.index = None


if __name__ == "__main__":
    main()
