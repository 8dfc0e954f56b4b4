"""Test helpers: a real OpenAI-compatible server on loopback with scripted replies and faults.

```python
from arq.testing import DropAfter, FakeOpenAIServer, Reply, Status

with FakeOpenAIServer() as server:
    server.script(Reply('{"answer": "yes"}'), DropAfter(Reply("..."), 10), Status(503))
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
```

See `arq.testing.replies` for the reply and fault types and `arq.testing.server` for the
server. `ScriptedBackend` streams scripted replies with no network; `RecordingBackend` and
`ReplayBackend` record a live backend's calls to a cassette and replay them offline;
`assert_valid`, `assert_invalid_at` and `assert_prompt_matches` check recorded outputs and
prompt snapshots. The pytest plugin (`arq.testing.plugin`) wraps these as fixtures.
"""

from arq.errors import CassetteMismatch
from arq.testing.asserts import (
    assert_invalid_at,
    assert_prompt_matches,
    assert_valid,
    render_prompt,
)
from arq.testing.cassette import RecordingBackend, ReplayBackend
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
    split_pieces,
)
from arq.testing.schema import SchemaResponder, request_schema, schema_instance, schema_reply
from arq.testing.scripted import ScriptedBackend
from arq.testing.server import FakeOpenAIServer
from arq.trace import Usage

__all__ = [
    "CassetteMismatch",
    "DropAfter",
    "FakeOpenAIServer",
    "Malformed",
    "ReceivedRequest",
    "RecordingBackend",
    "ReplayBackend",
    "Reply",
    "Responder",
    "SchemaResponder",
    "Scripted",
    "ScriptedBackend",
    "Stall",
    "Status",
    "Truncated",
    "Usage",
    "assert_invalid_at",
    "assert_prompt_matches",
    "assert_valid",
    "render_prompt",
    "request_schema",
    "schema_instance",
    "schema_reply",
    "split_pieces",
]
