"""Batch runs: every referral of a folder or JSON Lines file -> letters, results, a worklist.

`run_batch(INPUT, DIR)` writes

    DIR/letters/<referral_id>.<ext>   a letter for each referral that meets criteria
    DIR/results.jsonl                 one determination (spec section 3) per referral, input order
    DIR/worklist.csv                  one row per record, actionable rows first (WORKLIST_ORDER)
    DIR/.state/state.sqlite           the manifest that makes re-runs incremental and resumable

Nothing is lost, nothing is half-written:

* A record that cannot be read or validated is listed with status `invalid` and a message
  naming the field (never the value: it may be patient data); an unexpected exception in
  one record is status `error` (exception type and code location only). The run goes on.
* Two records with the same referral_id: the first in input order keeps it, the other is
  `invalid` ("duplicate referral_id, also in <source>") and gets no outputs.
* The manifest is content-addressed: a record's identity is the hash of its bytes (plus a
  fingerprint of the criteria, templates, formats and priorauth's code). A re-run skips a
  record whose hash was already evaluated and whose letters are still on disk as written
  (inode, size and mtime checked); a changed record, or a changed criteria file, is redone;
  `force` redoes everything. Because the key is the content, not the position, a JSON Lines
  file with lines inserted or reordered, or a renamed file, is still skipped.
* Letters are written by the workers to temporary files and renamed into place by the
  parent (so a duplicate can never overwrite the first record's letter); before each
  manifest commit the file system is synced once (syncfs), so the manifest never names a
  letter that a crash could lose, without paying an fsync per letter.
* results.jsonl and worklist.csv are rewritten by every run, from this run's results and
  the manifest's cached ones, as the records are taken in input order: into temporary
  files (the worklist into one per group of WORKLIST_ORDER, then joined) that replace the
  previous outputs atomically at the end. A run killed at any moment (SIGKILL included)
  leaves the previous complete set and temporary files that the next run removes, and
  the next run ends with exactly one complete set. Letters of records no longer in the
  input are removed.

Why sqlite rather than a JSON file per referral: one file, transactional (a crash never
leaves a half-written manifest), and indexed look-ups by hash and referral_id for the
cache and duplicate detection with bounded memory, for a million records too.

Work is spread over processes (fork: the criteria and the prepared letter template are
loaded once, before the workers start) in chunks, with a bounded window of chunks in
flight, so memory does not grow with the size of the input. A chunk is the unit of
bookkeeping too: one cache look-up per chunk in the worker, one claim query and a few
executemany() per chunk in the parent, no per-record round trips.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import os
import re
import shutil
import errno
import sqlite3
import stat
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import orjson

from ..core.errors import InputError, PriorAuthError
from ..core.files import DIR_MODE, FILE_MODE, atomic_stream, ensure_dir

STATE_VERSION = "3"  # 3: files.digest, the hash of each letter as written
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
REFERRAL_SUFFIXES = (".yaml", ".yml", ".json")
STATUSES = ("done", "invalid", "error")
DETERMINATIONS = ("meets_criteria", "missing_documentation", "not_eligible")

# Worklist order, most actionable first: documents to chase, then records to fix, then
# letters ready to send, then the not eligible (nothing to send; an appeal is a decision).
# Within a group, input order.
WORKLIST_ORDER = {"missing_documentation": 0, "invalid": 1, "error": 1, "meets_criteria": 2, "not_eligible": 3}
WORKLIST_COLUMNS = ["referral", "patient", "payer", "policy", "determination", "pathways met",
                    "what is missing", "letter", "reauthorization due", "status", "message", "source"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- One row per distinct input content ever evaluated (the cache): what it yields. row is the
-- worklist's JSON [patient, payer, policy, pathways, missing, reauthorization, reasons];
-- result the determination's JSON line (UTF-8 bytes); letters a JSON list of paths.
CREATE TABLE IF NOT EXISTS done (
    hash BLOB PRIMARY KEY, referral_id TEXT, status TEXT NOT NULL, determination TEXT,
    row TEXT, result BLOB, message TEXT, letters TEXT);
-- Letters this batch wrote: which content made each, and its stat signature when written.
-- digest: the blake2b of the letter's bytes, to tell a letter priorauth wrote (unchanged) from
-- one the user edited, signed or wrote: those are never overwritten or deleted without force.
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, hash BLOB NOT NULL, sig TEXT NOT NULL, digest BLOB);
-- The current run: one row per input record, in input order; rebuilt by every run.
CREATE TABLE IF NOT EXISTS run (
    seq INTEGER PRIMARY KEY, source TEXT NOT NULL, hash BLOB, referral_id TEXT, claimed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS run_claimed ON run (referral_id) WHERE claimed = 1;
CREATE TABLE IF NOT EXISTS run_letters (path TEXT PRIMARY KEY);
"""


# ------------------------------------------------------------------ small helpers


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(_FORMULA_START)  # all single characters: text[:1] in it == startswith
# orjson: UTF-8 bytes, compact, ~10x faster than json.dumps on a determination (~6 KB); the
# results file and the manifest hold one per record
_to_json = orjson.dumps


# Control characters other than tab and line breaks (which csv quotes) are written as visible
# escapes: raw, an ESC or a NUL in a cell reaches the terminal or spreadsheet that shows it.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")


