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
* results.jsonl and worklist.csv are rebuilt from the manifest at the end of every run and
  replaced atomically; a run killed at any moment (SIGKILL included) leaves the previous
  complete set or temporary files that the next run removes, and the next run ends with
  exactly one complete set. Letters of records no longer in the input are removed.

Why sqlite rather than a JSON file per referral: one file, transactional (a crash never
leaves a half-written manifest), indexed look-ups by hash and referral_id for duplicate
detection, and ORDER BY with bounded memory for sorting the worklist of a million records.

Work is spread over processes (fork: the criteria and the prepared letter template are
loaded once, before the workers start) in chunks, with a bounded window of chunks in
flight, so memory does not grow with the size of the input.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import InputError, PriorAuthError
from .io import DIR_MODE, FILE_MODE, ensure_dir

STATE_VERSION = "1"
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
-- One row per distinct input content ever evaluated (the cache): what it yields.
CREATE TABLE IF NOT EXISTS done (
    hash BLOB PRIMARY KEY, referral_id TEXT, status TEXT NOT NULL, determination TEXT,
    row TEXT, result TEXT, message TEXT, letters TEXT);
-- Letters this batch wrote: which content made each, and its stat signature when written.
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, hash BLOB NOT NULL, sig TEXT NOT NULL);
-- The current run: one row per input record, in input order; rebuilt by every run.
CREATE TABLE IF NOT EXISTS run (
    seq INTEGER PRIMARY KEY, source TEXT NOT NULL, hash BLOB, referral_id TEXT, status TEXT NOT NULL,
    message TEXT, rank INTEGER NOT NULL, claimed INTEGER NOT NULL DEFAULT 0, letters TEXT);
CREATE INDEX IF NOT EXISTS run_referral ON run (referral_id, claimed);
CREATE INDEX IF NOT EXISTS run_rank ON run (rank, seq);
CREATE TABLE IF NOT EXISTS run_letters (path TEXT PRIMARY KEY);
"""


# ------------------------------------------------------------------ small helpers


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


@contextlib.contextmanager
def atomic_stream(path: Path, mode: str = "wb", **kwargs):
    """Like io.atomic_write, but streamed: yields a file; on success it replaces `path` (0600)."""
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
                fh = open(self.path, "rb")
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None
            with fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue  # blank lines separate nothing: not records
                    yield (seq, f"{name}:{lineno}", None, line.rstrip(b"\r\n"))
                    seq += 1
            return
        try:
            it = os.scandir(self.path)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot list: {exc.strerror}") from None
        with it:
            for entry in it:
                if entry.name.startswith(".") or not entry.name.lower().endswith(REFERRAL_SUFFIXES):
                    continue
                if not entry.is_file():
                    continue
                yield (seq, entry.name, entry.path, None)
                seq += 1

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
    roots = [criteria_root, Path(__file__).resolve().parent]
    if formats:
        from .render import TEMPLATES

        roots.append(TEMPLATES)
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    return h.hexdigest()


# ------------------------------------------------------------------ letters


def _zip_date(iso: Optional[str]) -> tuple:
    # render.normalize_zip dates every entry on the letter's date (never the clock)
    if not iso:
        return (1980, 1, 1, 0, 0, 0)
    y, m, d = (int(x) for x in iso.split("-"))
    return (max(y, 1980), m, d, 0, 0, 0)


class LetterMaker:
    """Letters for one batch: the DOCX template prepared once (docx_fast), other formats via render."""

    def __init__(self, formats: tuple[str, ...], criteria):
        from . import render

        self.render = render
        self.formats = formats
        self.vocabulary = criteria.vocabulary
        self.fast = None
        if "docx" in formats or "pdf" in formats:
            from .docx_fast import FastDocx

            self.fast = FastDocx(render.template_path("docx"), render.jinja_env("docx"), autoescape=True)

    def make(self, referral, determination) -> dict[str, bytes]:
        """fmt -> letter bytes, identical to render.render_letter(referral, determination, fmt)."""
        r = self.render
        ctx = r.letter_context(referral, determination, kind=referral.request.request_type,
                               vocabulary=self.vocabulary)
        out: dict[str, bytes] = {}
        docx = None
        if self.fast is not None:
            if (ctx.get("continuation") or {}).get("series"):
                docx = r.render_context(ctx, "docx")  # a trend chart: an image part, docxtpl's job
            else:
                docx = self.fast.render({**ctx, "chart": None}, _zip_date(ctx.get("letter_date_iso")))
        for fmt in self.formats:
            if fmt == "docx":
                out[fmt] = docx
            elif fmt == "pdf":
                from .pdf import docx_to_pdf

                out[fmt] = docx_to_pdf(docx, source_date=ctx.get("letter_date_iso"))
            else:
                out[fmt] = r.render_context(ctx, fmt)
        return out


# ------------------------------------------------------------------ the worker


@dataclass
class _Worker:
    out: Path
    db_path: Path
    formats: tuple[str, ...]
    force: bool
    criteria: Any
    letters: Optional[LetterMaker]
    db: Optional[sqlite3.Connection] = None


_W: Optional[_Worker] = None


def _init_worker(worker: Optional[_Worker], spec: Optional[tuple] = None, parent: Optional[int] = None) -> None:
    """Pool initializer: inherit the parent's prepared state (fork) or build it from `spec` (spawn)."""
    global _W
    if parent is not None:
        _die_with_parent(parent)
    if worker is None:
        from .policy import load_criteria

        out, db_path, formats, force, root = spec
        crit = load_criteria(root)
        worker = _Worker(out, db_path, formats, force, crit, LetterMaker(formats, crit) if formats else None)
    _W = worker
    _W.db = None


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


