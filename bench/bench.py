"""Batch throughput: naive letters vs `priorauth batch` (1 and 2 jobs) vs check-only JSON Lines.

Everything runs in one go, on the same machine, the same template and the same seeded
synthetic referrals (priorauth.batch.generate):

  (a) naive     for each referral: read, determine, letter_context, then DocxTemplate(template)
                load + render + save of every letter, one process
  (b) batch -j1 `priorauth batch IN -o OUT --jobs 1` (fresh output folder), wall clock
  (c) batch -j2 the same with --jobs 2
  (d) check     `priorauth batch referrals.jsonl -o OUT --no-letters`, --jobs 1 and --jobs 2

Letters per second = letters written / seconds, over the same input mix (referrals that do
not meet criteria cost time and write no letter, in every variant). (a) runs on the first
--naive referrals only (it is slow); its rate is per letter, like the others. Each
measurement is repeated --repeat times, interleaved, and the best is kept (the machine may
be shared). Targets: (b) >= 20x (a); (c) >= 1.7x (b); (d) >= 2,000 referrals/s per core.
(a) runs for ~20 s (500 referrals), not a few seconds: on a machine whose speed comes and
goes in spells, the best of five short runs catches a fast spell that the best of five
40-second runs of (b) cannot, and the ratio would measure the luck of the baseline.

Sizes: a real batch is thousands to hundreds of thousands of referrals, so (b) to (d) run on
enough of them (20,000 and 50,000 by default) that the fixed cost of a run (Python's imports,
criteria, template preparation: under a second, printed below the table) does not stand in
for the per-referral speed; every figure is still wall clock, start-up included. The fixed
cost is serial, so it matters most to (c): with S seconds of it and P of per-referral work
in a one-job run, two jobs can be at most (S + P) / (S + P/2) times faster, ~1.83x for
5,000 referrals (P ~8 s) and ~1.95x for 20,000.

Usage:  .venv/bin/python bench/bench.py [--n 20000] [--naive 500] [--jsonl 50000] [--repeat 5]
        .venv/bin/python bench/bench.py --profile   # also: where the check path spends its time
Writes the table to bench/RESULTS.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priorauth.batch.generate import write_samples  # noqa: E402


def naive(inp: Path, out: Path, limit: int) -> dict:
    """The obvious loop: one DocxTemplate load + render + save per letter."""
    from docxtpl import DocxTemplate

    from priorauth.criteria.policy import load_criteria
    from priorauth.engine.determination import determine
    from priorauth.core.errors import InputError
    from priorauth.io.readers import read_referral
    from priorauth.letters.render import jinja_env, letter_context, template_path

    criteria = load_criteria()
    template = template_path("docx")
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(os.listdir(inp))[:limit]
    letters = 0
    start = time.perf_counter()
    for name in names:
        try:
            ref, warnings = read_referral(inp / name)
        except InputError:
            continue
        det = determine(ref, criteria, warnings)
        if det.determination != "meets_criteria":
            continue
        ctx = letter_context(ref, det, kind=ref.request.request_type, vocabulary=criteria.vocabulary)
        tpl = DocxTemplate(template)
        tpl.render({**ctx, "chart": None}, jinja_env("docx"), autoescape=True)
        tpl.save(out / f"{ref.referral_id}.docx")
        letters += 1
    return {"referrals": len(names), "letters": letters, "seconds": time.perf_counter() - start}


def letter_contexts(inp: Path, limit: int) -> list[dict]:
    """The letter contexts of the first `limit` referrals in `inp` that meet criteria."""
    from priorauth.criteria.policy import load_criteria
    from priorauth.engine.determination import determine
    from priorauth.core.errors import InputError
    from priorauth.io.readers import read_referral
    from priorauth.letters.render import letter_context

    criteria = load_criteria()
    contexts = []
    for name in sorted(os.listdir(inp)):
        if len(contexts) >= limit:
            break
        try:
            ref, warnings = read_referral(inp / name)
        except InputError:
            continue
        det = determine(ref, criteria, warnings)
        if det.determination == "meets_criteria":
            contexts.append(letter_context(ref, det, kind=ref.request.request_type, vocabulary=criteria.vocabulary))
    return contexts


def render_only(inp: Path, limit: int) -> tuple[dict, dict]:
    """The letter engine alone, same contexts: DocxTemplate load + render + save vs FastDocx.render."""
    import io

    from docxtpl import DocxTemplate

    from priorauth.letters.docx_fast import FastDocx
    from priorauth.letters.render import jinja_env, template_path

    template = template_path("docx")
    contexts = [{**ctx, "chart": None} for ctx in letter_contexts(inp, limit)]
    start = time.perf_counter()
    for ctx in contexts:
        tpl = DocxTemplate(template)
        tpl.render(ctx, jinja_env("docx"), autoescape=True)
        tpl.save(io.BytesIO())
    slow = {"letters": len(contexts), "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    fast = FastDocx(template, jinja_env("docx"), autoescape=True)  # the one-time preparation counts too
    for _ in range(10):
        for ctx in contexts:
            fast.render(ctx)
    return slow, {"letters": 10 * len(contexts), "seconds": time.perf_counter() - start}


def batch(args: list[str]) -> dict:
    """Run `priorauth batch ... --json` in a fresh process; wall-clock seconds, startup included.

    Every run starts from a quiet disk, into a new folder: the file system is synced first
    (untimed), or the run's first sync (batch syncs before each manifest commit) would pay for
    writing back the previous run's hundreds of megabytes. Outputs are kept until the end of
    the benchmark: ext4 will not reuse an inode for ~30 s after it was freed, and creating a
    file right after thousands were deleted scans past every one of them (~1 ms a letter,
    measured with perf: recently_deleted / find_inode_bit); that is the harness's deletion,
    not the batch's work."""
    cmd = [sys.executable, "-m", "priorauth", "batch", *args, "--json"]
    os.sync()
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    s = json.loads(r.stdout)
    return {"referrals": s["records"], "letters": s["letters_written"], "seconds": seconds,
            "in_run_seconds": s["elapsed_seconds"], "skipped": s["skipped"]}


