"""Throughput and linearity of the incremental step parser.

Usage: python bench/parser.py [--quick] [--compare [REF]] [--hostile]

Builds a realistic output (six steps: long strings with escapes, lists of objects),
feeds it in small chunks as a stream would, and prints MB/s and the time ratio between a
1 MB and a 100 KB output for each chunk size (linear time means a ratio near 10).

With --compare, times the installed parser against the one at the git revision REF
instead (default a743127, the last revision whose `StepParser.feed` was one long loop):
7-char chunks of the 1 MB output, the two parsers run in turn, and the ratio of speeds.

With --hostile, times the inputs a model (or an attacker) can write to make a parser slow:
deep nesting, huge numbers, runs of whitespace, text full of braces and fences. Each should
take milliseconds: the parser stops at the offending character, and `parse_tolerant` tries a
bounded number of starts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import cast

from arq.errors import ArqError
from arq.parsing import StepParser, parse_tolerant

STEPS = ["request", "context", "findings", "checks", "summary", "answer"]
COMPARE_REF = "a743127"
CHUNK_SIZES = (1, 2, 4, 7, 16, 32, 64)
WORDS = [
    "the",
    "customer",
    "order",
    "refund",
    "policy",
    "shipping",
    "delay",
    "guideline",
    "applies",
    "because",
    "status",
    "pending",
    "escalate",
    "reply",
    "café",
    "naïve",
    "€uro",
    "東京",
]


def _sentence(rng: random.Random, words: int) -> str:
    """Prose with the escapes a model writes: quotes, newlines, the odd tab or backslash."""
    out = []
    for _ in range(words):
        word = rng.choice(WORDS)
        roll = rng.random()
        if roll < 0.04:
            word = f'"{word}"'
        elif roll < 0.07:
            word += ".\n"
        elif roll < 0.08:
            word += "\t"
        elif roll < 0.085:
            word += "\\"
        out.append(word)
    return " ".join(out)


def build_output(size: int, seed: int = 0) -> str:
    """A JSON object of the six steps, `size` characters long or a little more."""
    rng = random.Random(seed)
    findings: list[dict[str, object]] = []
    checks: list[dict[str, object]] = []
    obj: dict[str, object] = {
        "request": _sentence(rng, size // 60),
        "context": _sentence(rng, size // 30),
        "findings": findings,
        "checks": checks,
        "summary": _sentence(rng, size // 60),
        "answer": _sentence(rng, size // 120),
    }
    # Strings take about half the output; lists of objects fill the rest.
    total = len(json.dumps(obj, indent=2, ensure_ascii=False))
    while total < size:
        finding: dict[str, object] = {
            "id": f"G-{len(findings)}",
            "quote": _sentence(rng, 12),
            "score": round(rng.uniform(-1, 1), 4),
            "tags": [rng.choice(WORDS) for _ in range(3)],
        }
        check: dict[str, object] = {
            "id": len(checks),
            "applies": rng.random() < 0.5,
            "compliant": None if rng.random() < 0.2 else True,
            "weight": rng.randint(0, 10**6) * 10.0 ** rng.randint(-3, 3),
        }
        findings.append(finding)
        checks.append(check)
        # Nested one level deeper than the top-level items, as in the final text.
        for item in (finding, check):
            total += len(json.dumps([[item]], indent=2, ensure_ascii=False)) - 8
    return json.dumps(obj, indent=2, ensure_ascii=False)


def split(text: str, size: int) -> list[str]:
    """`text` in chunks of `size` characters, as a stream delivers it."""
    return [text[k : k + size] for k in range(0, len(text), size)]


def feed_all(chunks: list[str], parser_class: type[StepParser] = StepParser) -> None:
    """Stream the chunks through a fresh parser."""
    parser = parser_class(STEPS)
    feed = parser.feed
    for chunk in chunks:
        feed(chunk)
    parser.close()


def timed(
    fns: Sequence[Callable[[], object]], runs: int, first_times: list[float] | None = None
) -> list[float]:
    """Median wall time of each callable, in seconds; the first one's times go to `first_times`.

    The callables run in turn, after one warm-up call each, so that noise on a shared
    machine hits all of them alike.
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    if first_times is not None:
        first_times.extend(times[0])
    return [statistics.median(spent) for spent in times]


def load_parser(source: str, origin: str) -> type[StepParser]:
    """The StepParser class that `source`, the text of a revision's parser module, defines.

    The text runs in a module object of its own, named like the real one, so that the
    parsers of two revisions can run in one process.
    """
    module = types.ModuleType("arq.parsing.parser")
    module.__file__ = origin
    exec(compile(source, origin, "exec"), module.__dict__)
    return cast("type[StepParser]", module.StepParser)


