"""A batch of FHIR bundles vs the same referrals as YAML, per referral, in one run.

Writes N copies of samples/fhir/dm-bundle.json (distinct Bundle ids) and N copies of its
YAML equivalent samples/fhir/dm-fhir-equivalent.yaml (distinct referral_ids), then runs
`priorauth batch DIR -o OUT --no-letters --jobs 1 --json` on each, interleaved, --repeat
times, and keeps the best. Rates are referrals per second of the batch's own elapsed time
(from the summary: criteria loading and the manifest included, Python's start-up not) and
of the wall clock (the whole process). Target: FHIR within 2x of YAML (ratio <= 2). A run
over N/10 copies as well gives the marginal rate, (N - N/10) / (t(N) - t(N/10)) in-run: the
cost of one more referral, without the fixed cost of a run (criteria, maps, imports).

Usage: .venv/bin/python bench/fhir_vs_yaml.py [--n 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "fhir"


def write_inputs(folder: Path, n: int) -> dict[str, Path]:
    bundle = json.loads((SAMPLES / "dm-bundle.json").read_text(encoding="utf-8"))
    yaml_text = (SAMPLES / "dm-fhir-equivalent.yaml").read_text(encoding="utf-8")
    assert "referral_id: dm-fhir-0001\n" in yaml_text and bundle["id"] == "dm-fhir-0001"
    dirs = {"fhir": folder / "fhir", "yaml": folder / "yaml"}
    for d in dirs.values():
        d.mkdir(parents=True)
    for i in range(n):
        rid = f"dm-fhir-{i:05d}"
        bundle["id"] = rid
        (dirs["fhir"] / f"{rid}.json").write_text(json.dumps(bundle), encoding="utf-8")
        (dirs["yaml"] / f"{rid}.yaml").write_text(
            yaml_text.replace("referral_id: dm-fhir-0001\n", f"referral_id: {rid}\n"), encoding="utf-8")
    return dirs


def run(inp: Path, out: Path, n: int) -> tuple[float, float]:
    """(in-run seconds, wall-clock seconds) of one fresh batch; checks every record was decided."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "priorauth", "batch", str(inp), "-o", str(out),
                           "--no-letters", "--jobs", "1", "--json", "--force"],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    summary = json.loads(done.stdout)
    assert summary["records"] == n and summary["determinations"]["meets_criteria"] == n, summary
    return summary["elapsed_seconds"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    small = max(1, args.n // 10)
    with tempfile.TemporaryDirectory() as tmp:
        dirs, few = write_inputs(Path(tmp) / "big", args.n), write_inputs(Path(tmp) / "small", small)
        best = {kind: (float("inf"), float("inf")) for kind in dirs}
        best_few = {kind: float("inf") for kind in dirs}
        for r in range(args.repeat):
            for kind in dirs:
                inrun, wall = run(dirs[kind], Path(tmp) / f"out-{kind}-{r}", args.n)
                best[kind] = (min(best[kind][0], inrun), min(best[kind][1], wall))
                best_few[kind] = min(best_few[kind], run(few[kind], Path(tmp) / f"few-{kind}-{r}", small)[0])
    rate = {kind: (args.n / inrun, args.n / wall) for kind, (inrun, wall) in best.items()}
    marginal = {kind: (args.n - small) / max(best[kind][0] - best_few[kind], 1e-9) for kind in dirs}
    print(f"{args.n} referrals each, priorauth batch --no-letters --jobs 1, best of {args.repeat}:")
    print("| input | in-run s | referrals/s (in-run) | wall s | referrals/s (wall) | marginal referrals/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("yaml", "fhir"):
        print(f"| {kind} | {best[kind][0]:.3f} | {rate[kind][0]:,.0f} | {best[kind][1]:.3f} | {rate[kind][1]:,.0f} "
              f"| {marginal[kind]:,.0f} |")
    ratio, ratio_wall = rate["yaml"][0] / rate["fhir"][0], rate["yaml"][1] / rate["fhir"][1]
    ratio_marginal = marginal["yaml"] / marginal["fhir"]
    print(f"FHIR vs YAML per referral: {ratio:.2f}x slower in-run, {ratio_wall:.2f}x wall clock, "
          f"{ratio_marginal:.2f}x marginal (target <= 2x in-run: {'yes' if ratio <= 2 else 'no'})")


if __name__ == "__main__":
    main()
