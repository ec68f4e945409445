"""bench/bench.py's bookkeeping (its timings are never asserted: see bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_table_keeps_the_hand_written_notes(tmp_path):
    kept_notes = _bench().kept_notes
    results = tmp_path / "RESULTS.md"
    assert kept_notes(results) == ""  # no file yet
    results.write_text("# Batch benchmark\n\n| old | table |\n", encoding="utf-8")
    assert kept_notes(results) == ""  # no notes to keep
    notes = "\n## Notes on these measurements\n\nTwo runs, an hour apart.\n"
    results.write_text("# Batch benchmark\n\n| old | table |\n" + notes, encoding="utf-8")
    assert kept_notes(results) == notes
