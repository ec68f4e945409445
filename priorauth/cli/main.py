"""`priorauth`: a thin click layer over the library (spec section 4).

Exit codes: 0 the command did its job (whatever the determinations), 2 the input or
usage was invalid, 1 anything else. User mistakes never show a traceback.
"""

from __future__ import annotations

import json

import click

from .batch import batch, samples
from .check import check
from .criteria import explain, lint, policies
from .fhir import import_fhir
from .letter import letter
from .packet import packet
from ..service.cli import serve, users


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="priorauth")
def cli():
    """Prior-authorization packets for IVIG and rituximab in autoimmune muscle and skin disease.

    \b
    Example:
        priorauth check samples/dm-steroid-intolerance.yaml
    """


@cli.command()
@click.argument("what", type=click.Choice(["referral"]))
def schema(what):
    """Print the JSON Schema of a data format.

    \b
    Example:
        priorauth schema referral > referral.schema.json
    """
    from ..model.referral import Referral

    click.echo(json.dumps(Referral.model_json_schema(), indent=2))


for _command in (check, letter, packet, batch, samples, import_fhir, policies, explain, lint, serve, users):
    cli.add_command(_command)


def main():
    cli(prog_name="priorauth")


if __name__ == "__main__":
    main()
