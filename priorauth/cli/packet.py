"""`priorauth packet`: one PDF for the payer (spec section 5): fax cover, letter, checklist,
index of enclosures, then the attached records, every page numbered "page X of N"."""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, criteria_for, criteria_option, friendly, read_referral, templates_option
from .letter import KIND_CHOICES, _denial, _refusal, check_kind


@click.command()
@click.argument("referral", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The packet to write (.pdf).")
@click.option("--kind", type=click.Choice(KIND_CHOICES[:3]), default=None,
              help="initial, continuation or appeal (default: the referral's request_type).")
@click.option("--denial", "denial_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Appeal: YAML/JSON file with reason, date, reference and optionally criteria.")
@click.option("--attach", "attachments", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A PDF of records to enclose (repeatable), in the order given.")
@click.option("--payer-fax", default=None, help="The payer's fax number for the cover sheet.")
@click.option("--draft", is_flag=True, help="Write the packet even when criteria are not met, marked DRAFT.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@templates_option
@criteria_option
@friendly
def packet(referral, output, kind, denial_file, attachments, payer_fax, draft, force, templates_dir, criteria_dir):
    """Write the submission packet for one referral as one PDF.

    Fax cover sheet (to the payer, from the prescriber, total pages, confidentiality notice),
    the letter, the criteria checklist, the index of enclosures, then each --attach PDF;
    every page is numbered "Page X of N" across the packet. No office suite is needed.

    \b
    Example:
        priorauth packet samples/dm-steroid-intolerance.yaml -o S-DM-001-packet.pdf \\
            --attach records/biopsy.pdf --attach records/labs.pdf
    """
    from ..engine.determination import determine
    from ..letters.packet import read_attachment
    from ..letters.render import letters_for, write_letter

    if output.suffix.lower() != ".pdf":
        raise UserError(f"{output}: a packet is a PDF: name it .pdf")
    denial = _denial(denial_file, None, None, None)
    if denial is not None:
        if kind not in (None, "appeal"):
            raise UserError(f"--denial belongs to an appeal packet, not --kind {kind}")
        kind = "appeal"
    if kind == "appeal" and denial is None:
        raise UserError("an appeal packet needs the denial: --denial FILE")
    if output.exists() and not force:
        raise UserError(f"{output}: already exists (use --force to overwrite)")
    for path in attachments:
        if not path.is_file():
            raise UserError(f"{path}: attachment not found")
    letters = letters_for(templates_dir)
    read = [read_attachment(p) for p in attachments]  # a bad file: exit 2 naming it, before any work
    crit = criteria_for(criteria_dir)
    ref, warnings = read_referral(referral, criteria_dir)
    kind = check_kind(kind, ref.request.request_type)
    det = determine(ref, crit, warnings)
    if det.determination != "meets_criteria" and not draft:
        raise UserError(_refusal(det).replace("no letter written", "no packet written"))
    data = letters.packet(det, kind=kind, denial=denial, attachments=[(n, d) for n, d, _ in read], draft=draft,
                          payer_fax=payer_fax)
    write_letter(output, data, force=force)
    for w in det.warnings:
        click.echo(f"warning: {w}", err=True)
    from io import BytesIO

    from pypdf import PdfReader

    pages = len(PdfReader(BytesIO(data)).pages)
    click.echo(f"{output}: {'draft ' if draft else ''}{kind} packet, {pages} pages "
               f"({len(read)} attachment{'s' if len(read) != 1 else ''}) for {det.referral_id}")
