"""`priorauth`: a thin click layer over the library (spec section 4).

Exit codes: 0 the command did its job (whatever the determinations), 2 the input or
usage was invalid, 1 anything else. User mistakes never show a traceback.
"""

from __future__ import annotations

import importlib
import json
import os

import click

# command name -> "module:attribute". A command's module is imported only when that command
# runs (or --help lists them): `priorauth check` pays for no other command's imports.
COMMANDS = {
    "check": ".check:check",
    "letter": ".letter:letter",
    "packet": ".packet:packet",
    "batch": ".batch:batch",
    "samples": ".batch:samples",
    "import-fhir": ".fhir:import_fhir",
    "policies": ".criteria:policies",
    "explain": ".criteria:explain",
    "lint": ".criteria:lint",
    "serve": "..service.cli:serve",
    "users": "..service.cli:users",
}

LONG_RUNNING = {"serve", "users"}  # the service's commands: pydantic plugins (e.g. tracing) stay on


class LazyGroup(click.Group):
    """click's documented pattern for subcommands loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str):
        if name in COMMANDS and name not in self.commands:
            if name not in LONG_RUNNING:
                # pydantic looks for plugins (the entry points of every installed distribution,
                # through importlib.metadata) when it builds its first validator: a large share of a
                # `check`'s start-up, for plugins a short command never uses. A value of your
                # own for PYDANTIC_DISABLE_PLUGINS (even empty) lets pydantic decide as usual.
                os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
            module, attr = COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module, __package__), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main():
    cli(prog_name="priorauth")


if __name__ == "__main__":
    main()
