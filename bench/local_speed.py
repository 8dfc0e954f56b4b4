"""The embedded model's speed: prompt evaluation, and generation with and without a grammar.

    python bench/local_speed.py [--repeats 3] [--threads 1,2]

For each thread count it loads SmolLM2-135M through `LlamaCppBackend` and evaluates the
prompt of a 16-step form (`convergence_tasks.py`) from an empty cache. Then it generates
the form's answer greedily, side by side in each repeat:

- through the backend, as a run sees it: with the form's names and ids grounded
  (`Request.allowed`, as the executor builds it), and without;
- through the backend with keys sampled (`write_keys=False`): the grammar still asked
  about the picked token only;
- through llama-cpp-python's own `Llama.generate` with the same grammar, which masks the
  whole vocabulary before every token (what the backend did before its own token loop);
- and the same number of tokens with no grammar at all (`Llama.generate`).

It prints the median tokens per second of each over the repeats, and whether the greedy
answers with keys written and sampled were the same text. Run it with the machine
otherwise idle: two processes sharing the cores halve every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Sequence
from typing import Any

from convergence_tasks import make_task
from llama_cpp.llama_grammar import LlamaGrammar

import arq
from arq.backends import LlamaCppBackend, Settings
from arq.prompt import Request


def measure(threads: int, repeats: int) -> dict[str, float]:
    backend = LlamaCppBackend(n_threads=threads, seed=0)
    task = make_task(16, 0)
    request = arq.PromptBuilder().build(task.schema, task.context)
    tokens = backend.prompt_tokens(request)  # loads the model
    llm = backend._llm  # the worker thread is idle between the calls below
    backend._steering(request, tokens)  # builds the token table once, outside the timings
    settings = Settings(max_tokens=400, temperature=0.0, seed=0)
    found: dict[str, list[float]] = {
        "prompt": [],
        "grounded": [],
        "grammar": [],
        "keys sampled": [],
        "llama.cpp grammar": [],
        "free": [],
    }
    same_text: list[bool] = []

    async def generate(req: Request) -> tuple[int, float, str]:
        start = time.perf_counter()
        chunks = [c async for c in backend.stream(req, settings)]
        usage = chunks[-1].usage
        assert usage is not None
        text = "".join(c.text for c in chunks)
        return usage.completion_tokens, time.perf_counter() - start, text

    try:
        for _ in range(repeats):
            llm.reset()
            start = time.perf_counter()
            llm.eval(tokens)
            found["prompt"].append(len(tokens) / (time.perf_counter() - start))
            # the prompt is evaluated now: what follows times generation alone
            count, seconds, _ = asyncio.run(generate(request))
            found["grounded"].append(count / seconds)
            plain = dataclasses.replace(request, allowed={})
            count, seconds, written = asyncio.run(generate(plain))
            found["grammar"].append(count / seconds)
            backend._write_keys = False  # the option, switched between two idle requests
            count, seconds, sampled = asyncio.run(generate(plain))
            backend._write_keys = True
            found["keys sampled"].append(count / seconds)
            same_text.append(written == sampled)
            grammar = LlamaGrammar.from_string(backend._grammar(plain), verbose=False)
            found["llama.cpp grammar"].append(generation(llm, tokens, count, grammar))
            found["free"].append(generation(llm, tokens, count, None))
    finally:
        asyncio.run(backend.aclose())
    print(
        f"threads={threads}: prompt of {len(tokens)} tokens evaluated at"
        f" {statistics.median(found['prompt']):.0f} tokens/s; generation"
        f" {statistics.median(found['grounded']):.1f} tokens/s under the grammar with"
        f" {len(request.allowed)} steps grounded,"
        f" {statistics.median(found['grammar']):.1f} tokens/s under the grammar alone,"
        f" {statistics.median(found['keys sampled']):.1f} tokens/s with keys sampled"
        f" ({sum(same_text)}/{len(same_text)} answers the same text as with keys written),"
        f" {statistics.median(found['llama.cpp grammar']):.1f} tokens/s with llama.cpp's own"
        f" grammar sampling, {statistics.median(found['free']):.1f} tokens/s with no grammar"
        f" (medians of {repeats})",
        flush=True,
    )
    return {name: statistics.median(values) for name, values in found.items()}


def generation(llm: Any, prompt: list[int], count: int, grammar: Any) -> float:
    """Tokens/s of `Llama.generate` writing `count` tokens greedily under `grammar` (or
    none), its sampler chain masking the whole vocabulary before each token."""
    start, made = time.perf_counter(), 0
    generator = llm.generate(prompt, temp=0.0, grammar=grammar)  # the prompt is cached
    for _ in generator:
        made += 1
        if made >= count:
            break
    generator.close()
    return made / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args(argv)
    for threads in (int(t) for t in args.threads.split(",")):
        measure(threads, args.repeats)


if __name__ == "__main__":
    main()
