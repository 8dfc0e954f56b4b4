"""Shared fixtures: no network, no API keys."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Re-encoded models go to a folder of this run, not the user's cache (subprocesses
    inherit it): the bundled one is converted once per run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARQ_CACHE_DIR", str(tmp_path_factory.mktemp("arq-cache")))
        yield


@pytest.fixture(autouse=True)
def _no_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection that leaves this machine: tests never touch a real service."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost"):
            raise RuntimeError(f"tests must not connect to {host!r}; use the loopback test server")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
