"""The long fuzz campaign of issue 16: tests/test_fuzz.py's properties, ~10^5 inputs in all.

    .venv/bin/python bench/fuzz_long.py [--examples 33400] [--parallel 3]

Runs each property of tests/test_fuzz.py in its own process under the `long` Hypothesis
profile (FUZZ_EXAMPLES examples each, no deadline) with --hypothesis-show-statistics, and
prints, per property: the examples run, the seconds taken and the outcome. A failure is
printed with Hypothesis's shrunk example (fix it, then add a reproduction test).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["test_mutated_referrals", "test_edited_texts", "test_random_unicode_in_text_fields"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=33_400, help="examples per property")
    ap.add_argument("--parallel", type=int, default=len(TESTS))
    args = ap.parse_args()
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "FUZZ_EXAMPLES": str(args.examples)}
    started = time.monotonic()
    running: list[tuple[str, subprocess.Popen, float]] = []
    results = []
    pending = list(TESTS)
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            proc = subprocess.Popen([sys.executable, "-m", "pytest", f"tests/test_fuzz.py::{name}", "-q",
                                     "-p", "no:cacheprovider", "--hypothesis-show-statistics"],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((name, proc, time.monotonic()))
        name, proc, t0 = running.pop(0)
        out, _ = proc.communicate()
        seconds = time.monotonic() - t0
        passing = sum(int(n) for n in re.findall(r"(\d+) passing,", out))
        failing = sum(int(n) for n in re.findall(r"(\d+) failing,", out))
        invalid = sum(int(n) for n in re.findall(r"(\d+) invalid test cases", out))
        results.append((name, passing, failing, invalid, seconds, proc.returncode))
        if proc.returncode != 0:
            print(f"--- {name} FAILED ---\n{out[-6000:]}", flush=True)
    total = sum(r[1] + r[2] + r[3] for r in results)
    print(f"{'property':40} {'passing':>8} {'failing':>8} {'invalid':>8} {'seconds':>8}  outcome")
    for name, passing, failing, invalid, seconds, rc in results:
        print(f"{name:40} {passing:8} {failing:8} {invalid:8} {seconds:8.0f}  {'ok' if rc == 0 else 'FAILED'}")
    print(f"{total} inputs in {time.monotonic() - started:.0f} s wall clock")
    return 0 if all(r[5] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