def _escape_control(m: "re.Match[str]") -> str:
    return f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet will not run: text starting = + - @ tab or CR gets a leading quote (OWASP)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


_GOT = re.compile(r",? got .*$")
_QUOTED_IS_NOT = re.compile(r"""(['"]).*?\1 is not""")
_ISO_DATE = re.compile(r" ?\b\d{4}-\d{2}-\d{2}\b")


def redact(message: str, source: str) -> str:
    """An error message fit for the worklist: one line, no source prefix, no rejected values.

    Validation messages name the field; some also quote the value they refused ("got
    '14/03/1971'", "'M3312x' is not an ICD-10-CM code", "birth_date 1971-03-14 is after ..."):
    those values may be patient data and are dropped.
    """
    text = message
    for prefix in (f"{source}:", source):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    out = ""
    for line in text.splitlines():
        line = _GOT.sub("", line.strip())
        line = _QUOTED_IS_NOT.sub("the value is not", line)
        line = _ISO_DATE.sub("", line)
        if line:
            out += (" " if not out or out.endswith(":") else "; ") + line
    return out.strip()


_ID_IN_TEXT = re.compile(r"""["']?referral_id["']?\s*:\s*["']?([A-Za-z0-9._-]{1,64})""")


def _sig(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _location(exc: BaseException) -> str:
    """Where an unexpected exception came from: its type and the innermost frame, never its
    message (which may quote patient data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" in {frames[-1].name} ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"unexpected {type(exc).__name__}{where}"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _file_digest(path: str) -> Optional[bytes]:
    """The digest of a regular file's bytes (never through a link), None when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    h = hashlib.blake2b(digest_size=16)
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _syncfs(path: Path) -> None:
    """Flush the file system holding `path` (Linux syncfs; os.sync elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


# ------------------------------------------------------------------ input


@dataclass(frozen=True)
class Source:
    """What a batch reads: a folder of referral files or one JSON Lines file."""

    path: Path
    jsonl: bool

    @classmethod
    def open(cls, path: str | Path) -> "Source":
        path = Path(path)
        if path.is_dir():
            return cls(path, False)
        if path.is_file():
            if path.suffix.lower() in JSONL_SUFFIXES:
                return cls(path, True)
            raise InputError(f"{path}: INPUT must be a folder of referral files or a JSON Lines file "
                             f"({', '.join(JSONL_SUFFIXES)}); for one referral use `priorauth check`")
        raise InputError(f"{path}: no such folder or file")

    def tasks(self) -> Iterator[tuple]:
        """(seq, source label, file path or None, line bytes or None), streamed in input order."""
        seq = 0
        if self.jsonl:
            name = self.path.name
            try:
                fh = open(self.path, "rb", buffering=1 << 20)  # 1 MiB reads, not 8 KiB: fewer syscalls
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None
            with fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue  # blank lines separate nothing: not records
                    yield (seq, f"{name}:{lineno}", None, line.rstrip(b"\r\n"))
                    seq += 1
            return
        # Sorted by name: results, worklist and which of two duplicates wins must not depend on
        # the order the file system lists a folder in. A folder or other non-file named like a
        # referral (`x.yaml/`) is a task too: _read reports it instead of skipping it silently.
        for name in self._names():
            yield (seq, name, os.path.join(self.path, name), None)
            seq += 1

    def _names(self) -> list[str]:
        try:
            with os.scandir(self.path) as it:
                return sorted(e.name for e in it
                              if not e.name.startswith(".") and e.name.lower().endswith(REFERRAL_SUFFIXES))
        except OSError as exc:
            raise InputError(f"{self.path}: cannot list: {exc.strerror}") from None

    def count(self) -> int:
        """How many records (for a progress bar): a cheap pass, no parsing."""
        if self.jsonl:
            n = 0
            with open(self.path, "rb") as fh:
                for line in fh:
                    n += bool(line.strip())
            return n
        with os.scandir(self.path) as it:
            return sum(1 for e in it if not e.name.startswith(".") and e.name.lower().endswith(REFERRAL_SUFFIXES))


# ------------------------------------------------------------------ the fingerprint


def fingerprint(criteria_root: Path, formats: tuple[str, ...]) -> str:
    """What every cached result depends on besides its input: criteria, templates, code, formats."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"state {STATE_VERSION}; formats {','.join(formats)}\n".encode())
    roots = [criteria_root, Path(__file__).resolve().parents[1]]  # the whole package: any code change
    if formats:
        from ..letters.render import TEMPLATES

        roots.append(TEMPLATES)
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    return h.hexdigest()


# ------------------------------------------------------------------ letters


BATCH_FORMATS = ("docx", "pdf", "html", "md", "packet")  # letters' formats, and the submission packet
_EXTENSIONS = {"packet": "packet.pdf"}  # a format's file name ending, where it is not the format's name


def file_extension(fmt: str) -> str:
    return _EXTENSIONS.get(fmt, fmt)


def format_of(name: str) -> Optional[str]:
    """Which format a file in letters/ holds, by its name (`X.packet.pdf` is a packet, not a pdf)."""
    for fmt, ext in _EXTENSIONS.items():
        if name.endswith("." + ext):
            return fmt
    suffix = Path(name).suffix
    return suffix[1:] if suffix else None


class LetterMaker:
    """Letters for one batch: the DOCX template prepared once (docx_fast), other formats via render."""

    def __init__(self, formats: tuple[str, ...], criteria):
        from ..letters import render

        self.render = render
        self.formats = formats
        # The wording and appeals table, read once for the run: letter_context would otherwise
        # stat (and check for changes) letter-text.yaml and appeals.yaml for every letter.
        self.words = render.default_letters().words
        from ..letters.content import literature_table

        self.literature = literature_table()
        self.fast = None
        if "docx" in formats:
            from ..letters.docx_fast import FastDocx

            path = render.template_path("docx")
            self.fast = FastDocx(path, render.letter_env("docx", path), autoescape=True)

    def make(self, referral, determination, view: Optional[dict] = None) -> dict[str, bytes]:
        """fmt -> letter bytes, identical to render.render_letter(referral, determination, fmt);
        `view` is determination.to_dict() when the caller has it."""
        r = self.render
        ctx = r.letter_context(referral, determination, kind=referral.request.request_type, words=self.words,
                               view=view, literature=self.literature)
        out: dict[str, bytes] = {}
        docx = None
        if self.fast is not None:
            if r.has_chart(ctx):
                docx = r.render_context(ctx, "docx")  # a trend chart: an image part, docxtpl's job
            else:
                docx = self.fast.render(r.docx_data(ctx), r.zip_date(ctx.get("letter_date_iso")))
        for fmt in self.formats:
            if fmt == "docx":
                out[fmt] = docx
            elif fmt == "packet":
                out[fmt] = r.default_letters().packet(determination)
            else:
                out[fmt] = r.render_context(ctx, fmt)
        return out


# ------------------------------------------------------------------ the worker


@dataclass
class _Worker:
    out: Path
    db_path: Path
    formats: tuple[str, ...]
    lookup: bool  # consult the cache (not forced, and the manifest had results when the run began)
    criteria: Any
    letters: Optional[LetterMaker]
    db: Optional[sqlite3.Connection] = None

    @property
    def letters_dir(self) -> str:
        return str(self.out / "letters")


_W: Optional[_Worker] = None


def _init_worker(worker: Optional[_Worker], spec: Optional[tuple] = None, parent: Optional[int] = None) -> None:
    """Pool initializer: inherit the parent's prepared state (fork) or build it from `spec` (spawn)."""
    global _W
    if parent is not None:
        _die_with_parent(parent)
    if worker is None:
        from ..criteria.policy import load_criteria

        out, db_path, formats, lookup, root = spec
        crit = load_criteria(root)
        worker = _Worker(out, db_path, formats, lookup, crit, LetterMaker(formats, crit) if formats else None)
    _W = worker
    _W.db = None
    if parent is not None:
        _limit_memory()


# Bounded work per record (issue 16): a record that takes longer than RECORD_SECONDS, or needs
# more than RECORD_MEMORY_BYTES beyond what a worker holds when it starts, is status `error`
# with the reason, and the run goes on. The memory limit (RLIMIT_AS) is set in pool workers
# only (never on the caller's process); the time limit wherever records run in a main thread.
RECORD_SECONDS = 120.0
RECORD_MEMORY_BYTES = 2 << 30


class RecordTimeout(Exception):
    """One record took longer than RECORD_SECONDS."""


def _limit_memory() -> None:
    try:
        import resource

        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = current + RECORD_MEMORY_BYTES
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if soft == resource.RLIM_INFINITY or soft > want:
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    except (OSError, ValueError, ImportError):  # pragma: no cover - not Linux: no memory bound
        pass


def _on_alarm(signum, frame):
    raise RecordTimeout


@contextlib.contextmanager
def _deadline(seconds: float):
    import signal
    import threading

    if not seconds or seconds <= 0 or not hasattr(signal, "setitimer") \
            or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _close_worker() -> None:
    global _W
    if _W is not None and _W.db is not None:
        _W.db.close()
    _W = None


def _die_with_parent(parent: int) -> None:
    # A worker must not outlive a killed batch and write letters into the next run's folder.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _cached(w: _Worker, hashes: list[bytes]) -> dict[bytes, tuple]:
    """hash -> (referral_id, status, determination, row, result, message, letters) for the
    contents already done whose letters are intact on disk: one query for a whole chunk."""
    if w.db is None:
        w.db = sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True, check_same_thread=False)
    found = w.db.execute(f"SELECT hash, referral_id, status, determination, row, result, message, letters "
                         f"FROM done WHERE hash IN ({','.join('?' * len(hashes))})", hashes).fetchall()
    hits = {}
    for h, rid, status, det, row, result, message, letters in found:
        rels = orjson.loads(letters or b"[]")
        for rel in rels:
            f = w.db.execute("SELECT hash, sig FROM files WHERE path=?", (rel,)).fetchone()
            try:
                st = os.stat(w.out / rel)
            except OSError:
                break
            if f is None or f[0] != h or f[1] != _sig(st):
                break
        else:
            hits[h] = (rid, status, det, orjson.loads(row) if row else None, result, message, rels)
    return hits


