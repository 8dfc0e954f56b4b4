"""Big jobs through batch files: the OpenAI Batch API's and `vllm run-batch`'s JSONL.

```python
from arq import batch

batch.prepare(Reply, "items.jsonl", "job/", model="gpt-4.1-mini")  # job/round-1/input-*.jsonl
# ... the engine answers job/round-1/input-000.jsonl into output.jsonl (and errors.jsonl)
summary = batch.ingest("job/", ["output.jsonl", "errors.jsonl"])    # job/round-2/... if any
# or, against any OpenAI-compatible server (or `backend=` the embedded model):
batch.loop("job/", base_url="http://127.0.0.1:8000/v1")
# or through the OpenAI Batch API (`submit`, `status`, `fetch` one step at a time):
batch.loop("job/", batch_api=True)
```

Every answer is checked step by step with the schema's checks; a failed step gets the
repair request `Executor.run` would send (the accepted steps kept, the rest asked for
again) in the next round's file. Accepted outputs collect in `job/results.jsonl`, items
that cannot converge in `job/failed.jsonl`. Every command can be run again after a crash
and goes on where it stopped; see `arq.batch.manifest` for the folder's layout.
"""

from arq.batch.api import fetch, status, submit
from arq.batch.ingest import RoundSummary, ingest
from arq.batch.loop import loop
from arq.batch.manifest import Manifest, Round, Settings
from arq.batch.prepare import prepare
from arq.batch.run import arun, run
from arq.errors import BatchError

__all__ = [
    "BatchError",
    "Manifest",
    "Round",
    "RoundSummary",
    "Settings",
    "arun",
    "fetch",
    "ingest",
    "loop",
    "prepare",
    "run",
    "status",
    "submit",
]
