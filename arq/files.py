"""Writing files whole or not at all.

Every file arq writes (trace JSONL, reports, the plot) is written to a temporary file in
the same folder, flushed to disk, then moved over the target with `os.replace`, which is
atomic: a reader, or a run that fails halfway, never sees a truncated file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["replacing", "write_file"]


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new, empty file beside `path`, to write in the block; it replaces `path` when the
    block ends, or is removed if the block raises.

    The new file gets the mode `path` had, or the usual mode of a new file (umask applied).
    A symbolic link is written through, as `open(path, "w")` would.
    """
    target = Path(os.path.realpath(path))
    # the suffix is kept, for writers that read the format from it (a plot's .png)
    temp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_file(path: str | os.PathLike[str], data: str | bytes, *, append: bool = False) -> None:
    """Write `data` to `path` whole or not at all; with `append`, after what `path` holds.

    Text is written as UTF-8. A lone surrogate, which UTF-8 cannot encode, is written as
    its `\\uXXXX` escape: in JSON text, where such a character can only sit in a string,
    that is the escape JSON itself uses for it.
    """
    body = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    with replacing(path) as temp, open(temp, "wb") as out:
        if append:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as before:
                while block := before.read(1 << 20):
                    out.write(block)
        out.write(body)
