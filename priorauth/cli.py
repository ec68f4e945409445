"""`priorauth`: a thin click layer over the library (spec section 4).

Exit codes: 0 the command did its job (whatever the determinations), 2 the input or
usage was invalid, 1 anything else. User mistakes never show a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import PriorAuthError


class UserError(click.ClickException):
    """A mistake the user can fix: message on stderr, exit code 2."""

    exit_code = 2


def friendly(func):
    """Turn our own exceptions into click errors with the right exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PriorAuthError as exc:
            cls = UserError if exc.exit_code == 2 else click.ClickException
            raise cls(str(exc)) from None

    return wrapper


criteria_option = click.option(
    "--criteria", "criteria_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    envvar="PRIORAUTH_CRITERIA", help="Criteria folder (default: the bundled criteria/).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@functools.lru_cache(maxsize=4)
def criteria_for(root: Path | None):
    from .policy import load_criteria

    return load_criteria(root)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="priorauth")
def cli():
    """Prior-authorization packets for IVIG and rituximab in autoimmune muscle and skin disease.

    \b
    Example:
        priorauth check samples/dm-steroid-intolerance.yaml
    """


def read_referral(path: str, criteria_dir: Path | None = None):
    """(referral, import warnings) from a path, or standard input for `-`."""
    from .referral import read_referral as read

    if path == "-":
        return read("<stdin>", sys.stdin.read(), criteria_dir)
    return read(path, None, criteria_dir)


@cli.command()
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
    from .determination import determine
    from .report import explain

    ref, warnings = read_referral(referral, criteria_dir)
    det = determine(ref, criteria_for(criteria_dir), warnings)
    if as_json:
        click.echo(json.dumps(det.to_dict(), indent=2, ensure_ascii=False))
    else:
        tty = sys.stdout.isatty()
        click.echo(explain(det, click.style if tty else (lambda text, **kw: text)))


@cli.command()
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


@cli.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@friendly
def lint(path, as_json):
    """Validate a criteria folder: shape and meaning; errors name the file and field.

    Exits 2 when any problem is found.

    \b
    Example:
        priorauth lint
        priorauth lint my-criteria/
    """
    from .lint import lint_criteria

    problems, count = lint_criteria(path)
    if as_json:
        click.echo(json.dumps({"policies": count, "problems": problems}, indent=2))
    else:
        for p in problems:
            click.echo(p, err=True)
        click.echo(f"{count} policies checked, {len(problems)} problem(s)", err=bool(problems))
    if problems:
        sys.exit(2)


@cli.command()
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
    from .explain import explain_policy, find_policy

    crit = criteria_for(criteria_dir)
    policy = find_policy(crit, policy_id)
    if as_json:
        click.echo(policy.model_dump_json(indent=2, exclude_none=True))
    else:
        click.echo(explain_policy(policy, crit.vocabulary))


@cli.command()
@click.argument("what", type=click.Choice(["referral"]))
def schema(what):
    """Print the JSON Schema of a data format.

    \b
    Example:
        priorauth schema referral > referral.schema.json
    """
    from .referral import Referral

    click.echo(json.dumps(Referral.model_json_schema(), indent=2))


from .commands_letter import letter; cli.add_command(letter)  # noqa: E402,E702
from .commands_fhir import import_fhir; cli.add_command(import_fhir)  # noqa: E402,E702
from .commands_batch import batch, samples; cli.add_command(batch); cli.add_command(samples)  # noqa: E402,E702


def main():
    cli(prog_name="priorauth")


if __name__ == "__main__":
    main()
