"""A GGUF model's weights re-encoded for llama.cpp's fast CPU kernels, kept in a cache.

llama.cpp reads a prompt with matrix kernels (llamafile's) that cover F16, Q8_0, Q4_0 and
a few other types but not Q4_1, the type the bundled SmolLM2-135M ships in, so a Q4_1
prompt takes a slower path. Re-encoded as Q8_0, each weight stays within 1/254 of the
largest in its block of 32: the same model, which reads prompts faster and generates a
little faster (`bench/weights.py` measures both). The conversion runs once: the copy is
kept under `cache_dir()` and used again while the source file is unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from arq.errors import InvalidArgumentError

__all__ = ["ENCODINGS", "cache_dir", "check_encoding", "reencoded"]

ENCODINGS = {"Q8_0": 7, "F16": 1}
"""Encodings a model can be re-encoded to, with llama.cpp's file type for each
(`LLAMA_FTYPE_MOSTLY_Q8_0`, `LLAMA_FTYPE_MOSTLY_F16`); both keep a Q4_1 model's weights."""


def cache_dir() -> Path:
    """Where re-encoded models are kept: `$ARQ_CACHE_DIR`, else `$XDG_CACHE_HOME/arq`,
    else `~/.cache/arq`."""
    given = os.environ.get("ARQ_CACHE_DIR")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "arq"


def check_encoding(encoding: str | None) -> None:
    """Raise InvalidArgumentError unless `encoding` is None or one of `ENCODINGS`."""
    if encoding is not None and encoding not in ENCODINGS:
        raise InvalidArgumentError(
            f"weights must be one of {sorted(ENCODINGS)} or None, not {encoding!r}"
        )


def reencoded(lib: Any, source: Path, encoding: str, folder: Path | None = None) -> Path:
    """`source` re-encoded as `encoding`, converted once and kept in `folder` (default
    `cache_dir()`).

    The copy is named after the source's real path, size and modification time, so a changed
    source is converted again. It is written to a temporary file and renamed, so processes
    converting at once never read half a file. If the copy cannot be made (a read-only
    cache, a full disk, a model llama.cpp cannot convert) this warns and returns `source`:
    the model still runs, on its own weights.
    """
    check_encoding(encoding)
    folder = cache_dir() if folder is None else folder
    real, stat = source.resolve(), source.stat()
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}:{encoding}"
    target = folder / f"{real.stem}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.{encoding}.gguf"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _convert(lib, source, target, ENCODINGS[encoding])
    except OSError as exc:
        warnings.warn(
            f"could not re-encode {source.name} as {encoding} in {str(folder)!r} ({exc}): "
            "running the file as it is",
            RuntimeWarning,
            stacklevel=2,
        )
        return source
    return target


def _convert(lib: Any, source: Path, target: Path, file_type: int) -> None:
    """Write `source` re-encoded as `file_type` to `target`, atomically."""
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        params = lib.llama_model_quantize_default_params()
        params.ftype = file_type
        params.allow_requantize = True  # the source is quantized already
        params.nthread = 1
        code = lib.llama_model_quantize(
            os.fsencode(source), os.fsencode(partial), ctypes.byref(params)
        )
        if code != 0:
            raise OSError(f"llama.cpp's conversion failed with code {code}")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
