"""Repair economics: arq's step repair against regenerating the whole object.

A 6-step schema whose step k fails once, against the loopback test server streaming at a
simulated 50 tokens/s. Both sides use the same prompt builder, the same response format and
the same caps, and both feed the error back:

- arq: reads the stream step by step, stops at the failing step, asks for steps k..6 only;
- whole-object re-ask (what other libraries do): reads the full completion, validates it,
  sends the errors back and asks for the whole object again.

Prints output tokens and wall time to a valid result for k = 1..6 and their ratios.

    python bench/repair.py            # k = 1..6
    python bench/repair.py --k 4      # one k
    python bench/repair.py --tps 200  # a faster simulated model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Annotated, Any

import arq
from arq.backends import OpenAIBackend, Settings
from arq.eval.baselines import whole_object_reask
from arq.testing import FakeOpenAIServer, ReceivedRequest, Reply

DOCUMENT = (
    "The customer bought a router with order R-7731 on 3 March. "
    "Since the last firmware update the router reboots every few hours. "
    "The warranty covers hardware faults for two years from the date of purchase. "
    "Firmware faults are fixed by a rollback that support can push remotely. "
    "A replacement is sent only when a rollback does not stop the reboots. "
    "Support answers within one working day and never promises a refund up front."
)
SENTENCES = [s.rstrip(".") + "." for s in DOCUMENT.split(". ")]
Quoted = Annotated[str, arq.verbatim_in("document")]


class Diagnosis(arq.Reasoning):
    """Diagnose the customer's problem using only the document."""

    purchase: Quoted = arq.query("What did the customer buy, and when? Quote the document.")
    symptom: Quoted = arq.query("What goes wrong? Quote the document.")
    coverage: Quoted = arq.query("What does the warranty cover? Quote the document.")
    remedy: Quoted = arq.query("How are such faults fixed? Quote the document.")
    escalation: Quoted = arq.query("When is a replacement sent? Quote the document.")
    promise: Quoted = arq.answer("What may support promise? Quote the document.")


STEPS = [s.name for s in arq.steps(Diagnosis)]
GOOD = dict(zip(STEPS, SENTENCES, strict=True))
CONTEXT = {"document": DOCUMENT}


def bad_at(k: int) -> dict[str, Any]:
    """The good answer with step k (1-based) made up: not quoted from the document."""
    wrong = "The router was probably damaged in transit and will be replaced at once."
    return {**GOOD, STEPS[k - 1]: wrong}


def responder(k: int, tps: float) -> Any:
    """First call: step k is wrong. Any later call: the steps it asks for, correct."""

    def respond(request: ReceivedRequest) -> Reply:
        fmt = request.body["response_format"]["json_schema"]["schema"]
        asked = list(fmt["properties"])
        first = len(request.body["messages"]) == 2
        values = bad_at(k) if first else GOOD
        return Reply(json.dumps({name: values[name] for name in asked}), tokens_per_second=tps)

    return respond


async def arq_run(server: FakeOpenAIServer) -> tuple[int, float, int]:
    backend = OpenAIBackend("fake-model", base_url=server.base_url)
    async with arq.Executor(backend, max_tokens=400) as executor:
        start = time.perf_counter()
        result = await executor.arun(Diagnosis, CONTEXT)
        elapsed = time.perf_counter() - start
    assert result.output.promise == GOOD["promise"]
    return result.usage.completion_tokens, elapsed, len(result.trace.attempts)


async def reask_run(server: FakeOpenAIServer) -> tuple[int, float, int]:
    """The whole-object re-ask loop, as other libraries run it (`arq.eval.baselines`)."""
    backend = OpenAIBackend("fake-model", base_url=server.base_url)
    start = time.perf_counter()
    try:
        result = await whole_object_reask(
            backend, Diagnosis, CONTEXT, max_reasks=2, settings=Settings(max_tokens=400)
        )
    finally:
        await backend.aclose()
    if not result.accepted:
        raise RuntimeError("the re-ask did not converge")
    return result.completion_tokens, time.perf_counter() - start, result.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, choices=range(1, 7), help="only this failing step")
    parser.add_argument("--tps", type=float, default=50.0, help="simulated tokens per second")
    args = parser.parse_args()
    ks = [args.k] if args.k else list(range(1, 7))
    full = len(json.dumps(GOOD))
    print(f"6-step schema, {full} chars per full answer, server at {args.tps:g} tokens/s")
    print(
        f"{'k':>2} | {'arq tok':>7} {'arq s':>6} {'calls':>5} | {'re-ask tok':>10} "
        f"{'re-ask s':>8} {'calls':>5} | {'tok ratio':>9} {'time ratio':>10}"
    )
    token_ratios, time_ratios = [], []
    for k in ks:
        with FakeOpenAIServer() as server:
            server.responder = responder(k, args.tps)
            a_tok, a_s, a_calls = asyncio.run(arq_run(server))
            r_tok, r_s, r_calls = asyncio.run(reask_run(server))
        token_ratios.append(a_tok / r_tok)
        time_ratios.append(a_s / r_s)
        print(
            f"{k:>2} | {a_tok:>7} {a_s:>6.2f} {a_calls:>5} | {r_tok:>10} {r_s:>8.2f} "
            f"{r_calls:>5} | {a_tok / r_tok:>9.2f} {a_s / r_s:>10.2f}"
        )
    print(
        f"mean over k: tokens {statistics.fmean(token_ratios):.2f}x, "
        f"time {statistics.fmean(time_ratios):.2f}x of the whole-object re-ask"
    )


if __name__ == "__main__":
    main()
