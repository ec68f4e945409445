"""`priorauth policies`, `explain` and `lint`: read and check the criteria folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import UserError, criteria_for, criteria_option, friendly, json_option


@click.command()
@json_option
@criteria_option
@friendly
def policies(as_json, criteria_dir):
    """List the policies in the criteria folder.

    \b
    Example:
        priorauth policies
        priorauth policies --json
    """
    crit = criteria_for(criteria_dir)
    rows = [{"id": p.id, "therapy": p.therapy, "conditions": p.conditions, "payer": p.payer,
             "version": p.version, "effective": p.effective.isoformat(), "covered_codes": p.covered_codes,
             "file": str(Path(p.file).relative_to(crit.root)) if p.file else None}
            for p in sorted(crit.policies, key=lambda p: (p.therapy, p.id, p.payer, p.effective))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']:<40} {r['therapy']:<10} {r['payer']:<12} {r['version']:<14} "
                   f"{r['effective']}  {', '.join(r['conditions'])}")


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@criteria_option
@friendly
def lint(path, as_json, criteria_dir):
    """Validate a criteria folder: shape and meaning; errors name the file and field.

    PATH (or --criteria, or PRIORAUTH_CRITERIA) is the folder; default the bundled one.
    Exits 2 when any problem is found.

    \b
    Example:
        priorauth lint
        priorauth lint my-criteria/
        priorauth lint --criteria my-criteria/ --json
    """
    from ..criteria.lint import lint_criteria

    if path is not None and criteria_dir is not None and Path(path) != Path(criteria_dir):
        raise UserError("give the criteria folder once: PATH or --criteria, not both")
    problems, count = lint_criteria(path if path is not None else criteria_dir)
    if as_json:
        click.echo(json.dumps({"policies": count, "problems": problems}, indent=2))
    else:
        for p in problems:
            click.echo(p, err=True)
        click.echo(f"{count} policies checked, {len(problems)} problem(s)", err=bool(problems))
    if problems:
        sys.exit(2)


@click.command()
@click.argument("policy_id", metavar="POLICY")
@json_option
@criteria_option
@friendly
def explain(policy_id, as_json, criteria_dir):
    """Print a policy as plain text a physician can read (or its resolved JSON).

    POLICY is a policy id from `priorauth policies`, optionally with @version.

    \b
    Example:
        priorauth explain ivig-myositis
        priorauth explain medicare-ivig-blistering --json
    """
    from ..criteria.explain import explain_policy, find_policy

    crit = criteria_for(criteria_dir)
    policy = find_policy(crit, policy_id)
    if as_json:
        click.echo(policy.model_dump_json(indent=2, exclude_none=True))
    else:
        click.echo(explain_policy(policy, crit.vocabulary))
