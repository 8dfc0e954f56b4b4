"""A loopback test server in a child process, so that its work is not timed with the client's.

The child answers every chat request with the same reply, streamed as fast as it can.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_CHILD = """
import sys, time
from arq.testing import FakeOpenAIServer, Reply
reply = Reply(sys.stdin.read())
with FakeOpenAIServer() as server:
    server.responder = lambda request: reply
    print(server.base_url, flush=True)
    while True:
        time.sleep(3600)
"""


@contextlib.contextmanager
def server_process(reply_text: str) -> Iterator[str]:
    """Start the child server answering `reply_text`; yields its base URL."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write(reply_text)
        child.stdin.close()
        base_url = child.stdout.readline().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the loopback server did not start")
        yield base_url
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
