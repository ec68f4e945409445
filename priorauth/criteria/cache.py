"""A per-user cache of loaded criteria, so that `priorauth check` need not re-read and
re-validate every criteria file (nor build the policy models' validators) on each start.

One pickle per criteria folder, in `$PRIORAUTH_CACHE_DIR`, else `$XDG_CACHE_HOME/priorauth`,
else `~/.cache/priorauth` (folder 0700, file 0600, written atomically). It is used only when
its digest still matches: every file under the criteria folder (path, size, mtime_ns, ctime_ns,
inode), the source files of the modules whose classes it holds, and the versions of priorauth,
pydantic, Python and this format. `PRIORAUTH_NO_CACHE=1` turns it off.

A pickle runs code when loaded, so a file not owned by this user, or writable by group or
others (or in such a folder), is never loaded. Any problem at all (missing, corrupt, stale,
truncated, unreadable, unwritable) means a normal load: the cache can make a run faster,
never make it fail.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
from pathlib import Path
from typing import Any, Optional

FORMAT = b"priorauth-criteria-cache 1\n"
DIGEST_BYTES = 32  # sha256
PKG = Path(__file__).resolve().parents[1]
# Packages whose classes a loaded Criteria holds (or whose code shapes what it holds).
SOURCE_DIRS = ("core", "model", "engine", "engine/leaves", "criteria")


def enabled() -> bool:
    return os.environ.get("PRIORAUTH_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")


def cache_dir() -> Path:
    given = os.environ.get("PRIORAUTH_CACHE_DIR")
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "priorauth"


def _stat_line(path: str) -> bytes:
    st = os.stat(path)
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode("utf-8", "surrogateescape")


def _tree(root: str) -> list[str]:
    """Every file under root, symlinks followed as the loader's rglob follows them, sorted."""
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        out.extend(os.path.join(folder, name) for name in files)
    return sorted(out)


def digest(root: Path) -> bytes:
    """What the cache entry for `root` must have been made from (raises OSError if unreadable)."""
    import pydantic

    from .. import __version__

    h = hashlib.sha256(FORMAT)
    h.update(f"{__version__}\0{pydantic.VERSION}\0{sys.version}\0{sys.implementation.cache_tag}\0"
             f"{pickle.HIGHEST_PROTOCOL}\n".encode())
    h.update(f"{root}\0{root.resolve()}\n".encode("utf-8", "surrogateescape"))
    for path in _tree(str(root)):
        h.update(_stat_line(path))
    for sub in SOURCE_DIRS:
        folder = PKG / sub
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                h.update(_stat_line(str(folder / name)))
    return h.digest()


def _entry(root: Path) -> Path:
    name = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir() / f"criteria-{name}.pickle"


def _safe(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def load(root: Path) -> Optional[tuple[bytes, Any]]:
    """(digest, cached Criteria) when the entry is current and trustworthy; (digest, None) on a
    miss; None when the cache is off or the folder cannot be digested."""
    if not enabled():
        return None
    try:
        key = digest(root)
    except Exception:
        return None
    try:
        path = _entry(root)
        if not _safe(os.stat(path.parent)):
            return key, None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or not _safe(st):
                return key, None
            if fh.read(len(FORMAT)) != FORMAT or fh.read(DIGEST_BYTES) != key:
                return key, None
            value = pickle.loads(fh.read())
        from .policy import Criteria

        if type(value) is not Criteria or value.root != root:
            return key, None
        return key, value
    except Exception:
        return key, None


def store(root: Path, key: bytes, criteria: Any) -> None:
    """Write the entry for `root`; any failure is ignored (the next run loads normally)."""
    if not enabled():
        return
    try:
        from ..core.files import atomic_write, ensure_dir

        data = FORMAT + key + pickle.dumps(criteria, protocol=pickle.HIGHEST_PROTOCOL)
        path = _entry(root)
        ensure_dir(path.parent)
        if not _safe(os.stat(path.parent)):
            return
        atomic_write(path, data)
    except Exception:
        pass
