"""Every Python and shell block of the docs pages and the README runs, and prints what the
page shows (tests/doc_blocks.py states the conventions a page follows).

Blocks run offline, in a fresh folder that links the repository's `examples/`, `schemas/`
and `bench/`, with the repository first on the import path and no API key in the
environment. Two substitutions put a page's commands in this environment: `.venv/bin/`
names the running interpreter's folder, and `bash scripts/demo` (which installs arq into
`.venv` first) runs what it runs after the install, `python examples/support_reply.py`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_blocks import (
    ROOT,
    Block,
    blocks,
    console_commands,
    matches,
    normalise,
    pages,
    runnable,
)

# The blocks that cannot run here, by page and first line (up to a comment). A new one needs a
# reason on the page and a line here, so that they stay few.
NOT_RUN = {
    ("README.md", "bash scripts/test"),
    ("README.md", "pip install 'llama-cpp-python[server]>=0.3.16'"),
    ("README.md", "bash scripts/docs"),
    ("docs/getting-started/install.md", "bash scripts/setup local"),
    ("docs/getting-started/install.md", "python3 -m venv .venv"),
    ("docs/getting-started/first-run.md", "pip install -e '.[llama-server]'"),
    ("docs/how-to/servers.md", "export OPENAI_API_KEY=sk-..."),
    ("docs/how-to/test-offline.md", "def test_triage_live_once(arq_cassette):"),
    ("docs/reference/cli.md", "$ arq run mypkg.schemas:Ticket --context ticket.json --base-url "),
    ("docs/eval.md", "arq eval examples/scenarios/schema.py:SCHEMAS examples/scenarios"),
    ("docs/convergence.md", "pip install -e '.[plot]'"),
    ("docs/concepts/executor.md", '@arq.check("condition", advisory=True)'),
    (
        "docs/concepts/executor.md",
        'executor = arq.Executor(backend, max_repairs=2, unconverged="ret',
    ),
    ("docs/how-to/telemetry.md", "python bench/telemetry_waterfall.py --seed 3"),
    (
        "docs/how-to/telemetry.md",
        "OTEL_TRACES_EXPORTER=console OTEL_SERVICE_NAME=support-bot arq r",
    ),
    ("docs/how-to/batch.md", "arq batch prepare mypkg.schemas:Reply items.jsonl --out job --mo"),
    ("docs/how-to/batch.md", "from arq import batch"),
    ("docs/how-to/batch.md", "arq batch prepare mypkg.schemas:Reply items.jsonl --out job --mo"),
    ("docs/how-to/batch.md", "arq batch prepare mypkg.schemas:Reply items.jsonl --out job --mo"),
}

_SEPARATOR = "\x1e"
_BIN = Path(sys.executable).parent


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ARQ_TRACE"))}
    env["PATH"] = f"{_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("examples", "schemas", "bench"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _in_this_environment(command: str) -> str:
    command = command.replace(".venv/bin/", "")
    return re.sub(r"\bbash scripts/demo\b", "python examples/support_reply.py", command)


def _needs_the_model(chosen: list[Block]) -> list[pytest.MarkDecorator]:
    if not any(b.local for b in chosen):
        return []
    have = importlib.util.find_spec("llama_cpp") is not None or os.environ.get("ARQ_REQUIRE_LOCAL")
    skip = pytest.mark.skipif(not have, reason="the local extra is not installed")
    return [pytest.mark.local, skip]


def _python_pages() -> list[pytest.ParameterSet]:
    params = []
    for path in pages():
        chosen = [b for b in blocks(path) if b.lang == "python" and b.not_run is None]
        page = path.relative_to(ROOT).as_posix()
        offline = [b for b in chosen if not b.local]
        if offline:
            params.append(pytest.param(offline, id=page))
        if len(offline) < len(chosen):  # the whole page, in the local lane
            params.append(pytest.param(chosen, id=f"{page}[local]", marks=_needs_the_model(chosen)))
    return params


def _shell_blocks() -> list[pytest.ParameterSet]:
    return [
        pytest.param(b, id=b.id, marks=_needs_the_model([b]))
        for b in runnable()
        if b.lang in ("bash", "console") and b.not_run is None
    ]


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=folder,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.parametrize("chosen", _python_pages())
def test_the_python_blocks_of_a_page_run_as_shown(chosen: list[Block], folder: Path) -> None:
    tests = [name for b in chosen for name in re.findall(r"^def (test_\w+)", b.code, re.M)]
    if tests:
        script = folder / "test_page.py"
        script.write_text("".join(b.code for b in chosen))
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
        if "prompt_snapshot" in script.read_text():
            _run(args, folder)  # the first run writes the snapshots, and fails for that
        out = _run(args, folder)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{len(tests)} passed" in out.stdout, out.stdout
        return
    mark = f"\nimport sys as _sys\n_sys.stdout.write({_SEPARATOR!r})\n_sys.stdout.flush()\n"
    script = folder / "page.py"
    script.write_text(mark.join(b.code for b in chosen))
    out = _run([sys.executable, script.name], folder)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.split(_SEPARATOR)
    assert len(printed) == len(chosen)
    for block, actual in zip(chosen, printed, strict=True):
        shown = block.output if block.output is not None else "\n".join(block.printed())
        assert matches(shown, actual), f"{block.id} printed:\n{actual}\nthe page shows:\n{shown}"


@pytest.mark.parametrize("block", _shell_blocks())
def test_the_shell_blocks_run_as_shown(block: Block, folder: Path) -> None:
    if block.lang == "bash":
        script = "set -euo pipefail\n" + _in_this_environment(block.code)
        out = _run(["bash", "-c", script], folder)
        assert out.returncode == 0, out.stdout + out.stderr
        if block.output is not None:
            actual = out.stdout + out.stderr
            assert matches(block.output, actual), f"{block.id} printed:\n{actual}"
        return
    for command, shown in console_commands(block.code):
        out = subprocess.run(
            ["bash", "-c", _in_this_environment(command)],
            cwd=folder,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
            check=False,
        )
        assert matches(shown, out.stdout), f"{block.id}: $ {command}\n{out.stdout}"


def _first_line(code: str) -> str:
    return code.splitlines()[0].split("  #")[0].strip()[:64]


def test_the_blocks_that_do_not_run_are_the_listed_few() -> None:
    marked = {(b.page, _first_line(b.code)) for b in runnable() if b.not_run is not None}
    assert marked == NOT_RUN


def test_shown_output_matches_with_times_and_elisions() -> None:
    assert matches("calls: 2   time: 5.8 s\n", "calls: 2   time: 0.4 s")
    assert matches('{\n  "schema": { ... },\n}', '{\n  "schema": {"a": 1,\n "b": 2},\n}')
    assert not matches("calls: 2\n", "calls: 3\n")
    assert not matches("ok\n", "ok\nand more\n")
    assert normalise("took 12 ms  \n\n") == "took <time>"


def test_the_page_conventions_are_read_as_stated(tmp_path: Path) -> None:
    page = tmp_path / "probe.md"
    text = (
        '```python\nprint(1)  # 1\n```\n\n```text title="Output"\n1\n```\n\n'
        "<!-- not-run: needs a key -->\n```bash\nexport X=1\n```\n"
        "<!-- local -->\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n"
    )
    page.write_text(text)
    found = blocks(page)
    assert [(b.lang, b.output, b.not_run, b.local) for b in found] == [
        ("python", "1\n", None, False),
        ("bash", None, "needs a key", False),
        ("console", None, None, True),
    ]
    assert found[0].printed() == ["1"]
    assert console_commands(found[2].code) == [("echo a \\\n  b", "a b\n"), ("true", "")]
    with pytest.raises(AssertionError, match="shows no output"):
        Block("p.md", 1, "python", "print(2)\n").printed()
