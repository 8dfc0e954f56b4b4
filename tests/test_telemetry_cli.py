"""`arq run` exports its spans when OTEL_TRACES_EXPORTER asks, through the real openai SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from arq.testing import FakeOpenAIServer, Reply

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = textwrap.dedent(
    '''
    from typing import Annotated

    import arq
    from arq.checks import verbatim_in


    class Ticket(arq.Reasoning):
        """Triage a support ticket."""

        request: str = arq.query("What does the customer ask for?")
        order_id: Annotated[str, verbatim_in("conversation")] = arq.query("Which order id?")
        answer: str = arq.answer("The reply to send.")
    '''
)
FIRST = '{"request": "a refund", "order_id": "Z-999", "answer": "x"}'
REPAIR = '{"order_id": "A-1234", "answer": "We will refund it."}'
KEY = "sk-cli-telemetry-0123456789"


def arq_run(tmp_path: Path, base_url: str, **environment: str) -> subprocess.CompletedProcess[str]:
    schema = tmp_path / "ticket.py"
    schema.write_text(SCHEMA)
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"conversation": "My kettle from order A-1234 leaks."}))
    command = [sys.executable, "-m", "arq.cli", "run", f"{schema}:Ticket"]
    command += ["--base-url", base_url, "--model", "m", "--context", str(context)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": KEY, **environment}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_arq_run_exports_its_spans_to_the_console_on_stderr(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(FIRST), Reply(REPAIR))
        done = arq_run(
            tmp_path,
            server.base_url,
            OTEL_TRACES_EXPORTER="console",
            OTEL_METRICS_EXPORTER="none",
            OTEL_SERVICE_NAME="support-bot",
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("model: m   schema: Ticket (3 steps)\n")
    assert '"name"' not in done.stdout  # stdout stays the command's own
    names = [
        line.split('"name": ')[1].strip('",')
        for line in done.stderr.splitlines()
        if line.startswith('    "name": ')
    ]
    assert names == ["chat m", "chat m", "arq.run Ticket"]  # in the order they ended
    assert '"service.name": "support-bot"' in done.stderr
    assert '"gen_ai.provider.name": "openai"' in done.stderr
    assert '"arq.repair.step": "order_id"' in done.stderr
    assert KEY not in done.stderr


def test_with_exporter_none_nothing_is_exported(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(FIRST), Reply(REPAIR))
        done = arq_run(tmp_path, server.base_url, OTEL_TRACES_EXPORTER="none")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "arq.run" not in done.stdout


def test_an_exporter_that_is_not_installed_is_said_in_one_line(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(FIRST), Reply(REPAIR))
        done = arq_run(tmp_path, server.base_url, OTEL_TRACES_EXPORTER="zipkin_json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("arq: no opentelemetry_traces_exporter named 'zipkin_json' (")
    assert line.endswith("); not exported")
