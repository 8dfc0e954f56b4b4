"""A GGUF model's weights re-encoded for llama.cpp's fast CPU kernels when it loads.

llama.cpp reads a prompt with matrix kernels (llamafile's) that cover F16, Q8_0, Q4_0 and
a few other types but not Q4_1, the type the bundled SmolLM2-135M ships in, so a Q4_1
prompt takes a slower path. Re-encoded as Q8_0, each weight stays within 1/254 of the
largest in its block of 32: the same model, which reads prompts faster and generates a
little faster (`bench/weights.py` measures both).

By default the copy is a temporary file, read whole into memory and removed as soon as the
model is loaded, so nothing is left on disk. A cache folder (`weights_cache=` or
`$ARQ_CACHE_DIR`) keeps the copy instead, so later loads skip the conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arq.backends.llamacpp.native import quantize
from arq.errors import InvalidArgumentError

__all__ = ["ENCODINGS", "cache_dir", "check_encoding", "loadable", "reencoded"]

ENCODINGS = {"Q8_0": 7, "F16": 1}
"""Encodings a model can be re-encoded to, with llama.cpp's file type for each
(`LLAMA_FTYPE_MOSTLY_Q8_0`, `LLAMA_FTYPE_MOSTLY_F16`); both keep a Q4_1 model's weights."""


def cache_dir() -> Path | None:
    """Where re-encoded models are kept, if anywhere: `$ARQ_CACHE_DIR`, else nowhere."""
    given = os.environ.get("ARQ_CACHE_DIR")
    return Path(given).expanduser() if given else None


def check_encoding(encoding: str | None) -> None:
    """Raise InvalidArgumentError unless `encoding` is None or one of `ENCODINGS`."""
    if encoding is not None and encoding not in ENCODINGS:
        raise InvalidArgumentError(
            f"weights must be one of {sorted(ENCODINGS)} or None, not {encoding!r}"
        )


@contextlib.contextmanager
def loadable(
    lib: Any,
    source: Path,
    encoding: str | None,
    folder: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The file to load for `source` in `encoding`, and the `Llama` options it needs.

    With a cache `folder` (default `cache_dir()`) the copy is kept there; without one it is
    a temporary file, loaded without memory-mapping and removed when the block ends. If the
    copy cannot be made this warns and gives `source`: the model still runs, on its own
    weights.
    """
    if encoding is None:
        yield source, {}
        return
    kept = Path(folder).expanduser() if folder is not None else cache_dir()
    if kept is not None:
        yield reencoded(lib, source, encoding, kept), {}
        return
    with tempfile.TemporaryDirectory(prefix="arq-weights-") as scratch:
        target = Path(scratch) / f"{source.stem}.{encoding}.gguf"
        try:
            quantize(lib, source, target, ENCODINGS[encoding])
        except OSError as exc:
            _could_not(source, encoding, scratch, exc)
            yield source, {}
            return
        yield target, {"use_mmap": False}  # read whole, so the file can go at once


def reencoded(lib: Any, source: Path, encoding: str, folder: Path) -> Path:
    """`source` re-encoded as `encoding`, converted once and kept in `folder`.

    The copy is named after the source's real path, size and modification time, so a changed
    source is converted again. It is written to a temporary file and renamed, so processes
    converting at once never read half a file. If the copy cannot be made (a read-only
    cache, a full disk, a model llama.cpp cannot convert) this warns and returns `source`.
    """
    check_encoding(encoding)
    real, stat = source.resolve(), source.stat()
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}:{encoding}"
    target = folder / f"{real.stem}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.{encoding}.gguf"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _convert(lib, source, target, ENCODINGS[encoding])
    except OSError as exc:
        _could_not(source, encoding, str(folder), exc)
        return source
    return target


def _could_not(source: Path, encoding: str, folder: str, exc: OSError) -> None:
    warnings.warn(
        f"could not re-encode {source.name} as {encoding} in {folder!r} ({exc}): "
        "running the file as it is",
        RuntimeWarning,
        stacklevel=3,
    )


def _convert(lib: Any, source: Path, target: Path, file_type: int) -> None:
    """Write `source` re-encoded as `file_type` to `target`, atomically."""
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        quantize(lib, source, Path(partial), file_type)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
