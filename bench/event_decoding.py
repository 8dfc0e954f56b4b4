"""What one stream event costs to decode: `json.loads` against jiter, and arq's whole reader.

Decodes the content chunk a Chat Completions stream sends most (as the test server and
OpenAI write it) many times over, in rounds that alternate the ways, and prints the median
microseconds per event:

- `json.loads` of the event's text (after decoding its bytes as UTF-8);
- `jiter.from_json` of its bytes (object keys cached), which arq uses;
- `StreamEvents.feed`: arq's whole reader for one SSE event, framing, JSON and the checked
  `Chunk` included.

    python bench/event_decoding.py [--events 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from collections.abc import Callable

import jiter

from arq.backends.openai_events import StreamEvents

EVENT = json.dumps(
    {
        "id": "chatcmpl-fake12",
        "object": "chat.completion.chunk",
        "created": 1764697000,
        "model": "fake-model",
        "choices": [
            {"index": 0, "delta": {"content": " value"}, "finish_reason": None, "logprobs": None}
        ],
        "usage": None,
    }
).encode()
WIRE = b"data: " + EVENT + b"\n\n"


def per_event(decode: Callable[[], object], events: int) -> float:
    """Seconds per call of `decode`, over `events` calls."""
    start = time.perf_counter()
    for _ in range(events):
        decode()
    return (time.perf_counter() - start) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    reader = StreamEvents()

    def whole_reader() -> object:
        return list(reader.feed(WIRE))

    ways: dict[str, Callable[[], object]] = {
        "json.loads": lambda: json.loads(EVENT.decode()),
        "jiter.from_json": lambda: jiter.from_json(EVENT, cache_mode="keys"),
        "StreamEvents.feed": whole_reader,
    }
    assert whole_reader()  # the event carries its content
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, decode in ways.items():
            times[name].append(per_event(decode, args.events))
    versions = f"jiter {importlib.metadata.version('jiter')}, Python {sys.version.split()[0]}"
    print(
        f"a {len(EVENT)}-byte content chunk, {args.events} times per round, {args.rounds} "
        f"rounds, alternating; {versions}"
    )
    base = statistics.median(times["json.loads"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:18} {median * 1e6:6.2f} us per event {median / base:6.2f}x json.loads")


if __name__ == "__main__":
    main()
