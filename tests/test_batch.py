"""`priorauth batch`: letters, results.jsonl and worklist.csv over many referrals, resumable.

Small N throughout (CI has 2 cores); speed is measured by bench/bench.py, never asserted here.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from priorauth.engine.determination import determine
from priorauth.batch.run import _DROP_STALE, WORKLIST_COLUMNS, WORKLIST_ORDER, csv_safe, redact, run_batch
from priorauth.cli.main import cli
from priorauth.batch.generate import generate, write_samples
from priorauth.io.readers import read_referral

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


# ------------------------------------------------------------------ helpers


def worklist(out: Path) -> list[dict]:
    raw = (out / "worklist.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "worklist.csv must start with a UTF-8 BOM (spreadsheets)"
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == WORKLIST_COLUMNS
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text("utf-8").splitlines()]


def rank(row: dict) -> int:
    return WORKLIST_ORDER[row["determination"] if row["status"] == "done" else row["status"]]


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def assert_complete_and_consistent(out: Path, n_records: int) -> tuple[list[dict], list[dict]]:
    """One complete set of outputs: every record once in the worklist, every done referral once
    in results.jsonl, exactly the letters of the meets_criteria ones, each a whole .docx."""
    assert temp_files(out) == []
    rows, res = worklist(out), results(out)
    assert len(rows) == n_records
    done = [r for r in rows if r["status"] == "done"]
    assert sorted(r["referral"] for r in done) == sorted(d["referral_id"] for d in res)
    assert len({d["referral_id"] for d in res}) == len(res)
    meets = {d["referral_id"] for d in res if d["determination"] == "meets_criteria"}
    letters = {p.name for p in (out / "letters").iterdir()}
    assert letters == {f"{rid}.docx" for rid in meets}
    for name in letters:
        with zipfile.ZipFile(out / "letters" / name) as z:
            assert z.testzip() is None
            assert b"<w:body" in z.read("word/document.xml")
    return rows, res


def batch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "priorauth", "batch", *args]


# ------------------------------------------------------------------ a full run


N = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """200 generated referrals, 10% deliberately broken (bad YAML, unknown field, bad date,
    end before start, non-UTF-8, empty file, bad NPI), and one batch run over them (2 jobs)."""
    base = tmp_path_factory.mktemp("batch")
    inp = base / "in"
    write_samples(N, inp, seed=21, invalid_share=0.1)
    samples = {s.name: s for s in generate(N, seed=21, invalid_share=0.1)}
    out = base / "out"
    summary = run_batch(inp, out, jobs=2)
    return inp, out, samples, summary


def test_every_record_is_listed_and_letters_match_meets_criteria(corpus):
    inp, out, samples, summary = corpus
    rows, res = assert_complete_and_consistent(out, N)
    assert summary.records == N
    assert summary.statuses["invalid"] == sum(s.invalid for s in samples.values()) == 20
    assert summary.statuses["error"] == 0
    meets = [d for d in res if d["determination"] == "meets_criteria"]
    assert summary.letters_written == len(meets) > 50
    assert summary.determinations == {k: sum(d["determination"] == k for d in res)
                                      for k in ("meets_criteria", "missing_documentation", "not_eligible")}


def test_invalid_records_are_listed_with_the_field_never_the_value(corpus):
    inp, out, samples, _ = corpus
    by_source = {r["source"]: r for r in worklist(out)}
    for name, s in samples.items():
        row = by_source[name]
        if not s.invalid:
            assert row["status"] == "done", (name, row["message"])
            continue
        assert row["status"] == "invalid", name
        assert s.field in row["message"], (s.intent, row["message"])
        assert row["letter"] == "" and row["determination"] == ""
        if s.referral_id:
            assert row["referral"] == s.referral_id
        if s.intent == "invalid:bad_date":
            bad = [v for v in ("1971-02-30", "14/03/1971", "1968-13-01") if v.encode() in s.data]
            assert bad and not any(v in row["message"] for v in bad)
        if s.intent == "invalid:end_before_start":
            assert "is before start_date" in row["message"]
            assert not any(ch.isdigit() for ch in row["message"].split("treatments.0")[1])


def test_results_equal_determine_run_directly(corpus, criteria):
    inp, out, samples, _ = corpus
    got = {d["referral_id"]: d for d in results(out)}
    checked = 0
    for name, s in samples.items():
        if s.invalid:
            continue
        ref, warnings = read_referral(inp / name)
        expected = json.loads(json.dumps(determine(ref, criteria, warnings).to_dict()))
        assert got[ref.referral_id] == expected
        checked += 1
    assert checked == len(got) == N - 20


def test_results_are_in_input_order_and_worklist_sorted_as_documented(corpus):
    inp, out, _, _ = corpus
    names = sorted(e.name for e in os.scandir(inp))  # input order of a folder: sorted by name
    ids = [d["referral_id"] for d in results(out)]
    order = {n.rsplit(".", 1)[0]: i for i, n in enumerate(names)}
    assert ids == sorted(ids, key=order.__getitem__)
    rows = worklist(out)
    ranks = [rank(r) for r in rows]
    assert ranks == sorted(ranks)
    assert ranks[0] == 0 and ranks[-1] == 3  # documents to chase first, not eligible last
    # within a group, input order
    for k in set(ranks):
        group = [order[r["source"].rsplit(".", 1)[0]] for r in rows if rank(r) == k]
        assert group == sorted(group)
    meets = [r for r in rows if r["determination"] == "meets_criteria"]
    assert all(r["letter"] == f"letters/{r['referral']}.docx" for r in meets)
    assert any(r["reauthorization due"] for r in meets)
    missing = [r for r in rows if r["determination"] == "missing_documentation"]
    assert missing and all(r["what is missing"] for r in missing)
    assert all(r["message"] for r in rows if r["determination"] == "not_eligible")


def test_outputs_are_owner_only(corpus):
    _, out, _, _ = corpus
    files = [out / "results.jsonl", out / "worklist.csv", out / ".state" / "state.sqlite",
             *(out / "letters").iterdir()]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for d in (out, out / "letters", out / ".state"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


# ------------------------------------------------------------------ re-runs


def _small_input(tmp_path: Path, n: int = 40, seed: int = 3) -> Path:
    inp = tmp_path / "in"
    write_samples(n, inp, seed=seed, invalid_share=0.1)
    return inp


def test_rerun_skips_unchanged_and_redoes_only_what_changed(tmp_path):
    inp = _small_input(tmp_path)
    out = tmp_path / "out"
    first = run_batch(inp, out, jobs=2)
    assert first.skipped == 0 and first.letters_written > 5
    before = {p.name: p.stat().st_mtime_ns for p in (out / "letters").iterdir()}
    res_before = (out / "results.jsonl").read_bytes()
    wl_before = (out / "worklist.csv").read_bytes()

    again = run_batch(inp, out, jobs=1)
    assert again.skipped == 40 and again.letters_written == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "letters").iterdir()} == before
    assert (out / "results.jsonl").read_bytes() == res_before
    assert (out / "worklist.csv").read_bytes() == wl_before

    # Change one referral that has a letter: only it is redone, its result follows the change.
    target = next(d for d in results(out) if d["determination"] == "meets_criteria")["referral_id"]
    path = next(p for p in inp.iterdir() if p.stem == target)
    ref, _ = read_referral(path)
    path.write_text(path.read_text("utf-8").replace(ref.request.product, "Gamunex-C", 1), "utf-8")
    third = run_batch(inp, out, jobs=2)
    assert third.skipped == 39 and third.letters_written == 1
    changed = {p.name for p in (out / "letters").iterdir() if p.stat().st_mtime_ns != before.get(p.name)}
    assert changed == {f"{target}.docx"}
    new = next(d for d in results(out) if d["referral_id"] == target)
    assert new["dosing"]["product"] == "Gamunex-C"
    assert_complete_and_consistent(out, 40)

    res_third = (out / "results.jsonl").read_bytes()
    forced = run_batch(inp, out, jobs=2, force=True)
    assert forced.skipped == 0 and forced.letters_written == first.letters_written
    assert (out / "results.jsonl").read_bytes() == res_third


def test_a_referral_that_stops_meeting_criteria_or_leaves_the_input_loses_its_letter(tmp_path):
    inp = _small_input(tmp_path, 30, seed=8)
    out = tmp_path / "out"
    run_batch(inp, out, jobs=1)
    meets = [d["referral_id"] for d in results(out) if d["determination"] == "meets_criteria"]
    gone, worse = meets[0], meets[1]
    (next(p for p in inp.iterdir() if p.stem == gone)).unlink()
    path = next(p for p in inp.iterdir() if p.stem == worse)
    path.write_text(path.read_text("utf-8").replace("dose_g_per_kg: 2.0", "dose_g_per_kg: 3.5")
                    .replace('"dose_g_per_kg": 2.0', '"dose_g_per_kg": 3.5')
                    .replace("dose_mg: 1000", "dose_mg: 3000").replace('"dose_mg": 1000', '"dose_mg": 3000'), "utf-8")
    run_batch(inp, out, jobs=1)
    letters = {p.stem for p in (out / "letters").iterdir()}
    assert gone not in letters and worse not in letters
    assert gone not in {d["referral_id"] for d in results(out)}
    assert next(d for d in results(out) if d["referral_id"] == worse)["determination"] == "not_eligible"
    assert_complete_and_consistent(out, 29)
    # the manifest forgets the two old contents: it caches exactly what this input holds
    with contextlib.closing(sqlite3.connect(f"file:{out}/.state/state.sqlite?mode=ro", uri=True)) as db:
        cached = {h for h, in db.execute("SELECT hash FROM done")}
        current = {h for h, in db.execute("SELECT hash FROM run WHERE hash IS NOT NULL")}
        # ... found through the hash index: the results themselves are not read back
        steps = [r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + _DROP_STALE)]
    assert cached == current and len(current) == 29
    assert "SCAN done" not in steps and any(s.startswith("SCAN done USING COVERING INDEX") for s in steps), steps


def test_a_criteria_change_redoes_everything(tmp_path):
    import shutil

    inp = _small_input(tmp_path, 12)
    crit = tmp_path / "criteria"
    shutil.copytree(ROOT / "criteria", crit)
    out = tmp_path / "out"
    run_batch(inp, out, jobs=1, formats=(), criteria_dir=crit)
    assert run_batch(inp, out, jobs=1, formats=(), criteria_dir=crit).skipped == 12
    with open(crit / "drugs.yaml", "a", encoding="utf-8") as fh:
        fh.write("\n# a comment is a change too\n")
    assert run_batch(inp, out, jobs=1, formats=(), criteria_dir=crit).skipped == 0


def test_jsonl_lines_inserted_or_reordered_are_still_skipped(tmp_path):
    write_samples(30, tmp_path, seed=5, invalid_share=0.1, jsonl=True)
    src = tmp_path / "referrals.jsonl"
    out = tmp_path / "out"
    first = run_batch(src, out, jobs=1, formats=())
    lines = src.read_bytes().splitlines()
    extra = next(generate(1, seed=99, invalid_share=0.0, jsonl=True)).data
    src.write_bytes(b"\n".join([extra, b""] + lines[::-1]) + b"\n")  # a new line, a blank line, reversed
    second = run_batch(src, out, jobs=2, formats=())
    assert second.records == 31 and second.skipped == 30
    assert len(results(out)) == first.statuses["done"] + 1
    bad = [r for r in worklist(out) if r["status"] == "invalid"]
    assert bad and all(r["source"].startswith("referrals.jsonl:") for r in bad)


# ------------------------------------------------------------------ duplicates, errors, CSV safety


def test_duplicate_referral_ids_are_reported_not_overwritten(tmp_path, criteria):
    samples = [s for s in generate(40, seed=12, invalid_share=0.0, jsonl=True)]
    meets = []
    for s in samples:
        ref, w = read_referral("x", s.data.decode())
        if determine(ref, criteria, w).determination == "meets_criteria":
            meets.append(s)
    first, second = meets[0], meets[1]
    clash = json.loads(second.data)
    clash["referral_id"] = first.referral_id
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([first.data, json.dumps(clash).encode()] + [s.data for s in samples[30:]]) + b"\n")
    out = tmp_path / "out"
    run_batch(src, out, jobs=2)
    rows = worklist(out)
    dup = [r for r in rows if r["referral"] == first.referral_id]
    assert sorted(r["status"] for r in dup) == ["done", "invalid"]
    loser = next(r for r in dup if r["status"] == "invalid")
    assert loser["source"] == "in.jsonl:2"
    assert loser["message"] == "duplicate referral_id, also in in.jsonl:1"
    assert [d["referral_id"] for d in results(out)].count(first.referral_id) == 1
    kept = next(d for d in results(out) if d["referral_id"] == first.referral_id)
    ref, w = read_referral("x", first.data.decode())
    assert kept == json.loads(json.dumps(determine(ref, criteria, w).to_dict()))
    # The letter is the first record's, byte for byte, not the second's.
    from priorauth.letters.render import render_letter

    letter = (out / "letters" / f"{first.referral_id}.docx").read_bytes()
    assert letter == render_letter(ref, determine(ref, criteria, w), "docx", vocabulary=criteria.vocabulary)
    ref2, w2 = read_referral("x", json.dumps(clash))
    assert letter != render_letter(ref2, determine(ref2, criteria, w2), "docx", vocabulary=criteria.vocabulary)
    assert temp_files(out) == []


def test_an_unexpected_exception_is_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    import priorauth.engine.determination as D

    inp = _small_input(tmp_path, 10)
    real = D.determine

    def flaky(referral, *a, **kw):
        if referral.referral_id.endswith("3"):
            raise KeyError(referral.patient.family_name)  # a message that would leak a name
        return real(referral, *a, **kw)

    monkeypatch.setattr(D, "determine", flaky)
    out = tmp_path / "out"
    summary = run_batch(inp, out, jobs=1, formats=())
    assert summary.statuses["error"] == 1 and summary.records == 10
    row = next(r for r in worklist(out) if r["status"] == "error")
    assert row["message"].startswith("unexpected KeyError in flaky")
    ref, _ = read_referral(inp / row["source"])
    assert ref.patient.family_name not in row["message"]
    # errors are not cached: the next run retries them
    monkeypatch.setattr(D, "determine", real)
    again = run_batch(inp, out, jobs=1, formats=())
    assert again.statuses["error"] == 0 and again.skipped == 9


def test_csv_cells_cannot_become_formulas(tmp_path):
    assert [csv_safe(v) for v in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "O'Brien", "", None, 5)] == \
        ["'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "O'Brien", "", "", "5"]
    s = next(generate(1, seed=1, invalid_share=0.0, jsonl=True))
    data = json.loads(s.data)
    data["patient"]["family_name"] = "=HYPERLINK(\"http://x\",\"y\")"
    data["coverage"]["payer"] = "@evil"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(data) + "\n", "utf-8")
    run_batch(src, tmp_path / "out", jobs=1, formats=())
    row = worklist(tmp_path / "out")[0]
    assert row["patient"].startswith("'=HYPERLINK")
    assert row["payer"] == "'@evil"


def test_redact_drops_values_and_keeps_fields():
    msg = ("in/x.yaml: 3 problem(s) in the referral\n"
           "  patient.birth_date: expected a date as YYYY-MM-DD, got '14/03/1971'\n"
           "  diagnoses.0.code: 'M3312x' is not an ICD-10-CM code (letter, two characters)\n"
           "  (top level): patient.birth_date 2030-01-01 is after the referral date 2026-11-20")
    assert redact(msg, "in/x.yaml") == (
        "3 problem(s) in the referral; patient.birth_date: expected a date as YYYY-MM-DD; "
        "diagnoses.0.code: the value is not an ICD-10-CM code (letter, two characters); "
        "(top level): patient.birth_date is after the referral date")


# ------------------------------------------------------------------ killed and resumed


def _committed(out: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out}/.state/state.sqlite?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM run").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_midway_then_rerun_ends_with_one_complete_set(tmp_path):
    n = 800  # enough for the run to outlast its first commit (0.5 s in) and be killed after it
    inp = tmp_path / "in"
    write_samples(n, inp, seed=31, invalid_share=0.1)
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_cmd(str(inp), "-o", str(out), "--jobs", "2"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    letters = out / "letters"
    while time.monotonic() < deadline and proc.poll() is None:
        # some letters on disk and some records committed to the manifest, not all of them
        if letters.is_dir() and sum(1 for _ in os.scandir(letters)) >= 25 and _committed(out) > 0:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the batch finished before it could be killed"
    time.sleep(0.2)  # the workers die with their parent (PR_SET_PDEATHSIG)
    partial = sum(1 for p in letters.iterdir() if not p.name.startswith("."))
    assert 0 < partial
    assert not (out / "worklist.csv").exists()  # killed before the end: no half set of outputs

    done = subprocess.run(batch_cmd(str(inp), "-o", str(out), "--jobs", "2", "--json"), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["records"] == n and summary["skipped"] > 0
    rows, res = assert_complete_and_consistent(out, n)

    # Same outputs as an uninterrupted run (the letters are deterministic too).
    clean = tmp_path / "clean"
    run_batch(inp, clean, jobs=2)
    assert (out / "results.jsonl").read_bytes() == (clean / "results.jsonl").read_bytes()
    assert (out / "worklist.csv").read_bytes() == (clean / "worklist.csv").read_bytes()
    for p in (clean / "letters").iterdir():
        assert (out / "letters" / p.name).read_bytes() == p.read_bytes(), p.name

    # And a re-run with nothing changed skips everything and writes nothing.
    again = subprocess.run(batch_cmd(str(inp), "-o", str(out), "--json"), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    s2 = json.loads(again.stdout)
    assert s2["skipped"] == n and s2["letters_written"] == 0


def test_killed_repeatedly_still_converges(tmp_path):
    n = 120
    inp = tmp_path / "in"
    write_samples(n, inp, seed=32, invalid_share=0.1)
    out = tmp_path / "out"
    for delay in (0.4, 0.9, 1.2):
        proc = subprocess.Popen(batch_cmd(str(inp), "-o", str(out), "--jobs", "2"), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
    time.sleep(0.2)
    r = subprocess.run(batch_cmd(str(inp), "-o", str(out), "--jobs", "2"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_complete_and_consistent(out, n)


# ------------------------------------------------------------------ memory


_RSS = """
import json, resource, sys
from priorauth.batch.run import run_batch
s = run_batch(sys.argv[1], sys.argv[2], jobs=2, formats=())
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"records": s.records, "peak_kb": peak}))
"""


def test_peak_memory_does_not_grow_with_the_number_of_referrals(tmp_path):
    peaks = {}
    for n in (250, 1000):
        d = tmp_path / str(n)
        write_samples(n, d, seed=n, invalid_share=0.05, jsonl=True)
        r = subprocess.run([sys.executable, "-c", _RSS, str(d / "referrals.jsonl"), str(d / "out")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["records"] == n
        peaks[n] = info["peak_kb"]
    # 4x the referrals (about 3 MB more input and 5 MB more results), about the same peak.
    assert peaks[1000] < peaks[250] * 1.15 + 4096, peaks


# ------------------------------------------------------------------ CLI


def test_cli_json_summary_and_check_only(tmp_path, runner):
    write_samples(20, tmp_path, seed=2, invalid_share=0.1, jsonl=True)
    out = tmp_path / "out"
    r = runner.invoke(cli, ["batch", str(tmp_path / "referrals.jsonl"), "-o", str(out), "--no-letters",
                            "--json", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["records"] == 20 and s["statuses"]["invalid"] == 2 and s["letters_written"] == 0
    assert sum(s["determinations"].values()) == s["statuses"]["done"] == 18
    assert list((out / "letters").iterdir()) == []
    r = runner.invoke(cli, ["batch", str(tmp_path / "referrals.jsonl"), "-o", str(out), "--format", "none"])
    assert r.exit_code == 0
    assert "20 referrals in" in r.stderr and "20 skipped" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["batch", "{tmp}/nope", "-o", "{tmp}/out"], "no such folder or file"),
    (["batch", str(SAMPLES / "dm-steroid-intolerance.yaml"), "-o", "{tmp}/out"], "JSON Lines"),
    (["batch", "{tmp}", "-o", "{tmp}/out", "--format", "docx,rtf"], "--format"),
    (["batch", "{tmp}", "-o", "{tmp}/out", "--jobs", "0"], "--jobs"),
    (["batch", "{tmp}", "-o", "{tmp}"], "must not be the input folder"),
])
def test_cli_bad_input_or_options_exit_2_without_traceback(tmp_path, runner, args, message):
    r = runner.invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_progress_bar_counts_to_the_total():
    from priorauth.cli.batch import _Bar

    buf = io.StringIO()
    bar = _Bar(10, buf)
    for _ in range(5):
        bar(2)
    bar.close()
    shown = buf.getvalue().split("\r")
    assert any("10/10 100%" in s and "#" * 30 in s for s in shown)
    assert shown[-1] == ""  # the line is cleared for the summary


def test_batch_help_ends_with_an_example(runner):
    r = runner.invoke(cli, ["batch", "--help"])
    assert r.exit_code == 0
    assert "priorauth batch referrals/ -o out/" in r.output.split("Example:")[1]


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    inp = _small_input(tmp_path, 3)
    out = tmp_path / "out"
    run_batch(inp, out, jobs=1, formats=())
    with open(out / ".state" / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        r = subprocess.run(batch_cmd(str(inp), "-o", str(out)), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "another batch" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ the fast DOCX path


def _docx_parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _normalised_document(data: bytes) -> bytes:
    from lxml import etree

    xml = _docx_parts(data)["word/document.xml"]
    return etree.tostring(etree.fromstring(xml), method="c14n")


def _text(data: bytes) -> str:
    import docx

    d = docx.Document(io.BytesIO(data))
    parts = [p.text for p in d.paragraphs]
    for t in d.tables:
        parts += [c.text for row in t.rows for c in row.cells]
    for s in d.sections:
        parts += [p.text for p in s.header.paragraphs] + [p.text for p in s.footer.paragraphs]
    return "\n".join(parts)


def test_fast_letters_are_the_letters_priorauth_letter_writes(tmp_path, criteria, runner):
    from priorauth.batch.run import LetterMaker
    from priorauth.letters.render import render_letter

    maker = LetterMaker(("docx",), criteria)
    files = [p for p in sorted(SAMPLES.glob("*.yaml"))]
    gen = tmp_path / "gen"
    write_samples(30, gen, seed=44, invalid_share=0.0)
    files += sorted(gen.iterdir())
    compared = 0
    for path in files:
        ref, w = read_referral(path)
        det = determine(ref, criteria, w)
        if det.determination != "meets_criteria":
            continue
        fast = maker.make(ref, det)["docx"]
        slow = render_letter(ref, det, "docx", kind=ref.request.request_type, vocabulary=criteria.vocabulary)
        assert fast == slow, path.name  # byte for byte: same XML, same zip layout, same dates
        if compared < 4:  # and what the user-facing command writes, compared as documents
            target = tmp_path / f"{ref.referral_id}.docx"
            r = runner.invoke(cli, ["letter", str(path), "-o", str(target)])
            assert r.exit_code == 0, r.output
            cli_bytes = target.read_bytes()
            assert _normalised_document(fast) == _normalised_document(cli_bytes)
            assert _text(fast) == _text(cli_bytes)
            assert set(_docx_parts(fast)) == set(_docx_parts(cli_bytes))
        compared += 1
    assert compared >= 15


def test_fast_docx_renders_headers_core_properties_loops_and_tables_like_docxtpl(tmp_path):
    from xml.sax.saxutils import escape

    import docx
    from docxtpl import DocxTemplate

    from priorauth.letters.docx_fast import FastDocx
    from priorauth.letters.render import jinja_env, normalize_zip

    d = docx.Document()
    d.core_properties.title = "Letter for {{ patient.name }}"
    d.sections[0].header.paragraphs[0].text = "Re: {{ patient.name }}"
    d.sections[0].footer.paragraphs[0].text = "Confidential"
    d.add_paragraph("Dear {{ payer }},")
    p = d.add_paragraph("Patient: ")
    p.add_run("{{ patient.name }}").bold = True
    d.add_paragraph("{%p for c in items %}")
    d.add_paragraph("- {{ c }}")
    d.add_paragraph("{%p endfor %}")
    t = d.add_table(rows=4, cols=2)
    t.cell(0, 0).text = "Drug"
    t.cell(1, 0).text = "{%tr for t in treatments %}"
    t.cell(2, 0).text = "{{ t.drug }}"
    t.cell(2, 1).text = "{{ t.outcome }}"
    t.cell(3, 0).text = "{%tr endfor %}"
    d.add_paragraph("Lines: {{ multi }}")
    path = tmp_path / "t.docx"
    d.save(path)
    fast = FastDocx(path, jinja_env("docx"), autoescape=True)
    for ctx in [
        {"patient": {"name": "Siobhán O'Brien & <Sons>"}, "payer": "Aetna", "items": ["a < b", "c"],
         "treatments": [{"drug": "prednisone", "outcome": "failed"}, {"drug": "MTX", "outcome": "=1+2"}],
         "multi": "one\ntwo\tthree"},
        {"patient": {"name": "Zoë"}, "payer": "", "items": [], "treatments": [], "multi": ""},
    ]:
        tpl = DocxTemplate(path)
        tpl.render(ctx, jinja_env("docx"), autoescape=True)
        buf = io.BytesIO()
        tpl.save(buf)
        slow = normalize_zip(buf.getvalue(), "2026-11-20")
        got = fast.render(ctx, (2026, 11, 20, 0, 0, 0))
        assert got == slow
        parts = _docx_parts(got)
        assert escape(ctx["patient"]["name"]).encode() in parts["word/header1.xml"]  # the header is rendered
        assert b"Letter for" in parts["docProps/core.xml"]


def test_fast_docx_text_path_equals_lxml_or_steps_aside(tmp_path):
    """The body and headers are written without parsing when the result is provably what
    parsing and serialising gives; otherwise the lxml path. Either way: docxtpl's bytes."""
    import docx
    from docxtpl import DocxTemplate

    from priorauth.letters.docx_fast import FastDocx, _as_lxml_writes
    from priorauth.letters.render import jinja_env, normalize_zip

    d = docx.Document()
    d.core_properties.title = "{{ title }}"
    d.sections[0].header.paragraphs[0].text = "Re: {{ name }}"
    d.add_paragraph("Name: {{ name }}")
    d.add_paragraph("Empty: ")
    d.add_paragraph("{{ empty }}")
    t = d.add_table(rows=3, cols=2)
    t.cell(0, 0).text = "{%tr for r in rows %}"
    t.cell(1, 0).text = "{{ r }}"
    t.cell(1, 1).text = "{{ r }}"
    t.cell(2, 0).text = "{%tr endfor %}"
    path = tmp_path / "t.docx"
    d.save(path)
    fast = FastDocx(path, jinja_env("docx"), autoescape=True)
    assert fast._text_path and fast._rigid_tables
    for name, title, rows, text_path in [
        ("Siobhán \"Q\" O'Brien & <Sons> ]]>", "t", ["a", "b"], True),  # escaped quotes become characters
        ("  ", "", ["x"], True),  # whitespace-only text (the header's parser drops it: lxml path there)
        ("car\rriage", "t", ["x"], False),  # a parser reads CR as LF
        ("&#169; &amp;", "t", ["x"], True),  # text that looks like references is escaped text
        ("x", "t" * 300, ["x"], True),  # a title python-docx refuses: its error either way
        ("x", "t", [], False),  # no rows: fix_tables changes the grid
    ]:
        ctx = {"name": name, "title": title, "empty": "", "rows": rows}
        xml = fast._render_xml(fast._body, ctx)
        body = _as_lxml_writes(xml, fast._maybe_empty, body=True)
        assert (body is not None) == text_path, name
        # what the template settles (rigid tables, no drawings) gives the same answer, cheaper
        assert _as_lxml_writes(xml, fast._maybe_empty, body=True, rigid_tables=True, drawings=False) == body
        tpl = DocxTemplate(path)
        try:
            tpl.render(ctx, jinja_env("docx"), autoescape=True)
            buf = io.BytesIO()
            tpl.save(buf)
        except ValueError as exc:
            with pytest.raises(ValueError, match=str(exc)[:20]):
                fast.render(ctx, (2026, 11, 20, 0, 0, 0))
            continue
        assert fast.render(ctx, (2026, 11, 20, 0, 0, 0)) == normalize_zip(buf.getvalue(), "2026-11-20"), name


