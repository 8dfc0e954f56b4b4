"""The embedded llama.cpp backend and the decoding helpers only it uses."""

from arq.backends.llamacpp.backend import LlamaCppBackend, resolve_model_path
from arq.errors import ModelNotFoundError

__all__ = ["LlamaCppBackend", "ModelNotFoundError", "resolve_model_path"]