# A result, the parent's input: (seq, source, kind, hash, referral_id, status, determination,
# row, result, message, letters). kind: fresh (evaluated now), cached (skipped), error. row:
# the worklist fields (list) or None; result: the determination's JSON line (bytes) or None;
# letters: fresh, [(path, temporary file, its stat signature)] to rename; cached, [path].


def _read(task: tuple) -> tuple[Optional[bytes], Optional[tuple]]:
    """A task's bytes, or the invalid result when its file cannot be read."""
    seq, source, path, data = task
    if data is not None:
        return data, None
    from ..core import yamlio

    try:
        # O_NONBLOCK: a FIFO named x.yaml must not hang the run; fstat then says what it is.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            return None, (seq, source, "fresh", None, None, "invalid", None, None, None,
                          f"is {what}, not a referral file: nothing read", None)
        with os.fdopen(fd, "rb") as fh:
            limit = yamlio.MAX_FILE_BYTES
            if st.st_size > limit:
                return None, (seq, source, "fresh", None, None, "invalid", None, None, None,
                              f"over the {yamlio.size_text(limit)} limit for one input file", None)
            data = yamlio.read_upto(fh, st.st_size, limit)
            if len(data) > limit:
                return None, (seq, source, "fresh", None, None, "invalid", None, None, None,
                              f"over the {yamlio.size_text(limit)} limit for one input file", None)
            return data, None
    except OSError as exc:
        return None, (seq, source, "fresh", None, None, "invalid", None, None, None,
                      f"cannot read: {exc.strerror}", None)