def _png_1x1() -> bytes:
    import struct
    import zlib as z

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", z.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", z.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b""))


def test_fast_docx_with_a_drawing_in_the_template_renumbers_it_like_docxtpl(tmp_path):
    import docx
    from docxtpl import DocxTemplate

    from priorauth.letters.docx_fast import FastDocx
    from priorauth.letters.render import jinja_env, normalize_zip

    d = docx.Document()
    d.add_paragraph("Dear {{ name }},")
    d.add_picture(io.BytesIO(_png_1x1()))
    path = tmp_path / "t.docx"
    d.save(path)
    fast = FastDocx(path, jinja_env("docx"), autoescape=True)
    assert not fast._text_path  # docxtpl renumbers drawings (docPr ids) in every letter
    ctx = {"name": "O'Brien & <Sons>"}
    tpl = DocxTemplate(path)
    tpl.render(ctx, jinja_env("docx"), autoescape=True)
    buf = io.BytesIO()
    tpl.save(buf)
    got = fast.render(ctx, (2026, 11, 20, 0, 0, 0))
    assert got == normalize_zip(buf.getvalue(), "2026-11-20")
    assert b'id="1001"' in _docx_parts(got)["word/document.xml"]


def test_rigid_tables_are_told_from_the_template_source():
    from priorauth.letters.docx_fast import _rigid_tables, _rows_missing

    grid = "<w:tblGrid><w:gridCol w:w=\"1\"/><w:gridCol w:w=\"1\"/></w:tblGrid>"
    cell = "<w:tc><w:p><w:r><w:t>{{ x }}</w:t></w:r></w:p></w:tc>"
    row = f"<w:tr>{cell}{cell}</w:tr>"

    def body(*tables: str) -> str:
        return "<w:body>" + "".join(f"<w:tbl><w:tblPr/>{grid}{t}</w:tbl>" for t in tables) + "</w:body>"

    rigid = [body(row), body(f"{row}{{% for r in rows %}}{row}{{% endfor %}}"),
             body(f"{{% if a %}}{row}{{% else %}}{row}{row}{{% endif %}}"),
             body(f"<w:tr>{cell}<w:tc>{{% for e in es %}}<w:p/>{{% endfor %}}</w:tc></w:tr>"),
             "<w:body><w:p/></w:body>", body(row, f"{{% for r in rows %}}{row}{{% endfor %}}")]
    not_rigid = [
        body(f"<w:tr>{cell}</w:tr>"),  # a row narrower than the grid
        body(f"<w:tr>{cell}{cell}{cell}</w:tr>"),  # wider
        body(f"<w:tr>{{% if a %}}{cell}{{% endif %}}{cell}</w:tr>"),  # a conditional cell
        body(f"<w:tr>{cell}<w:tc>{{% if a %}}<w:p/></w:tc></w:tr><w:tr>{cell}<w:tc>{{% endif %}}</w:tc></w:tr>"),
        body(f"{{% for r in rows %}}{row}"),  # a block the table does not close
        body(f"<w:tr>{cell}<w:tc><w:tcPr><w:gridSpan w:val=\"1\"/></w:tcPr><w:p/></w:tc></w:tr>"),
        body(f"<w:tr>{cell}<w:tc><w:tbl>{grid}</w:tbl><w:p/></w:tc></w:tr>"),  # nested
        body(f"{{% with y = 1 %}}{row}{{% endwith %}}"),  # a block that is not for / if
        "<w:body><w:tbl><w:tblGrid>{% if a %}<w:gridCol/>{% endif %}<w:gridCol/></w:tblGrid></w:tbl></w:body>",
        body(row).replace("<w:tr>", '<w:tr w:rsidR="1">'),
        body(row).replace("<w:tbl>", '<w:tbl w:x="1">'),
    ]
    for source in rigid:
        assert _rigid_tables(source), source
    for source in not_rigid:
        assert not _rigid_tables(source), source
    assert not _rows_missing(b"<w:tbl><w:tblGrid/><w:tr></w:tr></w:tbl><w:tbl><w:tr></w:tr></w:tbl>")
    assert _rows_missing(b"<w:tbl><w:tblGrid/><w:tr></w:tr></w:tbl><w:tbl><w:tblGrid/></w:tbl>")
    assert _rows_missing(b"<w:tbl><w:tr>")  # cut short: the parser decides


