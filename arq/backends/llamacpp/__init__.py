"""The embedded llama.cpp backend and the decoding helpers only it uses."""

from arq.backends.llamacpp.backend import LlamaCppBackend, count_tokens, resolve_model_path
from arq.errors import ModelNotFoundError

__all__ = ["LlamaCppBackend", "ModelNotFoundError", "count_tokens", "resolve_model_path"]