def _process(seq: int, source: str, data: bytes, h: bytes) -> tuple:
    """One record's bytes -> its result (see above), within the limits per record."""
    try:
        with _deadline(RECORD_SECONDS):
            return _process_record(seq, source, data, h)
    except RecordTimeout:  # the alarm rang as the record finished: it is over the limit all the same
        return (seq, source, "error", h, None, "error", None, None, None,
                f"took longer than {RECORD_SECONDS:g} s (the limit per record): stopped", None)


def _process_record(seq: int, source: str, data: bytes, h: bytes) -> tuple:
    from ..engine.determination import determine
    from ..io.readers import read_referral

    w = _W
    tmp_letters: list[tuple[str, str, str, bytes]] = []
    try:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return (seq, source, "fresh", h, None, "invalid", None, None, None,
                    f"not UTF-8 text (bad byte at offset {exc.start})", None)
        try:
            referral, warnings = read_referral(source, text, criteria=w.criteria)
        except InputError as exc:
            m = _ID_IN_TEXT.search(text)
            return (seq, source, "fresh", h, m.group(1) if m else None, "invalid", None, None, None,
                    redact(str(exc), source), None)
        det = determine(referral, w.criteria, warnings)
        d = det.to_dict()
        auth = d.get("authorization") or {}
        policy = d.get("policy") or {}
        p = referral.patient
        row = [f"{p.family_name}, {p.given_name}", referral.coverage.payer, policy.get("id"),
               "; ".join(d.get("pathways_met") or []), "; ".join(d.get("missing") or []),
               auth.get("reauthorization_due"),
               "; ".join(d.get("reasons") or []) if det.determination == "not_eligible" else None]
        if det.determination == "meets_criteria" and w.letters is not None:
            for fmt, blob in w.letters.make(referral, det, d).items():
                rel = f"letters/{referral.referral_id}.{file_extension(fmt)}"
                # A name no other process uses (pid, sequence) and O_EXCL, so no retry loop;
                # created 0600 (the umask can only take bits away).
                tmp = f"{w.letters_dir}/.{referral.referral_id}.{file_extension(fmt)}.{os.getpid()}-{seq}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
                tmp_letters.append((rel, tmp, "", b""))  # listed at once: removed if anything fails
                try:
                    view = memoryview(blob)
                    while view:
                        view = view[os.write(fd, view):]
                    # its stat signature once renamed (a rename keeps inode, size and mtime)
                    tmp_letters[-1] = (rel, tmp, _sig(os.fstat(fd)), _digest(blob))
                finally:
                    os.close(fd)
        return (seq, source, "fresh", h, referral.referral_id, "done", det.determination, row,
                _to_json(d), None, tmp_letters)
    except Exception as exc:  # one bad record must not stop the run
        for _, tmp, _, _ in tmp_letters:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, RecordTimeout):
            why = f"took longer than {RECORD_SECONDS:g} s (the limit per record): stopped"
        elif isinstance(exc, MemoryError):
            why = "needed more memory than the limit per record: stopped"
        elif isinstance(exc, InputError):  # e.g. a user's template over a bound: names the file, no value
            why = redact(str(exc), source)
        else:
            why = _location(exc)
        return (seq, source, "error", h, None, "error", None, None, None, why, None)


def _process_chunk(chunk: list[tuple]) -> list[tuple]:
    """Read and hash a chunk's records, look them all up in the cache at once, do the rest."""
    w = _W
    read = [_read(task) for task in chunk]
    hashes = [hashlib.blake2b(data, digest_size=16).digest() if data is not None else None for data, _ in read]
    hits = _cached(w, [h for h in hashes if h is not None]) if w.lookup else {}
    out = []
    for (seq, source, _, _), (data, failed), h in zip(chunk, read, hashes):
        if failed is not None:
            out.append(failed)
        elif h in hits:
            out.append((seq, source, "cached", h, *hits[h]))
        else:
            out.append(_process(seq, source, data, h))
    return out


# ------------------------------------------------------------------ the run


