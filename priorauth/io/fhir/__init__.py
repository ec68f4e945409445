"""FHIR R4 Bundle -> referral data (spec section 1), for `check` and `import-fhir` (issue 6).

`referral_data_from_bundle(data, source, maps=..., vocabulary=..., products=...)` returns the
referral as plain data plus warnings. The bundle is validated with fhir.resources (R4B
models: structure and types); the mappers then read the validated JSON. Every medical
convention is data in `criteria/fhir/` (`load_maps(folder)`), and the drug names come from
the caller's vocabulary: this package loads no criteria. docs/fhir-mapping.md describes the
mapping.

- `bundle`: reading, validating and indexing a Bundle; references, dates, warnings
- `maps`: the code-map models and `load_maps`
- `context`: what the mappers are handed
- `mappers`: patient, coverage, prescriber, diagnoses, observations, reports and procedures
- `medications`: treatments, contraindications, the request

Messages name the file, the resource (type/id) and the field, never patient data: warnings
flow into determinations and errors onto a terminal.
"""

from __future__ import annotations

import re
from datetime import date as Date
from typing import Any, Optional

from ...core.errors import InputError
from . import mappers, medications
from .bundle import (MAPPED_TYPES, type_name, bundle_date, check_entries, full_date, index_bundle, sanitize_id, the_patient,
                     validate, Notes)
from .context import Context
from .maps import Maps, load_maps

__all__ = ["referral_data_from_bundle", "load_maps", "Maps"]

#: keys a --request file may hold (referral-format fields the EHR export may lack)
SUPPLEMENT_KEYS = {"request", "coverage", "prescriber", "date", "referral_id", "clinical_course", "diagnoses"}


