"""Writing outputs: atomically (temp file + rename) and readable by the owner only (PHI)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import InputError

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: Path) -> Path:
    """`path` as a folder; every level it creates is 0700 whatever the umask (an existing
    folder is the user's and keeps its mode)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: theirs
        # the umask can only take bits away, but a umask of 0 must not leave it wider either
        os.chmod(p, DIR_MODE)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    return path


def _publish_exclusive(tmp: str, path: Path) -> None:
    """Put the finished `tmp` at `path` only if nothing is there: a hard link fails when the
    name exists, so of two concurrent writers exactly one wins (no check-then-rename race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"{path}: already exists (use --force to overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links on this file system: claim the name with O_EXCL, then fill it by rename.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE))
        except FileExistsError:
            raise InputError(f"{path}: already exists (use --force to overwrite)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_stream(path: Path | str, mode: str = "wb", *, force: bool = True, **kwargs) -> Iterator[IO]:
    """Write `path` through a file so that a reader sees the old file or the whole new one.

    Yields a temporary file in the same folder (mode 0600: letters and results hold patient
    data), opened with `mode` and `kwargs` as open() takes them. When the block ends normally
    the file is flushed, fsynced and renamed over `path`; when it raises (a full disk, a
    signal, anything), it is removed. A process killed meanwhile leaves `.<name>.*.tmp`, never
    a partial `path`. With force=False an existing file is an InputError, decided when the
    file is published (os.link), so two writers never overwrite each other.
    """
    path = Path(path)
    if not force and os.path.lexists(path):
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            _publish_exclusive(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path | str, data: bytes | str, *, force: bool = True) -> Path:
    """Write `data` to `path` at once (see atomic_stream); str is written as UTF-8."""
    with atomic_stream(path, force=force) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