@dataclass
class Summary:
    input: str
    output: str
    records: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    determinations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DETERMINATIONS, 0))
    letters_written: int = 0
    letters_kept: int = 0
    skipped: int = 0
    elapsed_seconds: float = 0.0
    jobs: int = 1
    notes: list[str] = field(default_factory=list)  # what the run had to repair (a corrupt manifest)

    @property
    def per_second(self) -> float:
        return self.records / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "records": self.records,
                "statuses": self.statuses, "determinations": self.determinations,
                "letters_written": self.letters_written, "letters_kept": self.letters_kept,
                "skipped": self.skipped,
                "elapsed_seconds": round(self.elapsed_seconds, 3),
                "referrals_per_second": round(self.per_second, 1), "jobs": self.jobs,
                **({"notes": self.notes} if self.notes else {})}

    def line(self) -> str:
        dets = ", ".join(f"{n} {k}" for k, n in self.determinations.items())
        stats = ", ".join(f"{n} {k}" for k, n in self.statuses.items())
        return (f"{self.records} referrals in {self.elapsed_seconds:.1f} s ({self.per_second:,.0f}/s, "
                f"{self.jobs} job{'s' if self.jobs != 1 else ''}): {dets}; {stats}; "
                f"{self.letters_written} letters written, {self.skipped} skipped"
                + (f", {self.letters_kept} changed or not ours left alone (see worklist)" if self.letters_kept else ""))


class _State:
    """The manifest (DIR/.state/state.sqlite): written by the parent only, read by workers."""

    @classmethod
    def open(cls, state_dir: Path, notes: list[str]) -> "_State":
        """The manifest; one that cannot be read (corrupt, truncated, not a database, no
        permission) is set aside as state.sqlite.corrupt-<time> and rebuilt: every record is
        redone, and `notes` says so."""
        try:
            state = cls(state_dir)
            state.db.execute("SELECT count(*) FROM meta").fetchone()
            state.db.execute("SELECT count(*) FROM files").fetchone()
            return state
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                state.db.close()
            stamp = time.strftime("%Y%m%dT%H%M%S")
            path = state_dir / "state.sqlite"
            aside = path.with_name(f"state.sqlite.corrupt-{stamp}")
            os.replace(path, aside)
            for suffix in ("-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(state_dir / f"state.sqlite{suffix}", state_dir / f"{aside.name}{suffix}")
            notes.append(f"the manifest {path} could not be read ({exc}): set aside as {aside.name} "
                         f"and rebuilt; every record was redone, and letters priorauth cannot prove "
                         f"it wrote are left alone")
            return cls(state_dir)

    def __init__(self, state_dir: Path):
        self.path = state_dir / "state.sqlite"
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, FILE_MODE))  # 0600 before sqlite writes
        self.db = sqlite3.connect(self.path)
        # Pages of 16 KiB (for a new manifest; an existing one keeps its size): a result
        # (~6 KB) then fits in its row's page instead of an overflow chain of 4 KiB pages;
        # a batch commits ~20% faster (measured: 20,000 results, 4 KiB to 64 KiB pages).
        self.db.execute("PRAGMA page_size=16384")
        # A rollback journal, not WAL: the manifest holds every result (~6 KB each), and WAL
        # writes each page twice (into the log, then the database); a rollback journal
        # writes new pages once. FULL: a crash, even a power loss, keeps the database
        # consistent and at worst forgets the last commits, which are redone. Workers read
        # only for cache look-ups (one query per chunk, on re-runs); the default 5 s busy
        # timeout lets them and a commit (every 0.5 s) wait for each other.
        self.db.execute("PRAGMA journal_mode=TRUNCATE")
        self.db.execute("PRAGMA synchronous=FULL")
        # Room for a whole commit's pages (_Acceptor.COMMIT_EVERY results): a transaction
        # that spills to the file locks readers out until it commits.
        self.db.execute("PRAGMA cache_size=-32768")  # KiB
        if self.db.execute("PRAGMA user_version").fetchone()[0] != int(STATE_VERSION):
            # A manifest in an older layout: start afresh (its results would be stale anyway,
            # the fingerprint covers priorauth's code).
            self.db.executescript("DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS done; DROP TABLE IF EXISTS files; "
                                  "DROP TABLE IF EXISTS run; DROP TABLE IF EXISTS run_letters; "
                                  f"PRAGMA user_version={int(STATE_VERSION)};")
        self.db.executescript(_SCHEMA)

    def begin_run(self, fingerprint: str) -> bool:
        """Clear the previous run; True when the cache holds results this run may use."""
        db = self.db
        row = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is None or row[0] != fingerprint:
            # Criteria, templates, code or formats changed: every cached result is stale.
            db.execute("DELETE FROM done")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        db.execute("DELETE FROM run")
        db.execute("DELETE FROM run_letters")
        db.commit()
        return db.execute("SELECT EXISTS (SELECT 1 FROM done)").fetchone()[0] == 1


# The final outputs are switched together (issue 16): both are written under these names
# first, then the manifest records that a switch is under way, then both are renamed. A run
# killed between the two renames leaves the flag set, and the next run completes the switch
# before anything else: results.jsonl and worklist.csv never stay from different runs.
_NEXT = {"results.jsonl": ".results.jsonl.next", "worklist.csv": ".worklist.csv.next"}


def _rename_outputs(out: Path) -> None:
    for final, nxt in _NEXT.items():
        with contextlib.suppress(FileNotFoundError):
            os.replace(out / nxt, out / final)