def referral_data_from_bundle(data: dict, source: str, *, maps: Maps, vocabulary: Any, products: Any,
                              supplement: Optional[dict] = None, payer: Optional[str] = None,
                              member_id: Optional[str] = None) -> tuple[dict, list[str]]:
    """A FHIR R4 Bundle (parsed JSON) -> (referral data in spec-section-1 shape, warnings).

    `maps` are the code maps (`load_maps(criteria_root / "fhir")`); `vocabulary` and
    `products` the criteria's drug vocabulary and product table, handed over (duck-typed).
    `supplement` holds what the bundle may lack, in referral format (`--request FILE`):
    request, coverage, prescriber, date, referral_id, clinical_course, diagnoses; each one
    given replaces what the bundle says. `payer` and `member_id` override the coverage's.
    Raises InputError (exit 2) naming the file, resource and field when the bundle is not
    valid FHIR, a reference is broken, or a required referral field has no source.
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a FHIR Bundle (a JSON object)")
    check_entries(data, source)
    validate(data, source)
    supplement = _check_supplement(supplement or {}, source)
    bundle = index_bundle(data, source)
    ctx = Context(bundle, maps, vocabulary, products, Notes(), the_patient(bundle), Date.min)
    ctx.date = _supplement_date(supplement, source) or bundle_date(bundle)
    return _assemble(ctx, supplement, payer, member_id)


def _supplement_date(supplement: dict, source: str) -> Optional[Date]:
    if supplement.get("date") is None:
        return None
    day = full_date(str(supplement["date"]))
    if day is None:
        raise InputError(f"{source}: request file: date: expected a date as YYYY-MM-DD")
    return day


def _check_supplement(supplement: dict, source: str) -> dict:
    unknown = sorted((str(k) for k in set(supplement) - SUPPLEMENT_KEYS))
    if unknown:
        # a key named only when field-like: one like a name may be data (issue 16)
        shown = [k for k in unknown if re.fullmatch(r"[a-z][a-z0-9_]{0,40}", k)]
        if len(shown) < len(unknown):
            shown.append(f"{len(unknown) - len(shown)} other key(s)")
        raise InputError(f"{source}: request file: unknown field(s) {', '.join(shown)} "
                         f"(allowed: {', '.join(sorted(SUPPLEMENT_KEYS))})")
    return supplement

def _assemble(ctx: Context, supplement: dict, payer: Optional[str], member_id: Optional[str]) -> tuple[dict, list[str]]:
    request_mr, request = medications.request(ctx, supplement)
    diagnoses = mappers.diagnoses(ctx, supplement.get("diagnoses") or [])
    findings, assessments, weight_height = mappers.observations(ctx)
    findings += mappers.reports_and_procedures(ctx)
    data = {
        "referral_id": _referral_id(ctx, supplement),
        "date": ctx.date.isoformat(),
        "patient": {**mappers.patient(ctx), **weight_height},
        "coverage": mappers.coverage(ctx, supplement, payer, member_id),
        "prescriber": supplement.get("prescriber") or mappers.prescriber(ctx, request_mr),
        "diagnoses": diagnoses,
        "findings": findings,
        "treatments": medications.treatments(ctx, exclude=request_mr),
        "contraindications": medications.contraindications(ctx),
        "assessments": assessments,
        "request": request,
    }
    if supplement.get("clinical_course"):
        data["clinical_course"] = supplement["clinical_course"]
    _report_unused(ctx)
    _require(ctx, data)
    return data, ctx.notes.lines()


def _require(ctx: Context, data: dict) -> None:
    """One error listing everything the referral still needs, and where to give it."""
    missing = []
    if not data["request"]:
        missing.append("request: no MedicationRequest for an infusion product (criteria/products.yaml) and no "
                       "--request file: the request is missing; give `request:` in a --request file")
    if not data["coverage"]:
        missing.append("coverage: no Coverage resource; give `coverage:` in the --request file "
                       "(or --payer and --member-id)")
    if not data["prescriber"]:
        missing.append("prescriber: no Practitioner with a valid NPI (system http://hl7.org/fhir/sid/us-npi) "
                       "requested the infusion; give `prescriber:` in the --request file")
    if not data["diagnoses"]:
        missing.append("diagnoses: no Condition has an ICD-10-CM code or a SNOMED CT code in "
                       "criteria/fhir/snomed-icd10.yaml; add one, or give `diagnoses:` in the --request file")
    if missing:
        raise InputError(f"{ctx.bundle.source}: cannot make a referral from this bundle:\n  " + "\n  ".join(missing)
                         + "\n  (`check` reads a bundle as it is: supply these with `priorauth import-fhir BUNDLE "
                           "--request FILE -o REFERRAL`, then check REFERRAL)")
    for key in ("request", "coverage", "prescriber"):
        if data[key] is None:
            del data[key]
    for key in ("findings", "treatments", "contraindications", "assessments"):
        if not data[key]:
            del data[key]


def _referral_id(ctx: Context, supplement: dict) -> str:
    if supplement.get("referral_id"):
        return str(supplement["referral_id"])
    for candidate in (ctx.bundle.data.get("id"), ctx.patient.get("id")):
        if candidate and sanitize_id(str(candidate)):
            return sanitize_id(str(candidate))
    raise ctx.bundle.error("Bundle.id", "the bundle and its Patient have no id: give `referral_id:` in the request file")


#: types only read when something refers to them (the prescriber, the payer, a drug)
SUPPORTING_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Medication"}


def _report_unused(ctx: Context) -> None:
    counts: dict[str, int] = {}
    for r in ctx.bundle.resources:
        rtype = r.get("resourceType")
        if rtype not in MAPPED_TYPES:
            name = type_name(rtype)
            counts[name] = counts.get(name, 0) + 1
        elif rtype in SUPPORTING_TYPES and id(r) not in ctx.bundle.used:
            ctx.notes.skip(r, "not the prescriber, the payer or a medication of the referral")
    for rtype, n in sorted(counts.items()):
        ctx.notes.add(f"FHIR import: {n} {rtype} resource(s) not used: the referral format has no field for them")