def compare(ref: str, runs: int) -> None:
    """Print the speed of the installed parser and of the one at `ref`, on 7-char chunks.

    The parser at `ref` is read with git: `arq/parsing.py`, or `arq/parsing/parser.py` once
    the parser became a package.
    """
    root = Path(__file__).resolve().parent.parent
    path = Path(inspect.getfile(StepParser))
    new_parser = StepParser
    for name in ("arq/parsing.py", "arq/parsing/parser.py"):
        git = ["git", "show", f"{ref}:{name}"]
        shown = subprocess.run(git, cwd=root, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"no parser at {ref}: {shown.stderr.strip()}")
    old_parser = load_parser(shown.stdout, f"{ref}:{name}")
    big = build_output(1_000_000)
    mb = len(big) / 1e6
    chunks = split(big, 7)
    new, old = timed(
        [partial(feed_all, chunks, new_parser), partial(feed_all, chunks, old_parser)], runs
    )
    width = max(len(ref), len("this tree"))
    print(f"this tree: {path} (the arq this interpreter imports)")
    print(f"output: {len(big):,} chars in 7-char chunks; medians of {runs} runs, in turn")
    print(f"StepParser, {'this tree':<{width}}  {mb / new:7.2f} MB/s")
    print(f"StepParser, {ref:<{width}}  {mb / old:7.2f} MB/s")
    print(f"ratio this tree / {ref}: {old / new:.3f}")


def hostile() -> None:
    """Print the time each hostile input takes (median of 3), and what it raised."""
    cases: list[tuple[str, Callable[[], object]]] = [
        ("100k '[' in 1-char chunks", partial(feed_all, split('{"plan": ' + "[" * 100_000, 1))),
        (
            "100k '{\"a\":' in 7-char chunks",
            partial(feed_all, split('{"plan":' + '{"a":' * 100_000, 7)),
        ),
        ("a 100k-digit integer", partial(feed_all, ['{"plan": ' + "9" * 100_000 + "}"])),
        (
            "200k spaces around a 200 KB string, 3-char chunks",
            partial(
                feed_all,
                split(" " * 100_000 + '{"request": "' + "ab\\n" * 50_000 + '"}' + " " * 100_000, 3),
            ),
        ),
    ]
    for text in ["{" * 200_000, '{"a": ' * 50_000, "x {" * 100_000, "```" * 100_000 + "{"]:
        cases.append(
            (
                f"parse_tolerant, {text[:6]!r}... ({len(text):,} chars)",
                partial(parse_tolerant, text),
            )
        )
    for label, call in cases:
        times, outcome = [], "ok"
        for _ in range(3):
            t0 = time.perf_counter()
            try:
                call()
            except ArqError as error:
                outcome = type(error).__name__
            times.append(time.perf_counter() - t0)
        print(f"{label:58} {statistics.median(times) * 1000:8.1f} ms  {outcome}")


def main() -> None:
    """Print the throughput table, or the comparison with another revision's parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, fewer chunk sizes")
    parser.add_argument(
        "--compare",
        nargs="?",
        const=COMPARE_REF,
        metavar="REF",
        help=f"time against arq/parsing.py at git revision REF (default {COMPARE_REF})",
    )
    parser.add_argument("--hostile", action="store_true", help="time the hostile inputs")
    args = parser.parse_args()
    if args.hostile:
        hostile()
        return
    runs = 1 if args.quick else 5
    if args.compare is not None:
        compare(args.compare, runs)
        return
    sizes = (1, 7, 64) if args.quick else CHUNK_SIZES

    big = build_output(1_000_000)
    small = build_output(100_000)
    mb_big = len(big) / 1e6  # MB of characters: stricter than UTF-8 bytes
    mb_small = len(small) / 1e6
    print(f"output: {len(big):,} chars, {len(big.encode()):,} bytes UTF-8; MB/s counts chars")

    (t_json,) = timed([partial(json.loads, big)], max(runs, 3))
    print(f"json.loads, whole text at once (reference): {mb_big / t_json:7.1f} MB/s")
    spent: list[float] = []
    (t7,) = timed([partial(feed_all, split(big, 7))], runs, spent)
    print(
        f"StepParser, 7-char chunks, median of {runs}:    {mb_big / t7:7.2f} MB/s"
        f"  (best {mb_big / min(spent):.2f}: this machine's speed varies from second to second)"
    )
    print()
    print(f"{'chunk':>5}  {'MB/s @100KB':>11}  {'MB/s @1MB':>9}  {'t(1MB)/t(100KB)':>15}")
    for size in sizes:
        t_small, t_big = timed(
            [partial(feed_all, split(small, size)), partial(feed_all, split(big, size))], runs
        )
        ratio = t_big / t_small
        flag = "" if ratio <= 12 else "  <- not linear"
        print(
            f"{size:>5}  {mb_small / t_small:>11.2f}  {mb_big / t_big:>9.2f}  {ratio:>15.2f}{flag}"
        )


if __name__ == "__main__":
    main()
