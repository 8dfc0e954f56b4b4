"""The code blocks of the docs pages and the README, read the way tests/test_docs_code.py
runs them.

The conventions a page follows:

- A `python`, `bash` or `console` block runs. `text` and `json` blocks are data or output;
  they do not run.
- The `python` blocks of one page run in order, as one script, so a later block can use the
  names an earlier one defined. A page whose blocks define `test_` functions runs under
  pytest instead, and each test must pass.
- What a `python` block prints is shown either in the comment of each `print(...)` line
  (`print(result.output.order_id)  # R-7731`) or in a `text` block titled "Output" right
  after it (```` ```text title="Output" ````).
- A `console` block holds `$ command` lines, each followed by its output. A `bash` block
  runs as one script and must succeed; a "text" block titled "Output" after it is its
  output.
- In shown output, `...` (and the spaces around it) stands for any text, and times
  (`5.8 s`, `12 ms`) match any time.
- `<!-- local -->` on the line before a block: it needs the embedded model, and runs in the
  `local` lane. `<!-- not-run: reason -->`: it cannot run here (a real API key, a GPU, a
  collector); the test lists these blocks, so they stay few.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("python", "bash", "console")
_FENCE = re.compile(r"^```(\S*)(.*)$")
_MARKER = re.compile(r"^<!--\s*(not-run|local)(?::\s*(.*?))?\s*-->$")
_PRINT = re.compile(r"^\s*print\(.*?\)(?:  # (.*))?$")
_TIME = re.compile(r'\b\d+(?:\.\d+)? ?(?:s|ms|seconds|minutes)\b|(?<=time=")[\d.]+')


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str  # relative to the repository's root
    line: int  # of the opening fence
    lang: str
    code: str
    output: str | None = None  # the "Output" block right after it
    not_run: str | None = None  # the reason a <!-- not-run: ... --> marker gives
    local: bool = False  # <!-- local -->: needs the embedded model

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def printed(self) -> list[str]:
        """The output the `# ...` comments of a python block's print lines show."""
        shown = []
        for line in self.code.splitlines():
            found = _PRINT.match(line)
            if found:
                if found.group(1) is None:
                    raise AssertionError(f"{self.id}: `{line}` shows no output")
                shown.append(found.group(1))
        return shown


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of one page, with its marker and its output block."""
    lines = path.read_text().splitlines()
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    found: list[Block] = []
    number = 0
    while number < len(lines):
        fence = _FENCE.match(lines[number])
        if not fence:
            number += 1
            continue
        end = number + 1
        while not lines[end].startswith("```"):
            end += 1
        code = "\n".join(lines[number + 1 : end]) + "\n"
        marker = _marker_before(lines, number)
        block = Block(page, number + 1, fence.group(1), code)
        if fence.group(1) == "text" and 'title="Output"' in fence.group(2):
            previous = found[-1] if found else None
            if previous is None or previous.lang not in RUNS:
                raise AssertionError(f"{page}:{number + 1}: an Output block after no code block")
            found[-1] = Block(**{**previous.__dict__, "output": code})
        else:
            if marker is not None:
                kind, reason = marker
                if kind == "not-run" and not reason:
                    raise AssertionError(f"{block.id}: a not-run marker gives no reason")
                block = Block(
                    page, number + 1, block.lang, code, None, reason or None, kind == "local"
                )
            found.append(block)
        number = end + 1
    return found


def _marker_before(lines: list[str], fence: int) -> tuple[str, str] | None:
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    marker = _MARKER.match(lines[before].strip()) if before >= 0 else None
    return (marker.group(1), marker.group(2) or "") if marker else None


def runnable() -> list[Block]:
    return [b for path in pages() for b in blocks(path) if b.lang in RUNS]


def console_commands(code: str) -> list[tuple[str, str]]:
    """The `$ command` lines of a console block, each with the output shown after it."""
    steps: list[tuple[str, list[str]]] = []
    continued = False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            text = line[2:] if line.startswith("$ ") and not continued else line
            if continued:
                steps[-1] = (steps[-1][0] + "\n" + text, [])
            else:
                steps.append((text, []))
            continued = line.endswith("\\")
        elif steps:
            steps[-1][1].append(line)
        else:
            raise AssertionError(f"output before any command: {line!r}")
    return [(command, "\n".join(out) + "\n" if out else "") for command, out in steps]


def normalise(text: str) -> str:
    """Times replaced, trailing spaces and blank lines at the end dropped."""
    text = _TIME.sub("<time>", text)
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def matches(shown: str, actual: str) -> bool:
    """Whether actual output is what a page shows, `...` standing for any text."""
    parts = [re.escape(part) for part in re.split(r"[ \t]*\.\.\.[ \t]*", normalise(shown))]
    return re.fullmatch(".*?".join(parts), normalise(actual), re.S) is not None
