"""The convergence benchmark's command line: mistakes are reported before the long run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.bench_scripts import bench_script

if TYPE_CHECKING:  # the type checker reads bench/ as top-level modules
    import convergence
else:
    convergence = bench_script("convergence", "convergence_tasks")


def _no_run(*_: object) -> None:
    raise AssertionError("the run started")


def test_a_missing_doc_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convergence, "run_all", _no_run)
    with pytest.raises(SystemExit, match=r"--doc .*missing\.md: No such file"):
        convergence.main(["--no-plot", "--doc", str(tmp_path / "missing.md")])


def test_a_doc_without_the_table_markers_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nNo table here.\n")
    monkeypatch.setattr(convergence, "run_all", _no_run)
    with pytest.raises(SystemExit, match="region to update"):
        convergence.main(["--no-plot", "--doc", str(doc)])


def test_the_table_between_the_markers_is_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "convergence.md"
    start, end = convergence.MARKERS
    doc.write_text(f"before\n{start}\nold table\n{end}\nafter\n")
    convergence.update_doc(doc, "| new |\n")
    assert doc.read_text() == f"before\n{start}\n| new |\n{end}\nafter\n"
