"""What every command shares: the user-error type, the shared options, cached criteria."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..core.errors import PriorAuthError


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
templates_option = click.option(
    "--templates", "templates_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    envvar="PRIORAUTH_TEMPLATES", help="Templates folder (default: the bundled templates/).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


@functools.lru_cache(maxsize=4)
def criteria_for(root: Path | None):
    from ..criteria.policy import load_criteria

    return load_criteria(root)


def read_referral(path: str, criteria_dir: Path | None = None):
    """(referral, import warnings) from a path, or standard input for `-`."""
    from ..core.yamlio import read_stream
    from ..io.readers import read_referral as read

    criteria = criteria_for(criteria_dir)  # cached per folder: a FHIR bundle is read with its names and maps
    if path == "-":
        return read("<stdin>", read_stream(sys.stdin.buffer), criteria=criteria)
    return read(path, None, criteria=criteria)