def _switch_outputs(state: "_State", out: Path) -> None:
    db = state.db
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # both new files are on disk before the manifest says to switch
        db.execute("INSERT OR REPLACE INTO meta VALUES ('switch', 'outputs')")
        db.commit()
        _rename_outputs(out)
        os.fsync(fd)
    finally:
        os.close(fd)
    db.execute("DELETE FROM meta WHERE key='switch'")
    db.commit()


def _complete_switch(state: "_State", out: Path) -> None:
    """At the start of a run: finish a switch a killed run began, or drop stale next files."""
    db = state.db
    if db.execute("SELECT 1 FROM meta WHERE key='switch'").fetchone() is not None:
        _rename_outputs(out)
        db.execute("DELETE FROM meta WHERE key='switch'")
        db.commit()
    else:
        for nxt in _NEXT.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out / nxt)


def _chmod_dir(path: Path) -> None:
    """0700 on a real folder, never through a link (os.chmod follows links)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def _lock(state_dir: Path):
    import fcntl

    fd = os.open(state_dir / "lock", os.O_CREAT | os.O_WRONLY, FILE_MODE)
    fh = os.fdopen(fd, "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise InputError(f"{state_dir.parent}: another batch is writing to this folder") from None
    return fh


def _remove_temp_files(*dirs: Path) -> None:
    for d in dirs:
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)


def run_batch(input: str | Path, out: str | Path, *, jobs: Optional[int] = None,
              formats: Iterable[str] = ("docx",), force: bool = False, criteria_dir: Optional[Path] = None,
              chunksize: Optional[int] = None, progress: Optional[Callable[[int], None]] = None) -> Summary:
    """Evaluate every referral in `input`; write letters, results.jsonl and worklist.csv to `out`.

    `progress(n)` is called as every n more records are done. InputError for a bad input,
    output folder or format; PriorAuthError when a worker process dies (rerun to resume).
    """
    started = time.perf_counter()
    source = Source.open(input)
    formats = tuple(dict.fromkeys(formats))
    if formats:
        from ..letters.render import FORMATS

        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise InputError(f"--format {bad[0]!r}: expected one of {', '.join(FORMATS)} or none")
    jobs = max(1, jobs or os.cpu_count() or 1)
    try:
        return _run_batch(source, input, Path(out), jobs, formats, force, criteria_dir, chunksize, progress, started)
    except sqlite3.Error as exc:
        raise PriorAuthError(f"{out}/.state/state.sqlite: the manifest failed ({exc}); the outputs so far "
                             f"are kept: run the same command again") from None
    except OSError as exc:
        # A read-only folder, a full disk, a folder that vanished: a clear message, nothing
        # half-written (temporary files were removed on the way out).
        where = exc.filename or out
        cls = InputError if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else PriorAuthError
        raise cls(f"{where}: cannot write the outputs: {exc.strerror or exc}") from None


def _run_batch(source: "Source", input, out: Path, jobs: int, formats: tuple[str, ...], force: bool,
               criteria_dir, chunksize, progress, started: float) -> "Summary":
    from ..criteria.policy import load_criteria

    out = ensure_dir(out)
    if source.path.resolve() == out.resolve():
        raise InputError(f"{out}: the output folder must not be the input folder")
    for name in ("letters", ".state"):
        if (out / name).is_symlink():
            # Writes and deletes would land outside the output folder, in the link's target.
            raise InputError(f"{out / name}: is a symbolic link; priorauth writes and removes files there, "
                             f"so it must be a real folder inside {out}")
    letters_dir = ensure_dir(out / "letters")
    criteria = load_criteria(criteria_dir)
    state_dir = ensure_dir(out / ".state")
    _chmod_dir(state_dir)
    lock = _lock(state_dir)
    notes: list[str] = []
    try:
        _remove_temp_files(out, letters_dir, state_dir)
        state = _State.open(state_dir, notes)
        try:
            _complete_switch(state, out)
            cache = state.begin_run(fingerprint(Path(criteria.root), formats))
        finally:
            state.db.close()
        # The criteria and the prepared template are loaded here, once: forked workers inherit them.
        worker = _Worker(out, state.path, formats, cache and not force, criteria,
                         LetterMaker(formats, criteria) if formats else None)
        summary = Summary(str(input), str(out), jobs=jobs, notes=notes)
        chunksize = chunksize or (16 if formats else 64)
        # What is loaded now (criteria, models, templates: ~50,000 objects) lives as long as the
        # run: keep the cycle collector off it, so it neither rescans it on every full
        # collection nor, by touching it, copies forked workers' shared pages.
        gc.freeze()
        # Workers are forked before the parent opens its database connection (sqlite
        # connections must not cross a fork).
        pool = _start_pool(worker, jobs) if jobs > 1 else None
        try:
            state = _State(state_dir)
            try:
                with _Worklist(state_dir) as worklist:
                    with atomic_stream(out / _NEXT["results.jsonl"], buffering=1 << 20) as results:
                        accept = _Acceptor(state, out, summary, results, worklist, force=force)
                        if pool is None:
                            _init_worker(worker)
                        try:
                            _work(pool, source.tasks(), chunksize, jobs, accept, progress)
                        finally:
                            if pool is None:
                                _close_worker()
                        accept.flush()
                    worklist.write(out / _NEXT["worklist.csv"])
                _finish(state, letters_dir, formats, force)
                _switch_outputs(state, out)
            finally:
                state.db.close()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            gc.unfreeze()
    finally:
        # Every exit path (an error, a full disk, Ctrl-C): no temporary file is left behind.
        with contextlib.suppress(OSError):
            _remove_temp_files(out, letters_dir, state_dir)
        lock.close()
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def _chunks(tasks: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for t in tasks:
        chunk.append(t)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _start_pool(worker: _Worker, jobs: int):
    """A process pool whose workers all exist on return (fork: they inherit `worker`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        init = (worker, None, os.getpid())
    else:  # pragma: no cover - spawn platforms load criteria and template once in each child
        ctx = multiprocessing.get_context()
        init = (None, (worker.out, worker.db_path, worker.formats, worker.lookup, worker.criteria.root),
                os.getpid())
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=init)
    pool.submit(int).result()  # with fork, the first submit starts every worker
    return pool


