"""The docs site: every page in the navigation, no page or docstring narrating measurement
history, and a strict build that loads nothing from another host.

The build test needs the `docs` extra. It is skipped without it, unless ARQ_REQUIRE_DOCS is
set (`scripts/docs` sets it), in which case a missing mkdocs fails the run.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

import arq

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Phrasing that narrates a measurement's history (which run, what it was before, what
# changed) instead of stating what is true now. Such text belongs in CHANGELOG.md
# ("Measurement history") or in a result file under bench/results/.
HISTORY = [
    r"measured again",
    r"measured before",
    r"before this run",
    r"this run, the",
    r"an earlier (run|measurement|check)",
    r"the earlier runs?",
    r"(the|a|its) previous (run|measurement)",
    r"the run before",
    r"the (second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth) run",
    r"(second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth) run's",
    r"what changed since",
    r"since the earlier",
    r"(every|each) run so far",
    r"instead of \d",
    r"went from \d",
    r"from \d[\d.,]* ?%? to \d",
    r"\d[\d.,]* ?(%|ms|s|minutes|tokens/s|MB/s)? before\)",
    r"now (also|fails?|wins?) ",
    r"\(now the default\)",
    r"as before",
    r"than before",
    r"no longer (measured|shown)",
]
_HISTORY = re.compile("|".join(f"(?:{p})" for p in HISTORY), re.IGNORECASE)


def _nav_pages() -> list[str]:
    """The .md files named in mkdocs.yml's nav (read as text: no YAML parser needed)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"^\s+-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$", nav, re.M)


def _pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert sorted(set(_pages()) - set(nav)) == [], "pages under docs/ missing from the nav"
    assert sorted(set(nav) - set(_pages())) == [], "nav entries with no page under docs/"


def test_the_api_reference_covers_the_modules_users_import_from() -> None:
    modules = {"arq", "arq.events", "arq.trace", "arq.parsing", "arq.prompt", "arq.checks"}
    modules |= {"arq.errors", "arq.backends", "arq.testing", "arq.eval", "arq.repair"}
    documented = {
        m
        for page in (DOCS / "reference").glob("*.md")
        for m in re.findall(r"^::: ([\w.]+)$", page.read_text(), re.M)
    }
    assert modules <= documented


def _code_prose() -> Iterator[tuple[Path, int, str]]:
    """Every docstring, attribute docstring and comment of the package, with its line."""
    files = {p.resolve() for folder in ("arq", "schemas") for p in (ROOT / folder).rglob("*.py")}
    for path in sorted(files):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                continue
            if isinstance(node.value.value, str):
                yield path, node.lineno, node.value.value
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                yield path, token.start[0], token.string


def _history_in(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text)
    return [flat[max(0, m.start() - 30) : m.end() + 30] for m in _HISTORY.finditer(flat)]


def test_the_history_patterns_catch_what_they_are_for() -> None:
    for narration in [
        "This run, the seventh, has 30 tasks",
        "The sixth run is the fifth's code",
        "now fail at 0.124 a step, and arq wins 59 of 60 tasks instead of 55",
        "best 13.1; an earlier run gave 5.9",
        "Measured again\nafter repair turns began",
        "Before this run, grounding held only `str` steps. It now also holds",
        "Name steps written in repairs failed 77 times (89 before)",
    ]:
        assert _history_in(narration), narration
    for present in [
        "The first run writes the file and fails once",
        "a repair samples the step it redoes at 0.7",
        "A request that no longer matches its recording fails",
    ]:
        assert not _history_in(present), present


def test_no_page_narrates_measurement_history() -> None:
    found = {page: hits for page in _pages() if (hits := _history_in((DOCS / page).read_text()))}
    assert found == {}, "move measurement history to CHANGELOG.md or bench/results/"


def test_no_docstring_or_comment_narrates_measurement_history() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {hit}"
        for path, line, text in _code_prose()
        for hit in _history_in(text)
    ]
    assert found == [], "move measurement history to CHANGELOG.md or bench/results/"


# --- the built site -------------------------------------------------------------------------

_REQUIRED = os.environ.get("ARQ_REQUIRE_DOCS", "") not in ("", "0")
_HAVE_MKDOCS = importlib.util.find_spec("mkdocs") is not None
# An asset (script, style sheet, font, image, frame) fetched from another host.
_SRC = r"""[\"']?(?:https?:)?//"""  # an attribute or url() value naming another host
_REMOTE_ASSET = [
    re.compile(pattern + _SRC, re.I)
    for pattern in [
        r"<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\ssrc=",
        r"<link\b[^>]*\shref=",
        r"url\(\s*",
        r"@import\s+(?:url\()?",
    ]
]


def test_the_remote_asset_patterns_catch_what_they_are_for() -> None:
    def remote(html: str) -> bool:
        return any(p.search(html) for p in _REMOTE_ASSET)

    assert remote('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">')
    assert remote('<script src="//unpkg.com/mermaid.min.js"></script>')
    assert remote("@font-face{src:url(https://fonts.gstatic.com/x.woff2)}")
    assert not remote('<a href="https://github.com/">a link</a>')
    assert not remote('<script src="../assets/javascripts/bundle.js"></script>')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _HAVE_MKDOCS:
        if _REQUIRED:
            pytest.fail("ARQ_REQUIRE_DOCS is set but mkdocs is not installed (the docs extra)")
        pytest.skip("mkdocs not installed: bash scripts/docs installs the docs extra")
    out = tmp_path_factory.mktemp("site")
    # A proxy that refuses every connection: a build that reaches for the network fails.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_PROXY": "", "no_proxy": ""}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = "http://127.0.0.1:9"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    return out


def test_the_site_loads_nothing_from_another_host(site: Path) -> None:
    found = [
        f"{path.relative_to(site)}: {m.group(0)[:120]}"
        for path in sorted(site.rglob("*"))
        if path.suffix in (".html", ".css")
        for pattern in _REMOTE_ASSET
        for m in pattern.finditer(path.read_text(errors="replace"))
    ]
    assert found == []


def test_the_site_has_search_the_plots_and_the_public_api(site: Path) -> None:
    assert (site / "search" / "search_index.json").is_file()
    for page, image in [("convergence", "convergence.png"), ("eval", "eval.png")]:
        assert (site / image).is_file()
        assert re.search(rf'<img [^>]*src="\.\./{image}"', (site / page / "index.html").read_text())
    reference = (site / "reference" / "arq" / "index.html").read_text()
    assert [n for n in arq.__all__ if f'id="arq.{n}"' not in reference] == []
    backends = (site / "reference" / "backends" / "index.html").read_text()
    for name in ("OpenAIBackend", "LlamaCppBackend"):
        assert f'id="arq.backends.{name}"' in backends
