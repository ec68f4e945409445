"""`priorauth check`: evaluate one referral and explain it."""

from __future__ import annotations

import json
import sys

import click

from .common import criteria_for, criteria_option, friendly, json_option, read_referral


@click.command()
@click.argument("referral", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@criteria_option
@friendly
def check(referral, as_json, criteria_dir):
    """Evaluate one referral against its payer's policy and explain the result.

    REFERRAL is a YAML or JSON referral file, or `-` for standard input.

    \b
    Example:
        priorauth check samples/dm-steroid-intolerance.yaml
        priorauth check samples/dm-steroid-intolerance.yaml --json | jq .missing
    """
    from ..engine.determination import determine
    from .report import explain

    ref, warnings = read_referral(referral, criteria_dir)
    det = determine(ref, criteria_for(criteria_dir), warnings)
    if as_json:
        click.echo(json.dumps(det.to_dict(), indent=2, ensure_ascii=False))
    else:
        tty = sys.stdout.isatty()
        click.echo(explain(det, click.style if tty else (lambda text, **kw: text)))