def _work(pool, tasks: Iterator[tuple], chunksize: int, jobs: int, accept: "_Acceptor",
          progress: Optional[Callable[[int], None]]) -> None:
    """Every chunk processed (here, or by the pool when there is one) and accepted in input
    order, with at most `4 * jobs` chunks in flight so memory stays bounded.

    With a pool this process only feeds it and takes results: computing here as well was
    tried, and loses more than it gains, because the pool's result thread then waits on
    the GIL behind the computation (pickled results pile up, the workers idle)."""

    def take(results: list[tuple]) -> None:
        accept(results)
        if progress:
            progress(len(results))

    if pool is None:
        for chunk in _chunks(tasks, chunksize):
            take(_process_chunk(chunk))
        return
    from concurrent.futures.process import BrokenProcessPool

    window: deque = deque()
    try:
        for chunk in _chunks(tasks, chunksize):
            window.append(pool.submit(_process_chunk, chunk))
            while len(window) >= 4 * jobs:
                take(window.popleft().result())
        while window:
            take(window.popleft().result())
    except BrokenProcessPool:
        accept.flush()
        raise PriorAuthError("a worker process died (out of memory?); the outputs so far are kept: "
                             "run the same command again to resume") from None


class _Worklist:
    """worklist.csv in WORKLIST_ORDER without sorting: each row goes to its group's
    temporary file as it comes (input order within a group), and write() joins them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: list = []
        self.writers: list = []

    def __enter__(self) -> "_Worklist":
        for _ in range(max(WORKLIST_ORDER.values()) + 1):
            # Anonymous files (unlinked at once where the OS allows): nothing left by a crash.
            fh = tempfile.TemporaryFile("w+", dir=self.folder, prefix=".worklist.", suffix=".tmp",
                                        encoding="utf-8", newline="")
            self.files.append(fh)
            self.writers.append(csv.writer(fh))
        return self

    def __exit__(self, *exc) -> None:
        for fh in self.files:
            fh.close()

    def add(self, rank: int, cells: Iterable[Any]) -> None:
        # csv_safe, inlined: a worklist has a dozen cells per record
        texts = ["" if v is None else v if type(v) is str else str(v) for v in cells]
        texts = [_CONTROL.sub(_escape_control, t) if _CONTROL.search(t) else t for t in texts]
        self.writers[rank].writerow(["'" + t if t[:1] in _FORMULA_FIRST else t for t in texts])

    def write(self, path: Path) -> None:
        with atomic_stream(path, "w", encoding="utf-8-sig", newline="") as out:
            csv.writer(out).writerow(WORKLIST_COLUMNS)
            for fh in self.files:
                fh.seek(0)
                shutil.copyfileobj(fh, out)


class _Acceptor:
    """Takes results in input order, a chunk at a time: claims referral ids, places letters,
    writes results.jsonl and worklist rows, records the manifest."""

    COMMIT_EVERY = 2000  # records, or
    COMMIT_SECONDS = 0.5  # at most this much work lost when the run is killed

    def __init__(self, state: _State, out: Path, summary: Summary, results, worklist: _Worklist,
                 force: bool = False):
        self.db = state.db
        self.force = force
        self.out = out
        self.prefix = f"{out}{os.sep}"  # str concatenation: a Path per letter cost ~20 us here
        self.summary = summary
        self.results = results
        self.worklist = worklist
        self.pending = 0
        self.renamed = False
        self.committed = time.monotonic()

    def __call__(self, chunk: list[tuple]) -> None:
        db = self.db
        s = self.summary
        ids = list({res[4] for res in chunk if res[5] == "done"})
        # Who already holds these referral ids in this run (earlier chunks); this chunk's own
        # claims are added as they are made.
        claimed = dict(db.execute(f"SELECT referral_id, source FROM run WHERE claimed = 1 AND referral_id IN "
                                  f"({','.join('?' * len(ids))})", ids)) if ids else {}
        done, run, files, run_letters = [], [], [], []
        for seq, source, kind, h, rid, status, det, row, result, message, letters in chunk:
            s.records += 1
            kept: list[str] = []
            if kind == "fresh" and status in ("done", "invalid") and h is not None:
                done.append((h, rid, status, det, _to_json(row) if row else None, result, message,
                             _to_json([t[0] for t in letters]) if letters else b"[]"))
            elif kind == "cached":
                s.skipped += 1
            claim = 0
            rels: list[str] = []
            if status == "done":
                other = claimed.get(rid)
                if other is not None:
                    status, det = "invalid", None
                    message = f"duplicate referral_id, also in {other}"
                    for _, tmp, _, _ in letters if kind == "fresh" else ():
                        with contextlib.suppress(OSError):
                            os.unlink(tmp)
                else:
                    claim = 1
                    claimed[rid] = source
                    if kind == "fresh":
                        written = 0
                        for rel, tmp, sig, digest in letters:
                            why = self.keep_reason(rel, digest)
                            if why is not None:
                                # The user's letter (edited, signed, hand-written, a link): left alone.
                                with contextlib.suppress(OSError):
                                    os.unlink(tmp)
                                kept.append(f"letter_kept: {rel} {why}")
                                s.letters_kept += 1
                            else:
                                os.replace(tmp, self.prefix + rel)
                                files.append((rel, h, sig, digest))
                                written += 1
                            rels.append(rel)
                        s.letters_written += written
                        self.renamed = self.renamed or bool(written)
                    else:
                        rels = letters
                    run_letters += [(rel,) for rel in rels]
                    self.results.write(result + b"\n")
            s.statuses[status] += 1
            if status == "done":
                s.determinations[det] += 1
            run.append((seq, source, h if kind != "error" else None, rid, claim))
            patient, payer, policy, pathways, missing, reauth, reasons = row or (None,) * 7
            if status != "done":  # a duplicate keeps who and which payer, to find the record; no outcome
                policy = pathways = missing = reauth = reasons = None
            self.worklist.add(WORKLIST_ORDER[det if status == "done" else status],
                              (rid, patient, payer, policy, det, pathways, missing, "; ".join(rels), reauth,
                               status, "; ".join(kept + [message or reasons] if message or reasons else kept),
                               source))
        db.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?, ?, ?, ?)", done)
        db.executemany("INSERT INTO run VALUES (?, ?, ?, ?, ?)", run)
        db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", files)
        db.executemany("INSERT OR REPLACE INTO run_letters VALUES (?)", run_letters)
        self.pending += len(chunk)
        if self.pending >= self.COMMIT_EVERY or time.monotonic() - self.committed >= self.COMMIT_SECONDS:
            self.flush()

    def keep_reason(self, rel: str, digest: bytes) -> Optional[str]:
        """Why the file at `rel` must not be replaced by a new letter (None: replace it).

        Replaced: nothing there; what priorauth wrote there, unchanged (stat signature or
        content as recorded); or exactly the bytes about to be written (a letter renamed into
        place just before a kill, which the manifest did not record yet). Anything else is
        the user's, unless force (a link or a folder even then)."""
        path = self.prefix + rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file (a link or a folder): left alone"
        if self.force:
            return None
        row = self.db.execute("SELECT sig, digest FROM files WHERE path=?", (rel,)).fetchone()
        if row is not None and row[0] == _sig(st):
            return None
        on_disk = _file_digest(path)
        if on_disk == digest or (row is not None and on_disk == row[1]):
            return None
        return "changed since written" if row is not None else "not written by priorauth"

    def flush(self) -> None:
        if self.renamed:
            _syncfs(self.out)  # the letters reach the disk before the manifest says they exist
            self.renamed = False
        self.db.commit()
        self.pending = 0
        self.committed = time.monotonic()


