"""The Files and Batches endpoints of the OpenAI API, kept in memory, for `FakeOpenAIServer`.

```python
with FakeOpenAIServer() as server:
    server.responder = my_responder            # answers each line of a batch
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    upload = client.files.create(file=Path("input.jsonl"), purpose="batch")
    created = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = client.batches.retrieve(created.id)          # "completed"
    client.files.content(done.output_file_id).read()    # one result line per request
```

A batch is processed when it is created: each line's body gets a reply as a chat request
would (the scripted queue first, then the responder), a `Status` goes to the error file, any
other reply to the output file. `server.batches.outcome` chooses how the next batches end:
`completed`, `failed` (with `errors`, nothing processed), `expired` or `cancelled` (every
request in the error file as `batch_expired` / `batch_cancelled`).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from arq.testing.replies import ReceivedRequest, Render, Scripted, Status, flatten

__all__ = ["BatchAPI", "BatchOutcome"]

BatchOutcome = Literal["completed", "failed", "expired", "cancelled"]
"""How a batch of `FakeOpenAIServer` ends."""

Answer = tuple[int, bytes, str]  # status, body, content type


class BatchAPI:
    """Files and batches in memory, answered at `/v1/files...` and `/v1/batches...`.

    Attributes:
        outcome: How the batches created from now on end.
        files: Each file's metadata and content, by id.
        batches: Each batch object, by id.
        deleted: The ids of deleted files, in order.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.outcome: BatchOutcome = "completed"
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def handles(path: str) -> bool:
        """Whether `path` is one of these endpoints."""
        parts = path.strip("/").split("/")
        return len(parts) >= 2 and parts[1] in ("files", "batches")

    def answer(
        self,
        rec: ReceivedRequest,
        raw: bytes,
        reply_to: Callable[[ReceivedRequest], Scripted],
    ) -> Answer:
        """Answer one request to these endpoints; `reply_to` answers a batch's lines."""
        parts = rec.path.strip("/").split("/")[1:]
        method = rec.method
        with self._lock:
            if parts == ["files"] and method == "POST":
                return self._upload(rec.headers.get("content-type", ""), raw)
            if parts[0] == "files" and len(parts) >= 2 and parts[1] in self.files:
                return self._file(method, parts[1], parts[2:])
            if parts == ["batches"] and method == "POST":
                return self._create(rec.body, reply_to)
            if parts == ["batches"] and method == "GET":
                return _json(200, _page(list(self.batches.values())))
            if parts[0] == "batches" and len(parts) >= 2 and parts[1] in self.batches:
                batch = self.batches[parts[1]]
                if parts[2:] == ["cancel"] and method == "POST":
                    batch.update(status="cancelled", cancelled_at=int(time.time()))
                return _json(200, batch)
        return _json(404, _error(f"FakeOpenAIServer: no {method} {rec.path}", "not_found"))

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids)}"

    def _store(self, name: str, content: bytes, purpose: str) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self._new_id("file"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[meta["id"]] = (meta, content)
        return meta

    def _upload(self, content_type: str, raw: bytes) -> Answer:
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, tuple[str, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename() or "", payload)
        if "file" not in fields:
            return _json(400, _error("the upload holds no file", "invalid_request_error"))
        purpose = fields.get("purpose", ("", b"batch"))[1].decode()
        return _json(
            200, self._store(fields["file"][0] or "upload.jsonl", fields["file"][1], purpose)
        )

    def _file(self, method: str, file_id: str, rest: list[str]) -> Answer:
        meta, content = self.files[file_id]
        if method == "DELETE":
            del self.files[file_id]
            self.deleted.append(file_id)
            return _json(200, {"id": file_id, "object": "file", "deleted": True})
        if rest == ["content"]:
            return 200, content, "application/octet-stream"
        return _json(200, meta)

    def _create(self, body: Any, reply_to: Callable[[ReceivedRequest], Scripted]) -> Answer:
        if not isinstance(body, dict) or body.get("input_file_id") not in self.files:
            return _json(400, _error("input_file_id names no uploaded file", "invalid_request"))
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": self._new_id("batch"),
            "object": "batch",
            "endpoint": body.get("endpoint", "/v1/chat/completions"),
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": self.outcome,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "expires_at": now + 24 * 3600,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        if self.outcome == "failed":
            batch.update(failed_at=now)
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_json_line", "message": "FakeOpenAIServer: failed"}],
            }
            return _json(200, batch)
        lines = self.files[body["input_file_id"]][1].decode().splitlines()
        out, errors = self._process([json.loads(line) for line in lines if line.strip()], reply_to)
        batch.update({f"{self.outcome}_at": now})
        batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out)}
        batch["request_counts"]["failed"] = len(errors)
        if out:
            batch["output_file_id"] = self._store("output.jsonl", _jsonl(out), "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store("errors.jsonl", _jsonl(errors), "batch_output")[
                "id"
            ]
        return _json(200, batch)

    def _process(
        self, requests: list[Any], reply_to: Callable[[ReceivedRequest], Scripted]
    ) -> tuple[list[Any], list[Any]]:
        """Each request line's result: to the output file, or to the error file."""
        out: list[Any] = []
        errors: list[Any] = []
        for serial, request in enumerate(requests, start=1):
            line: dict[str, Any] = {"id": self._new_id("batch_req"), "error": None}
            line["custom_id"] = request.get("custom_id")
            if self.outcome != "completed":
                code = f"batch_{self.outcome}"
                line["response"] = None
                line["error"] = {"code": code, "message": f"FakeOpenAIServer: {code}"}
                errors.append(line)
                continue
            body = request.get("body") or {}
            item = reply_to(ReceivedRequest("POST", request.get("url", ""), {}, body))
            request_id = f"req_fakebatch{serial}"
            if isinstance(item, Status):
                error_body = item.error_body()
                line["response"] = {"status_code": item.code, "request_id": request_id}
                line["response"]["body"] = error_body
                errors.append(line)
                continue
            reply, _ = flatten(item)  # faults of a stream do not apply to a batch
            completion = Render(reply, body, serial, self.model).completion()
            line["response"] = {"status_code": 200, "request_id": request_id, "body": completion}
            out.append(line)
        return out, errors


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    data = list(reversed(items))  # newest first, as the API lists them
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _json(code: int, value: Any) -> Answer:
    return code, json.dumps(value).encode(), "application/json"


def _jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
