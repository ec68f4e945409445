"""Writing outputs: atomically (temp file + rename) and readable by the owner only (PHI)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return path


def atomic_write(path: Path | str, data: bytes | str, *, force: bool = True) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the whole new one.

    With force=False an existing file is an InputError (never overwritten silently).
    The file is created with mode 0600: letters and results hold patient data.
    """
    path = Path(path)
    if not force and path.exists():
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    if isinstance(data, str):
        data = data.encode("utf-8")
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
