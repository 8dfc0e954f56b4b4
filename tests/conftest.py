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


class PublicOnly:
    """A `llama_cpp.Llama` that refuses every attribute whose name starts with "_", so a
    test fails wherever arq reaches into llama-cpp-python's private state."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"arq read Llama's private attribute {name!r}")
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"arq set Llama's private attribute {name!r}")
        setattr(object.__getattribute__(self, "_target"), name, value)


@pytest.fixture(autouse=True, scope="session")
def _llama_public_only() -> Iterator[None]:
    """Every `Llama` arq makes in the tests is wrapped in `PublicOnly`."""
    try:
        import llama_cpp
    except ImportError:
        yield
        return
    real = llama_cpp.Llama

    def guarded(*args: Any, **kwargs: Any) -> Any:
        return PublicOnly(real(*args, **kwargs))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llama_cpp, "Llama", guarded)
        yield