def profile_check(jsonl: Path, n: int = 3000) -> str:
    """cProfile of the check path (parse + determine + to_dict + json) over the first n lines."""
    import cProfile
    import io
    import pstats

    from priorauth.criteria.policy import load_criteria
    from priorauth.engine.determination import determine
    from priorauth.core.errors import InputError
    from priorauth.io.readers import read_referral

    criteria = load_criteria()
    lines = jsonl.read_bytes().splitlines()[:n]

    def run():
        for line in lines:
            try:
                ref, w = read_referral("x", line.decode("utf-8"))
            except (InputError, UnicodeDecodeError):
                continue
            json.dumps(determine(ref, criteria, w).to_dict(), ensure_ascii=False)

    run()  # warm
    prof = cProfile.Profile()
    prof.runcall(run)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    plain = time.perf_counter()
    run()
    per = (time.perf_counter() - plain) / len(lines) * 1e6
    return f"check path without profiler: {per:.0f} us per referral ({1e6 / per:,.0f}/s on one core)\n" + buf.getvalue()


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def kept_notes(path: Path) -> str:
    """The hand-written "## Notes" section of a previous RESULTS.md: a new table replaces the
    old one, the history and explanations below it stay."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    at = text.find("\n## Notes")
    return text[at:] if at >= 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="referrals for (b) and (c)")
    ap.add_argument("--naive", type=int, default=500, help="referrals for (a), the slow baseline")
    ap.add_argument("--jsonl", type=int, default=50000, help="referrals for (d)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print a profile of the check path")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="priorauth-bench-"))
    try:
        inp, jl = work / "in", work / "jl"
        write_samples(a.n, inp, seed=a.seed, invalid_share=0.02)
        write_samples(a.jsonl, jl, seed=a.seed + 1, invalid_share=0.02, jsonl=True)
        jsonl = jl / "referrals.jsonl"
        one = work / "one"
        one.mkdir()
        first = next(p for p in sorted(inp.iterdir()) if p.suffix == ".yaml")
        shutil.copy(first, one / first.name)
        runs: dict[str, list[dict]] = {k: [] for k in ("a", "b", "c", "d1", "d2", "ra", "rb", "s")}
        for i in range(a.repeat):
            os.sync()
            runs["a"].append(naive(inp, work / f"naive{i}", a.naive))
            ra, rb = render_only(inp, min(a.naive, 150) // 2)  # a side table: kept short
            runs["ra"].append(ra)
            runs["rb"].append(rb)
            runs["s"].append(batch([str(one), "-o", str(work / f"s{i}"), "--jobs", "1"]))
            runs["b"].append(batch([str(inp), "-o", str(work / f"b{i}"), "--jobs", "1"]))
            runs["c"].append(batch([str(inp), "-o", str(work / f"c{i}"), "--jobs", "2"]))
            runs["d1"].append(batch([str(jsonl), "-o", str(work / f"d1{i}"), "--no-letters", "--jobs", "1"]))
            runs["d2"].append(batch([str(jsonl), "-o", str(work / f"d2{i}"), "--no-letters", "--jobs", "2"]))
            print(f"round {i + 1}/{a.repeat} done", file=sys.stderr)
        A, B, C, D1, D2, RA, RB, S = (best(runs[k]) for k in ("a", "b", "c", "d1", "d2", "ra", "rb", "s"))
        lps = {k: r["letters"] / r["seconds"] for k, r in (("a", A), ("b", B), ("c", C), ("ra", RA), ("rb", RB))}
        d1, d2 = D1["referrals"] / D1["seconds"], D2["referrals"] / D2["seconds"]

        def ok(cond: bool) -> str:
            return "yes" if cond else "**no**"

        rows = [
            ("(a) naive: DocxTemplate load + render + save per letter, 1 process",
             A, f"{lps['a']:,.1f} letters/s", "1.0x", ""),
            ("(b) `priorauth batch --jobs 1`", B, f"{lps['b']:,.1f} letters/s", f"{lps['b'] / lps['a']:.1f}x (a)",
             f">= 20x (a): {ok(lps['b'] >= 20 * lps['a'])}"),
            ("(c) `priorauth batch --jobs 2`", C, f"{lps['c']:,.1f} letters/s", f"{lps['c'] / lps['b']:.2f}x (b)",
             f">= 1.7x (b): {ok(lps['c'] >= 1.7 * lps['b'])}"),
            ("(d) check only, JSON Lines, `--jobs 1`", D1, f"{d1:,.0f} referrals/s", f"{d1:,.0f}/s per core",
             f">= 2,000/s per core: {ok(d1 >= 2000)}"),
            ("(d) check only, JSON Lines, `--jobs 2`", D2, f"{d2:,.0f} referrals/s", f"{d2 / 2:,.0f}/s per core",
             f">= 2,000/s per core: {ok(d2 / 2 >= 2000)}"),
        ]
        engine = [
            ("DocxTemplate load + render + save (to memory)", RA, lps["ra"], "1.0x"),
            ("`docx_fast.FastDocx.render` (preparation included)", RB, lps["rb"], f"{lps['rb'] / lps['ra']:.1f}x"),
        ]
        lines_engine = [
            "",
            "The letter engine alone (same letter contexts, computed beforehand; no parsing, no determination,",
            "no letter_context, no file writes):",
            "",
            "| engine | letters | seconds | letters/s | ratio |",
            "| --- | ---: | ---: | ---: | ---: |",
        ] + [f"| {label} | {r['letters']:,} | {r['seconds']:.2f} | {rate:,.1f} | {ratio} |"
             for label, r, rate, ratio in engine]
        lines = [
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}; best of {a.repeat}; seeded synthetic referrals (2% invalid). "
            f"Throughput and ratios use wall-clock seconds, process start-up included; in-run seconds are the "
            f"batch's own elapsed time (from after Python's imports: criteria, template preparation and workers "
            f"included).",
            "",
            "| run | referrals | letters | seconds | in-run seconds | throughput | ratio | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, r, rate, ratio, target in rows:
            inner = f"{r['in_run_seconds']:.2f}" if "in_run_seconds" in r else "-"
            lines.append(f"| {label} | {r['referrals']:,} | {r['letters']:,} | {r['seconds']:.2f} | {inner} | {rate} "
                         f"| {ratio} | {target} |")
        # The same ratios round by round (each round runs everything once, back to back): how
        # much of the best-of result is the machine's noise.
        per_round = []
        for i in range(a.repeat):
            ra_, rb_, rc_ = (runs[k][i]["letters"] / runs[k][i]["seconds"] for k in ("a", "b", "c"))
            d1_, d2_ = (runs[k][i]["referrals"] / runs[k][i]["seconds"] for k in ("d1", "d2"))
            per_round.append(f"{rb_ / ra_:.1f}x / {rc_ / rb_:.2f}x / {d1_:,.0f} / {d2_ / 2:,.0f}")
        lines += ["", "Round by round, (b) vs (a) / (c) vs (b) / (d) one job per s / (d) two jobs per s per core: "
                      + "; ".join(per_round) + "."]
        lines += ["", f"Fixed cost of every run, in (b) to (d): `priorauth batch` over one referral with a letter takes "
                      f"{S['seconds']:.2f} s wall clock ({S['in_run_seconds']:.2f} s of it after Python's imports: "
                      f"criteria, template preparation, the manifest)."]
        lines += lines_engine
        lines += ["", f"Reproduce: `.venv/bin/python bench/bench.py --n {a.n} --naive {a.naive} --jsonl {a.jsonl} "
                      f"--seed {a.seed} --repeat {a.repeat}`"]
        table = "\n".join(lines)
        print(table)
        a.out.write_text("# Batch benchmark\n\n" + table + "\n" + kept_notes(a.out), encoding="utf-8")
        if a.profile:
            print("\n" + profile_check(jsonl))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
