"""`priorauth batch` and `priorauth samples generate`: many referrals at once.

Registered in cli.py; the heavy parts (batch.py, render, docxtpl) load only when these
commands run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .common import UserError, criteria_option, friendly


class _Bar:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, stream=None):
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self.shown = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.shown >= 0.1 or self.done >= self.total:
            self.shown = now
            self.draw(now)

    def draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        width = 30
        filled = int(frac * width)
        eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{frac:4.0%} {rate:,.0f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d} ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * 78 + "\r")
        self.stream.flush()


def _formats(value: str, no_letters: bool) -> tuple[str, ...]:
    from ..batch.run import BATCH_FORMATS as FORMATS

    if no_letters:
        return ()
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if items == ["none"]:
        return ()
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise UserError(f"--format {value!r}: expected a comma-separated list of {', '.join(FORMATS)}, or none")
    return tuple(dict.fromkeys(items))


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: letters/, results.jsonl, worklist.csv (created if missing).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the number of CPUs).")
@click.option("--format", "fmt", default="docx", show_default=True, metavar="FORMATS",
              help="Letter formats, comma-separated (docx,pdf,html,md), or none to only check.")
@click.option("--no-letters", is_flag=True, help="Only check: no letters (same as --format none).")
@click.option("--force", is_flag=True, help="Redo every referral, even those done in an earlier run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@criteria_option
@friendly
def batch(input_path, out, jobs, fmt, no_letters, force, as_json, criteria_dir):
    """Evaluate every referral in a folder or JSON Lines file; write letters and a worklist.

    INPUT is a folder of referral files (YAML, JSON or FHIR bundles) or a JSON Lines file
    (.jsonl, one referral per line). The output folder gets letters/<referral_id>.<ext> for
    each referral that meets criteria, results.jsonl (one determination per referral) and
    worklist.csv (documents to chase first, then records to fix, letters ready to send, not
    eligible). A record that cannot be read is listed as invalid and the run goes on. Running
    it again only redoes referrals whose input changed; a run that was killed resumes.

    \b
    Example:
        priorauth batch referrals/ -o out/
        priorauth batch pending.jsonl -o out/ --jobs 4 --format docx,pdf
        priorauth batch pending.jsonl -o out/ --no-letters --json
    """
    from ..batch.run import Source, run_batch

    formats = _formats(fmt, no_letters)
    source = Source.open(input_path)
    bar = _Bar(source.count()) if sys.stderr.isatty() and not as_json else None
    try:
        summary = run_batch(input_path, out, jobs=jobs, formats=formats, force=force,
                            criteria_dir=criteria_dir, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(f"{summary.line()} -> {Path(out) / 'worklist.csv'}", err=True)


@click.group()
def samples():
    """Synthetic referrals for trying priorauth out, tests and benchmarks.

    \b
    Example:
        priorauth samples generate 100 -o demo/
    """


@samples.command()
@click.argument("n", type=click.IntRange(min=0))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into (created if missing).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same referrals.")
@click.option("--jsonl", is_flag=True, help="One JSON Lines file (referrals.jsonl) instead of a file each.")
@click.option("--invalid-share", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of deliberately broken records (bad YAML, unknown field, bad date, ...).")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@friendly
def generate(n, out, seed, jsonl, invalid_share, force):
    """Write N synthetic referrals: every determination and pathway, some broken on purpose.

    Names, NPIs and member IDs are invented; dates are relative to a base date drawn from
    the seed, never today, so the same command always writes the same files.

    \b
    Example:
        priorauth samples generate 500 -o demo/ --seed 7
        priorauth samples generate 100000 -o big/ --jsonl --invalid-share 0.02
        priorauth batch demo/ -o demo-out/
    """
    from ..batch.generate import write_samples

    counts = write_samples(n, out, seed=seed, invalid_share=invalid_share, jsonl=jsonl, force=force)
    broken = sum(v for k, v in counts.items() if k.startswith("invalid:"))
    where = Path(out) / "referrals.jsonl" if jsonl else Path(out)
    click.echo(f"{n} referrals ({broken} deliberately invalid) -> {where}", err=True)
