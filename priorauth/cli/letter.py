"""`priorauth letter`: write a referral's letter of medical necessity (spec section 4).

A thin layer over priorauth.render; this module imports nothing heavy, so registering the
command costs `priorauth check` nothing (jinja2, docxtpl and lxml load only to render).
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, criteria_for, criteria_option, friendly, read_referral, templates_option

FORMAT_CHOICES = ("docx", "pdf", "html", "md")  # = render.FORMATS (a test keeps them equal)
KIND_CHOICES = ("initial", "continuation", "appeal", "p2p")  # = render.KINDS + the peer-to-peer sheet


def _refusal(det) -> str:
    lines = [f"{det.referral_id}: {det.determination.replace('_', ' ')}: no letter written "
             "(a letter is written only when the criteria are met)"]
    if det.missing:
        lines += ["What to document:"] + [f"  - {m}" for m in det.missing]
    reasons = det.reasons()
    if det.determination == "not_eligible" and reasons:
        lines += ["Why not eligible:"] + [f"  - {r}" for r in reasons]
    lines.append("Use --draft to write a draft marked DRAFT that lists what is missing.")
    return "\n".join(lines)


def _denial(denial_file, reason, date, reference):
    from ..letters.render import load_denial, parse_denial

    given = {k: v for k, v in (("reason", reason), ("date", date), ("reference", reference)) if v is not None}
    if denial_file and given:
        raise UserError("use either --denial FILE or the --denial-reason/--denial-date/--denial-reference options, not both")
    if denial_file:
        return load_denial(denial_file)
    if given:
        return parse_denial(given, "--denial-*")
    return None


def check_kind(kind, request_type):
    """The kind asked for, or the request's; initial/continuation must match the request."""
    if kind is None:
        return request_type
    if kind in ("initial", "continuation") and kind != request_type:
        raise UserError(f"--kind {kind}: the referral's request.request_type is {request_type}; "
                        f"a {kind} letter needs a {kind} request")
    return kind


@click.command()
@click.argument("referral", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write; its extension (.docx .pdf .html .md) gives the format.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default=None,
              help="Output format (default: from the -o extension).")
@click.option("--kind", type=click.Choice(KIND_CHOICES), default=None,
              help="initial, continuation, appeal, or p2p (a one-page PDF sheet for a peer-to-peer call; "
                   "default: the referral's request_type).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--draft", is_flag=True,
              help="Write the letter even when criteria are not met, marked DRAFT with what is missing.")
@click.option("--template", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Your own template: .docx (docxtpl) for docx/pdf, Jinja2 text for html/md; rendered in a sandbox.")
@click.option("--denial", "denial_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Appeal: YAML/JSON file with reason, date, reference and optionally criteria (ids the payer says are unmet).")
@click.option("--denial-reason", default=None, help="Appeal: the payer's stated reason for the denial.")
@click.option("--denial-date", default=None, help="Appeal: date of the denial (YYYY-MM-DD).")
@click.option("--denial-reference", default=None, help="Appeal: the payer's reference or case number.")
@templates_option
@criteria_option
@friendly
def letter(referral, output, fmt, kind, force, draft, template, denial_file, denial_reason, denial_date,
           denial_reference, templates_dir, criteria_dir):
    """Write the letter of medical necessity for one referral.

    REFERRAL is a YAML or JSON referral file, or `-` for standard input. A letter is written
    only when the referral meets the criteria (otherwise exit 2 with what is missing), unless
    --draft is given. The file is written atomically, readable by its owner only, and never
    overwritten without --force. PDF is made by Typst: no office suite is needed.

    \b
    Example:
        priorauth letter samples/dm-steroid-intolerance.yaml -o letters/S-DM-001.docx
        priorauth letter samples/dm-steroid-intolerance.yaml -o S-DM-001.pdf
        priorauth letter samples/pm-undated-steroid-trial.yaml -o draft.html --draft
        priorauth letter samples/dm-steroid-intolerance.yaml -o p2p.pdf --kind p2p
        priorauth letter samples/dm-steroid-intolerance.yaml -o appeal.docx --kind appeal \\
            --denial-reason "steroid trial not documented" --denial-date 2026-11-01 --denial-reference PA-778812
    """
    from ..engine.determination import determine
    from ..letters.render import format_for, letters_for, write_letter

    fmt = format_for(output, fmt)
    if kind == "p2p" and fmt != "pdf":
        raise UserError(f"--kind p2p: the peer-to-peer sheet is a one-page PDF, not {fmt}")
    denial = _denial(denial_file, denial_reason, denial_date, denial_reference)
    if denial is not None and kind not in (None, "appeal", "p2p"):
        raise UserError(f"--denial options belong to an appeal letter, not --kind {kind}")
    if denial is not None and kind is None:
        kind = "appeal"
    if kind == "appeal" and denial is None:
        raise UserError("an appeal letter needs the denial: --denial FILE, or --denial-reason (with --denial-date "
                        "and --denial-reference)")
    if output.exists() and not force:
        raise UserError(f"{output}: already exists (use --force to overwrite)")
    letters = letters_for(templates_dir)
    crit = criteria_for(criteria_dir)
    ref, warnings = read_referral(referral, criteria_dir)
    kind = check_kind(kind, ref.request.request_type)
    det = determine(ref, crit, warnings)
    if det.determination != "meets_criteria" and not draft:
        raise UserError(_refusal(det))
    data = letters.render(ref, det, fmt, kind=kind, draft=draft, template=template, denial=denial,
                          vocabulary=crit.vocabulary)
    write_letter(output, data, force=force)
    for w in det.warnings:  # what `check` would warn about: for the clinic, not the letter
        click.echo(f"warning: {w}", err=True)
    what = "peer-to-peer sheet" if kind == "p2p" else f"{kind} letter"
    click.echo(f"{output}: {'draft ' if draft else ''}{what} ({fmt}, {len(data):,} bytes) for {det.referral_id}")
