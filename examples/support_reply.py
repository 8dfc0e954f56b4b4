"""A support reply with per-guideline checks, run for real on a language model.

    python examples/support_reply.py                     # the embedded local model, offline
    python examples/support_reply.py --base-url http://127.0.0.1:8000/v1 --model smollm2 \\
        --profile llama-cpp-python                       # any OpenAI-compatible server

With no `--base-url` it runs SmolLM2-135M-Instruct in-process through llama.cpp (the `local`
extra; `ARQ_MODEL=/path/to/model.gguf` picks another GGUF file). With `--base-url` the same
schema runs on any OpenAI-compatible server; the key comes from `OPENAI_API_KEY`, and
`--profile` says which response format the server accepts (llama-cpp-python's own server
wants `json_object` with a `schema`). Each step is printed as it completes, each repair
with its reason, then the answer, the tokens and the time.

Exit status: 0 when the run reached a verdict (a valid answer, or a clear "no valid answer"
from a model that did not converge), 1 when the model service failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field

import arq
from arq.backends import Backend, OpenAIBackend
from arq.backends.openai import PROFILES
from arq.events import OutputAccepted, RepairStarted, RetryScheduled, StepAccepted, StepFailed

CONVERSATION = """\
customer: Hi, my order A-1234 arrived broken. The screen is cracked.
agent: I'm sorry to hear that. Could you tell me what you would like us to do?
customer: I want my money back, today!"""

GUIDELINES = [
    ("refund", "The customer asks for a refund: check the order status before promising one."),
    ("damaged", "The item arrived damaged: apologise and offer a replacement or a return."),
    ("tracking", "The customer asks where a parcel is: give the tracking link."),
]


OrderId = Annotated[str, Field(pattern=r"^[A-Z]-[0-9]{4}$")]


class GuidelineCheck(BaseModel):
    """One guideline, decided for this conversation."""

    id: str = Field(description="The guideline id.")
    applies: bool = Field(description="Does its condition hold in the last message?")


class SupportReply(arq.Reasoning):
    """Reply to the customer's last message while following the support guidelines."""

    request: str = arq.query(
        "What does the customer ask for in the last message?", max_length=120, max_chunks=40
    )
    # the pattern sits inside Annotated so that it reaches the JSON Schema, and so the grammar
    order_id: Annotated[OrderId, arq.verbatim_in("conversation")] | None = arq.query(
        "Which order id does the customer give?",
        instruction="Copy it exactly from the conversation; null if there is none.",
        max_chunks=12,
        default=None,
    )
    guidelines: list[GuidelineCheck] = arq.query(
        "For each guideline: does its condition hold now?",
        instruction="Check every guideline exactly once.",
        max_chunks=90,
    )
    decision: Literal["reply", "escalate"] = arq.answer("Reply now, or escalate to a human?")
    reply: str = arq.answer(
        "The reply to send to the customer.",
        instruction="Apologise, say you will check the order status, and offer a replacement.",
        max_length=300,
        max_chunks=90,
    )

    @arq.check("reply")
    def no_refund_promised(reply: str) -> None:
        # the instruction, held as a check: a reply that promises a refund is repaired
        if re.search(r"\brefund(s|ed)?\b|money back", reply, re.IGNORECASE):
            raise ValueError("the reply mentions a refund before the order status is known")


Reply = arq.checklist(SupportReply, "guidelines", GUIDELINES)
CONTEXT = {
    "conversation": CONVERSATION,
    "guidelines": [f"{gid}: {text}" for gid, text in GUIDELINES],
}


def backend_from(args: argparse.Namespace) -> Backend:
    if args.base_url is None:
        from arq.backends import LlamaCppBackend

        return LlamaCppBackend(seed=args.seed)
    return OpenAIBackend(
        args.model,
        base_url=args.base_url,
        api_key=os.environ.get("OPENAI_API_KEY"),
        capabilities=PROFILES[args.profile],
    )


async def main(args: argparse.Namespace) -> int:
    try:
        backend = backend_from(args)
    except (ImportError, arq.ArqError) as error:  # no llama-cpp-python, or no model file
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {backend.name}   schema: {Reply.__name__} ({len(arq.steps(Reply))} steps)")
    print(CONVERSATION, end="\n\n")
    executor = arq.Executor(
        backend,
        max_repairs=args.max_repairs,
        temperature=args.temperature,
        repair_temperature=args.repair_temperature,
        max_tokens=400,
    )
    start = time.perf_counter()
    async with executor:
        try:
            async for event in executor.stream(Reply, CONTEXT):
                if isinstance(event, StepAccepted):
                    print(f"  ok   {event.step}: {event.value!r}")
                elif isinstance(event, StepFailed):
                    print(f"  FAIL {event.step}: {event.error}")
                elif isinstance(event, RepairStarted):
                    print(f"-- repair {event.attempt - 1}: redo from {event.step!r}")
                elif isinstance(event, RetryScheduled):
                    print(f"-- retry in {event.wait:.1f} s: {event.error}")
                elif isinstance(event, OutputAccepted):
                    result = event.result
        except arq.ConvergenceError as error:
            print(f"\nno valid answer: {error}")
            print(f"kept steps: {list(error.accepted)}; tokens: {error.trace.usage}")
            return 0  # an honest verdict: a small model may not converge
        except arq.OutputError as error:  # truncated or refused
            print(f"\nno valid answer: {type(error).__name__}: {error}")
            return 0
        except arq.ArqError as error:  # the model service failed
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - start
    usage = result.usage
    print(f"\nanswer ({result.output.decision}): {result.output.reply}")
    print(
        f"calls: {len(result.trace.attempts)} ({result.trace.repairs} repairs)   "
        f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} output"
        f"{' (estimated)' if usage.estimated else ''}   time: {elapsed:.1f} s"
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the support-reply schema on a model.")
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: local model")
    parser.add_argument("--model", default="default", help="the model name the server expects")
    parser.add_argument(
        "--profile",
        default="openai",
        choices=sorted(PROFILES),
        help="the response format the server accepts",
    )
    parser.add_argument("--max-repairs", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--repair-temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
