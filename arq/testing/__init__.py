"""Test helpers: a real OpenAI-compatible server on loopback with scripted replies and faults.

```python
from arq.testing import DropAfter, FakeOpenAIServer, Reply, Status

with FakeOpenAIServer() as server:
    server.script(Reply('{"answer": "yes"}'), DropAfter(Reply("..."), 10), Status(503))
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
```

See `arq.testing.replies` for the reply and fault types and `arq.testing.server` for the
server.
"""

from arq.testing.replies import (
    DropAfter,
    Malformed,
    ReceivedRequest,
    Reply,
    Responder,
    Scripted,
    Stall,
    Status,
    Truncated,
    Usage,
    split_pieces,
)
from arq.testing.schema import SchemaResponder, request_schema, schema_instance, schema_reply
from arq.testing.server import FakeOpenAIServer

__all__ = [
    "DropAfter",
    "FakeOpenAIServer",
    "Malformed",
    "ReceivedRequest",
    "Reply",
    "Responder",
    "SchemaResponder",
    "Scripted",
    "Stall",
    "Status",
    "Truncated",
    "Usage",
    "request_schema",
    "schema_instance",
    "schema_reply",
    "split_pieces",
]
