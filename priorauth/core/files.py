"""Writing outputs: atomically (temp file + rename) and readable by the owner only (PHI)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import InputError

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return path


@contextlib.contextmanager
def atomic_stream(path: Path | str, mode: str = "wb", *, force: bool = True, **kwargs) -> Iterator[IO]:
    """Write `path` through a file so that a reader sees the old file or the whole new one.

    Yields a temporary file in the same folder (mode 0600: letters and results hold patient
    data), opened with `mode` and `kwargs` as open() takes them. When the block ends normally
    the file is flushed, fsynced and renamed over `path`; when it raises, it is removed. A
    process killed meanwhile leaves `.<name>.*.tmp`, never a partial `path`. With
    force=False an existing file is an InputError (never overwritten silently).
    """
    path = Path(path)
    if not force and path.exists():
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path | str, data: bytes | str, *, force: bool = True) -> Path:
    """Write `data` to `path` at once (see atomic_stream); str is written as UTF-8."""
    with atomic_stream(path, force=force) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
