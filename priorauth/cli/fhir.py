"""`priorauth import-fhir`: a FHIR R4 Bundle from an EHR -> a referral file (issue 6).

Registered on the group at the end of cli.py; import it through `priorauth.cli` (importing
this module first would run cli.py's registration before `import_fhir` exists). The FHIR
library is imported inside the command, so `priorauth --help` and `check` on YAML never
load it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from .common import UserError, criteria_option, friendly


@click.command("import-fhir")
@click.argument("bundle", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--request", "request_file", type=click.Path(dir_okay=False),
              help="YAML/JSON with what the bundle lacks, in referral format: request, coverage, prescriber, "
                   "date, referral_id, clinical_course, diagnoses. Each one given replaces the bundle's.")
@click.option("--payer", help="Payer key (e.g. medicare): overrides the Coverage's payor.")
@click.option("--member-id", help="Member id: overrides the Coverage's subscriberId.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Referral file to write: JSON if it ends in .json, else YAML (mode 0600).")
@click.option("--json", "as_json", is_flag=True, help="Print the referral as JSON on standard output instead of -o.")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@criteria_option
@friendly
def import_fhir(bundle, request_file, payer, member_id, output, as_json, force, criteria_dir):
    """Convert a FHIR R4 Bundle (collection, transaction or searchset) to a referral.

    BUNDLE is a FHIR JSON file, or `-` for standard input. What the bundle cannot supply
    (an infusion MedicationRequest, a Coverage, a prescriber with an NPI) comes from
    --request; what cannot be mapped is listed as warnings on standard error.
    docs/fhir-mapping.md describes the mapping.

    \b
    Example:
        priorauth import-fhir samples/fhir/dm-bundle.json -o dm-referral.yaml
        priorauth import-fhir export.json --request request.yaml --payer medicare --json | jq .treatments
    """
    from ..core.yamlio import parse_text, read_stream, read_text
    from ..model.referral import referral_from_data

    if as_json == bool(output):
        raise click.UsageError("give either -o FILE or --json")
    source, text = ("<stdin>", read_stream(sys.stdin.buffer)) if bundle == "-" else (bundle, read_text(Path(bundle)))
    data = parse_text(text, source)
    if not isinstance(data, dict) or "resourceType" not in data:
        raise UserError(f"{source}: resourceType: not a FHIR resource (expected a JSON Bundle)")
    supplement = _read_supplement(request_file)

    from ..io.fhir import load_maps, referral_data_from_bundle
    from .common import criteria_for

    crit = criteria_for(criteria_dir)
    referral, warnings = referral_data_from_bundle(data, source, maps=load_maps(Path(crit.root) / "fhir"),
                                                   vocabulary=crit.vocabulary, products=crit.products,
                                                   supplement=supplement, payer=payer, member_id=member_id)
    referral_from_data(referral, source)  # what is written must be a valid referral
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(referral, indent=2, ensure_ascii=False))
        return
    _write(output, referral, source, warnings, force)
    click.echo(f"wrote {output}: {len(referral.get('treatments', []))} treatment(s), "
               f"{len(referral.get('findings', []))} finding(s), {len(warnings)} warning(s)", err=True)


def _read_supplement(path: Optional[str]) -> Optional[dict]:
    if path is None:
        return None
    from ..core.yamlio import parse_text, read_stream, read_text

    data = parse_text(read_text(Path(path)), path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with request, coverage, prescriber, ... fields")
    return data


def _write(output: Path, referral: dict, source: str, warnings: list[str], force: bool) -> None:
    from ..core.files import atomic_write

    if output.suffix.lower() == ".json":
        body = json.dumps(referral, indent=2, ensure_ascii=False) + "\n"
    else:
        import yaml

        header = [f"# Imported from the FHIR bundle {Path(source).name} by `priorauth import-fhir`: review it.",
                  *[f"# warning: {w}" for w in warnings]]
        body = "\n".join(header) + "\n" + yaml.safe_dump(referral, sort_keys=False, allow_unicode=True)
    atomic_write(output, body, force=force)
