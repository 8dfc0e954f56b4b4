"""A schema, a dataset and a responder for the batch tests: replies chosen by request content.

Item `i` of the dataset is a ticket naming order `A-i`. The responder reads which item a
request is about and which steps it asks for (its response format), so the same request
gets the same reply whatever the order requests come in:

- `i % 5 == 1`: the first answer names an order that is not in the ticket (the repair from
  `order_id` gets it right);
- `i % 7 == 2`: the first answer's summary is too long (the repair asks for it alone);
- `i % 31 == 3`: every answer names a wrong order: the same failure twice, so the item fails;
- `i % 13 == 4`: the first request of the item gets a 503 once (a transport failure).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from arq.checks import verbatim_in
from arq.schema import Reasoning, answer, query
from arq.testing import ReceivedRequest, Reply, Scripted, Status, Usage, request_schema


class Ticket(Reasoning):
    """Label a support ticket."""

    order_id: Annotated[str, verbatim_in("ticket")] = query(
        "Which order id does the ticket name, quoted from it?"
    )
    topic: Literal["refund", "delivery", "other"] = query("What is the ticket about?")
    summary: str = answer("One sentence for the agent.", max_length=60)


TOPICS = ("refund", "delivery", "other")


def items(count: int) -> Iterator[dict[str, Any]]:
    """The dataset's items."""
    for i in range(count):
        ticket = f"Ticket {i}: the customer writes about order A-{i} and its {TOPICS[i % 3]}."
        yield {"id": f"t{i}", "context": {"ticket": ticket}}


def write_dataset(path: Path, count: int) -> Path:
    """Write `count` items as JSONL."""
    path.write_text("".join(json.dumps(item) + "\n" for item in items(count)))
    return path


class TicketResponder:
    """Replies by request content; `i % 13 == 4` items get one 503 on their first request."""

    def __init__(self) -> None:
        self.failed_once: set[int] = set()

    def __call__(self, request: ReceivedRequest) -> Scripted:
        body = request.body
        text = " ".join(str(m.get("content")) for m in body["messages"])
        i = int(re.search(r"Ticket (\d+):", text).group(1))  # type: ignore[union-attr]
        asked = list(request_schema(body).get("properties", {}))
        repair = body["messages"][-1]["role"] == "user" and "rejected" in str(
            body["messages"][-1]["content"]
        )
        if i % 13 == 4 and not repair and i not in self.failed_once:
            self.failed_once.add(i)
            return Status(503, message="overloaded")
        text = json.dumps(answer_for(i, asked, repair))
        usage = Usage(len(text) // 4 + 100, len(text) // 4)
        return Reply(text, chunk_chars=4096, usage=usage)  # one piece: quick to stream


def answer_for(i: int, asked: list[str], repair: bool) -> dict[str, Any]:
    """Item `i`'s answer for the steps `asked`."""
    full = {
        "order_id": f"A-{i}",
        "topic": TOPICS[i % 3],
        "summary": f"Order A-{i}: {TOPICS[i % 3]}.",
    }
    if i % 31 == 3 or (i % 5 == 1 and not repair):
        full["order_id"] = f"B-{i}"
    if i % 7 == 2 and not repair:
        full["summary"] = "A summary that is far too long for the agent to read " * 3
    return {name: full[name] for name in asked}
