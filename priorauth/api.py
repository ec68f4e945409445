"""The library API: what the command line does, as typed functions (re-exported by `priorauth`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .engine.determination import Determination, determine
from .core.errors import CriteriaError, InputError, PriorAuthError
from .criteria.policy import Criteria, load_criteria as _load_criteria
from .core.yamlio import parse_text, read_text
from .io.readers import read_referral
from .model.referral import Referral, referral_from_data

ReferralLike = Union[Referral, Mapping[str, Any], str, Path]
CriteriaLike = Union[Criteria, str, Path, None]

__all__ = ["check", "load_referral", "render_letter", "render_packet", "run_batch", "import_fhir", "lint", "load_criteria",
           "Determination", "Referral", "Criteria", "PriorAuthError", "InputError", "CriteriaError"]


@functools.lru_cache(maxsize=8)
def _cached_criteria(root: Optional[str]) -> Criteria:
    return _load_criteria(root)


def load_criteria(criteria: CriteriaLike = None) -> Criteria:
    """The criteria folder as loaded models: the bundled one, or `criteria` (a folder path).

    Loaded once per folder and process; pass a `Criteria` through unchanged.
    """
    if isinstance(criteria, Criteria):
        return criteria
    return _cached_criteria(str(criteria) if criteria is not None else None)


def _is_text(value: str) -> bool:
    # A referral's text always spans lines or is a JSON object; a path never does either.
    return "\n" in value or value.lstrip().startswith("{")


def _read(referral: ReferralLike, criteria: CriteriaLike) -> tuple[Referral, list[str]]:
    if isinstance(referral, Referral):
        return referral, []
    if isinstance(referral, Mapping):
        data = dict(referral)
        if "resourceType" in data:
            return import_fhir(data, criteria=criteria, with_warnings=True)
        return referral_from_data(data, "referral"), []
    # A FHIR bundle is read with the criteria's names and maps; a YAML referral loads none.
    if isinstance(referral, str) and _is_text(referral):
        return read_referral("<text>", referral, criteria=_LazyCriteria(criteria))
    return read_referral(referral, None, criteria=_LazyCriteria(criteria))


class _LazyCriteria:
    """The criteria, loaded (once per folder, cached) only if a reader asks for them."""

    def __init__(self, criteria: CriteriaLike):
        self._given = criteria

    def __getattr__(self, name: str) -> Any:
        return getattr(load_criteria(self._given), name)


def load_referral(referral: ReferralLike, *, criteria: CriteriaLike = None) -> Referral:
    """A validated `Referral` from a path, YAML/JSON text, a mapping or a FHIR R4 Bundle.

    Raises `InputError` naming the file and field (never its value) when it is not valid.
    """
    return _read(referral, criteria)[0]


def check(referral: ReferralLike, *, criteria: CriteriaLike = None) -> Determination:
    """Evaluate one referral against its payer's policy.

    `referral` is a path, YAML/JSON text, a mapping or a `Referral`; `criteria` a folder
    (default: the bundled criteria) or a loaded `Criteria`. `.determination` is the spec's
    value (`meets_criteria`, `missing_documentation`, `not_eligible`), `.to_dict()` its JSON.
    """
    ref, warnings = _read(referral, criteria)
    return determine(ref, load_criteria(criteria), warnings)


def render_letter(determination: Determination, fmt: str = "docx", *, kind: Optional[str] = None,
                  denial: Optional[Mapping[str, Any]] = None, draft: bool = False,
                  template: Union[str, Path, None] = None) -> bytes:
    """The letter for a determination as bytes: `fmt` is docx, pdf, html or md.

    `kind` is initial, continuation or appeal (default: the referral's request type); an
    appeal takes `denial` ({"reason", "date", "reference", "criteria"}).
    """
    from .letters.render import parse_denial, render_letter as render

    ref = determination.referral
    kind = kind or ref.request.request_type
    denial = parse_denial(dict(denial), "denial") if denial is not None else None
    return render(ref, determination, fmt, kind=kind, draft=draft, template=template, denial=denial)


def render_packet(determination: Determination, *, kind: Optional[str] = None,
                  denial: Optional[Mapping[str, Any]] = None, attachments: Iterable[Any] = (),
                  draft: bool = False, payer_fax: Optional[str] = None) -> bytes:
    """The one-file submission packet (spec section 5) as PDF bytes: fax cover, letter,
    criteria checklist, enclosure index and the attached PDFs (paths or (name, bytes)),
    every page numbered "page X of N"."""
    from .letters.render import default_letters, parse_denial

    denial = parse_denial(dict(denial), "denial") if denial is not None else None
    return default_letters().packet(determination, kind=kind, denial=denial, attachments=attachments,
                                    draft=draft, payer_fax=payer_fax)


def import_fhir(bundle: Union[Mapping[str, Any], str, Path], *, criteria: CriteriaLike = None,
                supplement: Optional[Mapping[str, Any]] = None, with_warnings: bool = False):
    """A FHIR R4 Bundle (mapping, JSON text or path) -> `Referral` (and warnings if asked)."""
    from .io.fhir import load_maps, referral_data_from_bundle

    source = "bundle"
    if isinstance(bundle, (str, Path)) and not (isinstance(bundle, str) and _is_text(bundle)):
        source = str(bundle)
        bundle = read_text(Path(bundle))
    if isinstance(bundle, str):
        bundle = parse_text(bundle, source)
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise InputError(f"{source}: resourceType: expected a FHIR Bundle")
    crit = load_criteria(criteria)
    data, warnings = referral_data_from_bundle(dict(bundle), source, maps=load_maps(Path(crit.root) / "fhir"),
                                               vocabulary=crit.vocabulary, products=crit.products,
                                               supplement=dict(supplement) if supplement else None)
    ref = referral_from_data(data, source)
    return (ref, warnings) if with_warnings else ref


def run_batch(input: Union[str, Path], out: Union[str, Path], *, jobs: Optional[int] = None,
              formats: Iterable[str] = ("docx",), force: bool = False, criteria: Union[str, Path, None] = None):
    """Every referral in a folder or JSON Lines file -> `out`/letters, results.jsonl, worklist.csv."""
    from .batch.run import run_batch as run

    return run(input, out, jobs=jobs, formats=formats, force=force,
               criteria_dir=Path(criteria) if criteria is not None else None)


def lint(criteria: Union[str, Path, None] = None) -> list[str]:
    """Problems in a criteria folder (empty when it is sound), each naming the file and field."""
    from .criteria.lint import lint_criteria

    return lint_criteria(Path(criteria) if criteria is not None else None)[0]