def _cached(w: _Worker, h: bytes) -> Optional[tuple]:
    """(referral_id, status, determination) when this content is done and its letters intact."""
    if w.db is None:
        w.db = sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True, check_same_thread=False)
    row = w.db.execute("SELECT referral_id, status, determination, letters FROM done WHERE hash=?", (h,)).fetchone()
    if row is None:
        return None
    for rel in json.loads(row[3] or "[]"):
        f = w.db.execute("SELECT hash, sig FROM files WHERE path=?", (rel,)).fetchone()
        try:
            st = os.stat(w.out / rel)
        except OSError:
            return None
        if f is None or f[0] != h or f[1] != _sig(st):
            return None
    return row[:3]


def _process(task: tuple) -> tuple:
    """One record -> (seq, source, kind, hash, referral_id, status, determination, row, result,
    message, letters). kind: fresh (evaluated now), cached (skipped), error."""
    from .determination import determine
    from .referral import read_referral

    w = _W
    seq, source, path, data = task
    h = None
    tmp_letters: list[tuple[str, str]] = []
    try:
        if data is None:
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                return (seq, source, "fresh", None, None, "invalid", None, None, None,
                        f"cannot read: {exc.strerror}", None)
        h = hashlib.blake2b(data, digest_size=16).digest()
        if not w.force:
            hit = _cached(w, h)
            if hit is not None:
                return (seq, source, "cached", h, hit[0], hit[1], hit[2], None, None, None, None)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return (seq, source, "fresh", h, None, "invalid", None, None, None,
                    f"not UTF-8 text (bad byte at offset {exc.start})", None)
        try:
            referral, warnings = read_referral(source, text)
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
            for fmt, blob in w.letters.make(referral, det).items():
                rel = f"letters/{referral.referral_id}.{fmt}"
                fd, tmp = tempfile.mkstemp(dir=w.out / "letters", prefix=f".{referral.referral_id}.{fmt}.",
                                           suffix=".tmp")
                tmp_letters.append((rel, tmp))
                os.fchmod(fd, FILE_MODE)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
        return (seq, source, "fresh", h, referral.referral_id, "done", det.determination,
                json.dumps(row, ensure_ascii=False), json.dumps(d, ensure_ascii=False), None, tmp_letters)
    except Exception as exc:  # one bad record must not stop the run
        for _, tmp in tmp_letters:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return (seq, source, "error", h, None, "error", None, None, None, _location(exc), None)


def _process_chunk(chunk: list[tuple]) -> list[tuple]:
    return [_process(t) for t in chunk]


# ------------------------------------------------------------------ the run


@dataclass
class Summary:
    input: str
    output: str
    records: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    determinations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DETERMINATIONS, 0))
    letters_written: int = 0
    skipped: int = 0
    elapsed_seconds: float = 0.0
    jobs: int = 1

    @property
    def per_second(self) -> float:
        return self.records / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "records": self.records,
                "statuses": self.statuses, "determinations": self.determinations,
                "letters_written": self.letters_written, "skipped": self.skipped,
                "elapsed_seconds": round(self.elapsed_seconds, 3),
                "referrals_per_second": round(self.per_second, 1), "jobs": self.jobs}

    def line(self) -> str:
        dets = ", ".join(f"{n} {k}" for k, n in self.determinations.items())
        stats = ", ".join(f"{n} {k}" for k, n in self.statuses.items())
        return (f"{self.records} referrals in {self.elapsed_seconds:.1f} s ({self.per_second:,.0f}/s, "
                f"{self.jobs} job{'s' if self.jobs != 1 else ''}): {dets}; {stats}; "
                f"{self.letters_written} letters written, {self.skipped} skipped")


