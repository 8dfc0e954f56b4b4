"""Open the built documentation site in headless Chromium, as a reader would.

    python scripts/docs_check.py SITE_DIR [--chromium /usr/bin/chromium]

Serves SITE_DIR over HTTP on a free port of 127.0.0.1, then opens the home page, a how-to
guide, a reference page and a results page (the one with a plot) in Chromium, driven by
Playwright with the browser already installed (never Playwright's own download). It fails
on a console error or an uncaught exception, a request the site answers with an error, an
image that did not load (naturalWidth 0), or a search for "repair" in the search box that
finds nothing. `scripts/docs-check` builds the site and runs this.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

PAGES = [
    ("home", ""),
    ("guide", "how-to/ground-steps/"),
    ("reference", "reference/arq/"),
    ("results", "convergence/"),
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SEARCH_TERM = "repair"
TIMEOUT_MS = 15_000


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the report says what matters."""


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """The folder over HTTP on a free loopback port, for as long as the block runs."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def check_page(context: BrowserContext, url: str) -> list[str]:
    """Open one page; the problems found on it."""
    problems: list[str] = []
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    images: list[dict[str, Any]] = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({src: i.src, width: i.naturalWidth}))"
    )
    problems += [f"image not loaded: {i['src']}" for i in images if i["width"] == 0]
    title = page.title()
    print(f"  {url}: {title!r}, {len(images)} image(s)")
    page.close()
    return problems


def search(page: Page, url: str, term: str) -> int:
    """How many results the site's search box gives for `term` (0 if search never starts)."""
    page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    box = page.locator("input.md-search__input")
    results = page.locator(".md-search-result__item")
    try:
        # The index loads in a web worker; until it is ready the box says so, and what is
        # typed before then finds nothing.
        page.wait_for_function(
            "() => !document.querySelector('.md-search-result__meta')"
            ".textContent.includes('Initializing')",
            timeout=TIMEOUT_MS,
        )
        box.click(timeout=TIMEOUT_MS)
        box.press_sequentially(term, delay=50)  # the box reacts to keys, not to a set value
        results.first.wait_for(timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        return 0
    return int(results.count())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: no index.html in {args.site}: build the site first", file=sys.stderr)
        return 2
    problems: list[str] = []
    with (
        serve(args.site) as base,
        sync_playwright() as playwright,
        tempfile.TemporaryDirectory(prefix="docs-check-profile-") as profile,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            ignore_default_args=["--headless=new"],
        )
        print(f"site served at {base}")
        for name, path in PAGES:
            found = check_page(context, base + path)
            problems += [f"{name} ({path or '/'}): {p}" for p in found]
        count = search(context.new_page(), base, SEARCH_TERM)
        print(f"  search for {SEARCH_TERM!r}: {count} result(s)")
        if count == 0:
            problems.append(f"the search for {SEARCH_TERM!r} found nothing")
        context.close()
    for problem in problems:
        print(f"FAIL {problem}")
    print("docs-check: " + ("failed" if problems else f"{len(PAGES)} pages and search passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