# Cached results that no record of this run has. Rowids from the hash index (covering: hash
# and rowid): `DELETE FROM done WHERE hash NOT IN (...)` scans the table itself and reads
# back every result (~6 KB each: 300 MB after 50,000 records) at the end of every run.
_DROP_STALE = ("DELETE FROM done WHERE rowid IN (SELECT rowid FROM done "
               "WHERE hash NOT IN (SELECT hash FROM run WHERE hash IS NOT NULL))")


def _finish(state: _State, letters_dir: Path, formats: tuple[str, ...] = (), force: bool = False) -> None:
    """The run went through the whole input: drop what is no longer in it.

    A letter is deleted only when the manifest says priorauth wrote it, it is unchanged
    (or force), no record of this run claims it, and it is in a format this run writes:
    letters in other formats, links, and files priorauth did not write are left alone."""
    db = state.db
    wanted = set(formats)
    with os.scandir(letters_dir) as it:
        for e in it:
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                if e.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                continue
            if format_of(e.name) not in wanted or not e.is_file(follow_symlinks=False):
                continue  # a format not asked for this time, a link, a folder: not ours to remove
            rel = f"letters/{e.name}"
            if db.execute("SELECT 1 FROM run_letters WHERE path=?", (rel,)).fetchone() is not None:
                continue
            row = db.execute("SELECT sig, digest FROM files WHERE path=?", (rel,)).fetchone()
            if row is None:
                continue  # priorauth did not write it (a hand-written appeal, a copy)
            st = e.stat(follow_symlinks=False)
            if force or row[0] == _sig(st) or _file_digest(e.path) == row[1]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                db.execute("DELETE FROM files WHERE path=?", (rel,))
    # Rows for letters that are gone (removed by hand or above); rows of letters left in place
    # stay, so a later run still knows they are priorauth's.
    gone = [(p,) for (p,) in db.execute("SELECT path FROM files").fetchall()
            if not os.path.lexists(letters_dir.parent / p)]
    db.executemany("DELETE FROM files WHERE path=?", gone)
    db.execute(_DROP_STALE)
    db.commit()