class _State:
    """The manifest (DIR/.state/state.sqlite): written by the parent only, read by workers."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "state.sqlite"
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, FILE_MODE))  # 0600 before sqlite writes
        self.db = sqlite3.connect(self.path)
        # WAL: workers read while the parent writes; NORMAL: a crash (even power loss) keeps
        # the database consistent and at worst forgets the last commits, which are redone.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def begin_run(self, fingerprint: str) -> None:
        db = self.db
        row = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is None or row[0] != fingerprint:
            # Criteria, templates, code or formats changed: every cached result is stale.
            db.execute("DELETE FROM done")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        db.execute("DELETE FROM run")
        db.execute("DELETE FROM run_letters")
        db.commit()


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
    from .policy import load_criteria

    started = time.perf_counter()
    source = Source.open(input)
    formats = tuple(dict.fromkeys(formats))
    if formats:
        from .render import FORMATS

        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise InputError(f"--format {bad[0]!r}: expected one of {', '.join(FORMATS)} or none")
    jobs = max(1, jobs or os.cpu_count() or 1)
    out = ensure_dir(Path(out))
    if source.path.resolve() == out.resolve():
        raise InputError(f"{out}: the output folder must not be the input folder")
    letters_dir = ensure_dir(out / "letters")
    criteria = load_criteria(criteria_dir)
    state_dir = ensure_dir(out / ".state")
    os.chmod(state_dir, DIR_MODE)
    lock = _lock(state_dir)
    try:
        _remove_temp_files(out, letters_dir)
        state = _State(state_dir)
        try:
            state.begin_run(fingerprint(Path(criteria.root), formats))
        finally:
            state.db.close()
        # The criteria and the prepared template are loaded here, once: forked workers inherit them.
        worker = _Worker(out, state.path, formats, force, criteria,
                         LetterMaker(formats, criteria) if formats else None)
        summary = Summary(str(input), str(out), jobs=jobs)
        chunksize = chunksize or (16 if formats else 64)
        # Workers are forked before the parent opens its database connection (sqlite
        # connections must not cross a fork).
        pool = _start_pool(worker, jobs) if jobs > 1 else None
        try:
            state = _State(state_dir)
            accept = _Acceptor(state, out, summary)
            try:
                if pool is None:
                    _init_worker(worker)
                    try:
                        for chunk in _chunks(source.tasks(), chunksize):
                            for res in _process_chunk(chunk):
                                accept(res)
                            if progress:
                                progress(len(chunk))
                    finally:
                        _close_worker()
                else:
                    _feed_pool(pool, source.tasks(), jobs, chunksize, accept, progress)
                accept.flush()
                _finish(state, out, letters_dir)
            finally:
                state.db.close()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
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
        init = (None, (worker.out, worker.db_path, worker.formats, worker.force, worker.criteria.root),
                os.getpid())
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=init)
    pool.submit(int).result()  # with fork, the first submit starts every worker
    return pool


def _feed_pool(pool, tasks: Iterator[tuple], jobs: int, chunksize: int, accept: "_Acceptor",
               progress: Optional[Callable[[int], None]]) -> None:
    """Chunks to the pool, at most `4 * jobs` chunks in flight, results taken in input order."""
    from concurrent.futures.process import BrokenProcessPool

    window: deque = deque()
    try:
        for chunk in _chunks(tasks, chunksize):
            window.append(pool.submit(_process_chunk, chunk))
            while len(window) >= 4 * jobs:
                _drain(window.popleft(), accept, progress)
        while window:
            _drain(window.popleft(), accept, progress)
    except BrokenProcessPool:
        accept.flush()
        raise PriorAuthError("a worker process died (out of memory?); the outputs so far are kept: "
                             "run the same command again to resume") from None


def _drain(future, accept: "_Acceptor", progress) -> None:
    results = future.result()
    for res in results:
        accept(res)
    if progress:
        progress(len(results))


class _Acceptor:
    """Takes results in input order: claims referral ids, places letters, records the manifest."""

    COMMIT_EVERY = 2000  # records, or
    COMMIT_SECONDS = 0.5  # at most this much work lost when the run is killed

    def __init__(self, state: _State, out: Path, summary: Summary):
        self.db = state.db
        self.out = out
        self.summary = summary
        self.pending = 0
        self.renamed = False
        self.committed = time.monotonic()

    def __call__(self, res: tuple) -> None:
        seq, source, kind, h, rid, status, det, row, result, message, tmp_letters = res
        db = self.db
        s = self.summary
        s.records += 1
        if kind == "fresh" and status in ("done", "invalid") and h is not None:
            letters = json.dumps([rel for rel, _ in tmp_letters or []])
            db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (h, rid, status, det, row, result, message, letters))
        elif kind == "cached":
            s.skipped += 1
        run_message = message if kind != "cached" else None
        claimed = 0
        letters_json = None
        if status == "done":
            other = db.execute("SELECT source FROM run WHERE referral_id=? AND claimed=1", (rid,)).fetchone()
            if other is not None:
                status, det = "invalid", None
                run_message = f"duplicate referral_id, also in {other[0]}"
                for _, tmp in tmp_letters or []:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
            else:
                claimed = 1
                if kind == "fresh":
                    rels = []
                    for rel, tmp in tmp_letters or []:
                        os.replace(tmp, self.out / rel)
                        st = os.stat(self.out / rel)
                        db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (rel, h, _sig(st)))
                        rels.append(rel)
                        s.letters_written += 1
                        self.renamed = True
                    letters_json = json.dumps(rels)
                else:
                    letters_json = db.execute("SELECT letters FROM done WHERE hash=?", (h,)).fetchone()[0]
                for rel in json.loads(letters_json or "[]"):
                    db.execute("INSERT OR REPLACE INTO run_letters VALUES (?)", (rel,))
        s.statuses[status] += 1
        if status == "done":
            s.determinations[det] += 1
        rank = WORKLIST_ORDER[det if status == "done" else status]
        db.execute("INSERT INTO run VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (seq, source, h if kind != "error" else None, rid, status, run_message, rank, claimed,
                    letters_json))
        self.pending += 1
        if self.pending >= self.COMMIT_EVERY or time.monotonic() - self.committed >= self.COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.renamed:
            _syncfs(self.out)  # the letters reach the disk before the manifest says they exist
            self.renamed = False
        self.db.commit()
        self.pending = 0
        self.committed = time.monotonic()


def _finish(state: _State, out: Path, letters_dir: Path) -> None:
    """The run went through the whole input: rebuild the outputs, drop what is no longer in it."""
    db = state.db
    with atomic_stream(out / "results.jsonl") as fh:
        for (line,) in db.execute("SELECT d.result FROM run r JOIN done d ON d.hash = r.hash "
                                  "WHERE r.claimed = 1 ORDER BY r.seq"):
            fh.write(line.encode("utf-8") + b"\n")
    with atomic_stream(out / "worklist.csv", "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(WORKLIST_COLUMNS)
        query = ("SELECT r.source, r.referral_id, r.status, COALESCE(r.message, d.message), r.letters, "
                 "d.determination, d.row FROM run r LEFT JOIN done d ON d.hash = r.hash ORDER BY r.rank, r.seq")
        for src, rid, status, message, letters, det, row in db.execute(query):
            patient, payer, policy, pathways, missing, reauth, reasons = json.loads(row) if row else [None] * 7
            if status != "done":  # a duplicate keeps who and which payer, to find the record; no outcome
                policy = det = pathways = missing = reauth = reasons = None
            w.writerow([csv_safe(v) for v in (
                rid, patient, payer, policy, det, pathways, missing,
                "; ".join(json.loads(letters or "[]")), reauth, status, message or reasons, src)])
    # Letters no record of this run claims (input removed or changed, or orphaned by a crash).
    from .render import FORMATS

    known = {f".{fmt}" for fmt in FORMATS}
    with os.scandir(letters_dir) as it:
        for e in it:
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                continue
            if Path(e.name).suffix not in known:
                continue  # not ours
            rel = f"letters/{e.name}"
            if db.execute("SELECT 1 FROM run_letters WHERE path=?", (rel,)).fetchone() is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
    db.execute("DELETE FROM files WHERE path NOT IN (SELECT path FROM run_letters)")
    db.execute("DELETE FROM done WHERE hash NOT IN (SELECT hash FROM run WHERE hash IS NOT NULL)")
    db.commit()
    _remove_temp_files(out)