def test_the_letter_template_is_rendered_without_parsing(tmp_path):
    """The bundled template takes the fast text path, tables and all: a regression in the
    template (a drawing, a spanned cell) would make every batch letter slower, not wrong."""
    from priorauth.letters.docx_fast import FastDocx
    from priorauth.letters.render import jinja_env, template_path

    fast = FastDocx(template_path("docx"), jinja_env("docx"), autoescape=True)
    assert fast._text_path and fast._rigid_tables


def test_body_text_checks_agree_with_the_xml():
    from lxml import etree

    from priorauth.letters.docx_fast import _as_lxml_writes, _tables_need_fixing, _tables_need_fixing_text

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def table(grid: int, rows: list[str]) -> str:
        cols = "".join('<w:gridCol w:w="100"/>' for _ in range(grid))
        return f"<w:tbl><w:tblPr/><w:tblGrid>{cols}</w:tblGrid>{''.join(rows)}</w:tbl>"

    cell, span = "<w:tc><w:p/></w:tc>", '<w:tc><w:tcPr><w:gridSpan w:val="2"/></w:tcPr><w:p/></w:tc>'
    bodies = [table(2, [f"<w:tr>{cell * 2}</w:tr>"] * 3), table(2, []), table(2, [f"<w:tr>{cell * 3}</w:tr>"]),
              table(3, [f"<w:tr>{cell * 2}</w:tr>"]), table(3, [f"<w:tr>{span}{cell}</w:tr>"]),
              table(3, [f"<w:tr>{cell}</w:tr>", f"<w:tr>{cell * 3}</w:tr>"]), table(1, ["<w:tr><w:tc/></w:tr>"]),
              table(2, [f'<w:tr><w:tc w:x="1"><w:p/></w:tc>{cell}</w:tr>']) + table(1, [f"<w:tr>{cell}</w:tr>"])]
    for inner in bodies:
        xml = f"<w:body {w}>{inner}</w:body>"
        verdict = _tables_need_fixing_text(xml.encode())
        assert verdict in (None, _tables_need_fixing(etree.fromstring(xml))), inner
    nested = f"<w:body {w}>{table(1, [f'<w:tr><w:tc>{table(1, [])}</w:tc></w:tr>'])}</w:body>"
    assert _tables_need_fixing_text(nested.encode()) is None

    for xml, same in [(f'<w:body {w}><w:p><w:t xml:space="preserve"></w:t><w:t>O&#39;B &#34;x&#34; &amp; &lt;</w:t>'
                       f"</w:p><w:p></w:p></w:body>", True),
                      (f"<w:body {w}><w:p><w:t>&#169;</w:t></w:p></w:body>", False),
                      (f"<w:body {w}><w:p><w:t>a\rb</w:t></w:p></w:body>", False),
                      (f"<w:body {w}><w:p><w:t>a\x01b</w:t></w:p></w:body>", False)]:
        got = _as_lxml_writes(xml, [b"w:t", b"w:p"])
        if same:
            assert got == etree.tostring(etree.fromstring(xml), encoding="UTF-8")
        else:
            assert got is None


def test_atomic_stream_replaces_whole_or_not_at_all(tmp_path):
    from priorauth.core.files import atomic_stream, atomic_write

    target = tmp_path / "out.txt"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_stream(target, "w", encoding="utf-8") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_stream(target, "w", encoding="utf-8") as fh:
        fh.write("new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(Exception, match="already exists"):
        atomic_write(target, b"x", force=False)


def test_write_zip_matches_zipfile():
    from priorauth.letters.docx_fast import LARGE_PART, _entry, deflate_level, write_zip

    items = [("a.xml", b"<a/>" * 100), ("dir/b.bin", bytes(range(256)) * 3), ("empty", b""),
             ("big.xml", b"<w:style/>" * (LARGE_PART // 10 + 1))]
    assert deflate_level(LARGE_PART) == 9 and deflate_level(LARGE_PART - 1) == 1
    ref = io.BytesIO()
    with zipfile.ZipFile(ref, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(2026, 2, 3, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            z.writestr(info, data, compresslevel=deflate_level(len(data)))
    assert write_zip([_entry(n, d) for n, d in items], (2026, 2, 3, 0, 0, 0)) == ref.getvalue()
