"""Model services: the `Backend` protocol and its implementations.

`OpenAIBackend` (any OpenAI-compatible server) and `LlamaCppBackend` (an embedded
llama.cpp model) are imported on first use, so `import arq` stays light and the optional
`llama-cpp-python` is needed only by those who use it. `Usage` is `arq.trace.Usage`, the
tokens a `Chunk` reports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from arq.backends.base import Backend, Capabilities, Chunk, OutputMode, Settings
from arq.trace import Usage

if TYPE_CHECKING:
    from arq.backends.llamacpp import LlamaCppBackend
    from arq.backends.openai import OpenAIBackend

__all__ = [
    "Backend",
    "Capabilities",
    "Chunk",
    "LlamaCppBackend",
    "OpenAIBackend",
    "OutputMode",
    "Settings",
    "Usage",
]

_LAZY = {"OpenAIBackend": "arq.backends.openai", "LlamaCppBackend": "arq.backends.llamacpp"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'arq.backends' has no attribute {name!r}")
