"""Medications -> treatments, allergies and adverse events -> contraindications, and the
infusion MedicationRequest -> the request (product, dose, interval, cycles).

Drug and product names come from the vocabulary and product table the caller hands over
(`Context.generic_in`, `Context.product_in`); nothing here loads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date as Date
from typing import Any, Optional

from .bundle import (DAYS_PER_CYCLE_URL, SNOMED_SYSTEM, code_word, codes, first_date, full_date, period_end,
                     period_start, rid, texts)
from .context import Context
from .maps import first_match

# ------------------------------------------------------------------ medications


ACTIVE = {"active", "intended", "on-hold", "draft"}
ENDED = {"completed", "stopped"}


@dataclass
class Med:
    """What one MedicationStatement or MedicationRequest says, before it becomes a treatment."""

    resource: dict
    text: str
    dosages: list[dict]
    start: Optional[Date]
    end: Optional[Date]
    reason: str


def _medication_text(ctx: Context, resource: dict) -> str:
    if resource.get("medicationCodeableConcept"):
        return " ".join(texts(resource["medicationCodeableConcept"]))
    med = ctx.bundle.resolve(resource.get("medicationReference"), resource, "medicationReference", ("Medication",))
    if med is None:
        return (resource.get("medicationReference") or {}).get("display") or ""
    ctx.bundle.used.add(id(med))
    ingredients = [t for i in med.get("ingredient") or [] for t in texts(i.get("itemCodeableConcept"))]
    return " ".join(texts(med.get("code")) + ingredients + texts(med.get("form")))


def _med(ctx: Context, r: dict) -> Med:
    if r["resourceType"] == "MedicationStatement":
        dosages = r.get("dosage") or []
        start = first_date(r.get("effectiveDateTime"), period_start(r.get("effectivePeriod")))
        end = full_date(period_end(r.get("effectivePeriod")))
        reason = " ".join(texts(r.get("statusReason")))
    else:
        dosages = r.get("dosageInstruction") or []
        bounds = [((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") for d in dosages]
        validity = (r.get("dispenseRequest") or {}).get("validityPeriod")
        start = first_date(*[period_start(b) for b in bounds], period_start(validity), r.get("authoredOn"))
        end = first_date(*[period_end(b) for b in bounds], period_end(validity))
        reason = " ".join(texts(r.get("statusReason")))
    return Med(r, _medication_text(ctx, r), dosages, start, end, reason)


def treatments(ctx: Context, exclude: Optional[dict]) -> list[dict]:
    out = []
    for r in ctx.bundle.resources:
        if r.get("resourceType") not in ("MedicationStatement", "MedicationRequest") or r is exclude:
            continue
        if not ctx.is_patient(r, "subject"):
            continue
        treatment = _treatment(ctx, r)
        if treatment:
            out.append(treatment)
    return out


def _treatment(ctx: Context, r: dict) -> Optional[dict]:
    status = r.get("status")
    if status in ("entered-in-error", "cancelled", "not-taken"):
        ctx.notes.skip(r, f"status {code_word(status)}: never taken")
        return None
    if r.get("resourceType") == "MedicationRequest" and r.get("intent") in ("proposal", "option"):
        ctx.notes.skip(r, f"intent {code_word(r.get('intent'))}: proposed, not prescribed")
        return None
    med = _med(ctx, r)
    generic = ctx.generic_in(med.text)
    if generic is None:
        ctx.notes.skip(r, "its medication names no drug in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(r))
    out: dict[str, Any] = {"drug": generic}
    route = _route(ctx, med)
    if route:
        out["route"] = route
    dose = _dose_text(med.dosages)
    if dose:
        out["dose"] = dose
    try:
        out.update(_span(ctx, med, status))
    except _NoDates:
        ctx.notes.skip(r, f"status {code_word(status)} with no date at all: cannot tell when it was taken")
        return None
    outcome = _outcome(ctx, med, out)
    if outcome:
        out["outcome"] = outcome
    out["details"] = "; ".join(p for p in (med.text, f"status {status}",
                                           f"reason: {med.reason}" if med.reason else "") if p)[:300]
    return out


def _route(ctx: Context, med: Med) -> Optional[str]:
    for dosage in med.dosages:
        concept = dosage.get("route") or {}
        for code in codes(concept, SNOMED_SYSTEM):
            if code in ctx.maps.medications.route_codes:
                return ctx.maps.medications.route_codes[code]
        route = first_match(ctx.maps.route_matchers, " ".join(texts(concept)))
        if route:
            return route
    return first_match(ctx.maps.route_matchers, med.text)


def _dose_text(dosages: list[dict]) -> Optional[str]:
    parts = []
    for d in dosages:
        if d.get("text"):
            parts.append(d["text"])
            continue
        quantity = next((dr.get("doseQuantity") for dr in d.get("doseAndRate") or [] if dr.get("doseQuantity")), None)
        repeat = (d.get("timing") or {}).get("repeat") or {}
        words = []
        if quantity and quantity.get("value") is not None:
            words.append(f"{quantity['value']:g} {quantity.get('unit') or quantity.get('code') or 'dose unit(s)'}")
        if repeat.get("frequency") and repeat.get("period") and repeat.get("periodUnit"):
            words.append(_frequency(repeat))
        if words:
            parts.append(" ".join(words))
    return "; ".join(parts) or None


class _NoDates(Exception):
    """A stopped medication with no date: recording it would read as still taken."""


PERIOD_WORDS = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}


def _frequency(repeat: dict) -> str:
    unit = PERIOD_WORDS.get(repeat["periodUnit"], repeat["periodUnit"])
    every = f"every {repeat['period']:g} {unit}s" if repeat["period"] != 1 else f"every {unit}"
    return f"{repeat['frequency']:g} time(s) {every}" if repeat["frequency"] != 1 else every


def _span(ctx: Context, med: Med, status: Optional[str]) -> dict:
    """start_date and end_date, with the conventions docs/fhir-mapping.md lists."""
    r = med.resource
    out: dict[str, Any] = {}
    if med.start:
        out["start_date"] = med.start.isoformat()
    else:
        ctx.notes.add(f"FHIR import: {rid(r)}: no full start date (effective, boundsPeriod, validityPeriod, "
                      "authoredOn): trial length unknown")
    end = med.end
    if end and end > ctx.date:
        end = None  # a planned end after the referral date: still being taken on that date
    if end is None and status in (None, "unknown"):
        ctx.notes.add(f"FHIR import: {rid(r)}: status unknown and no end date: taken to be still taken")
    if end is None and status in ENDED:
        # The referral format cannot say "ended on an unknown day" (null means still taking
        # it), so a known earlier day stands in: the start (the trial counts as 0 weeks), or
        # without one the day it was recorded as stopped (its length is then unknown).
        end = med.start or first_date(r.get("dateAsserted"), r.get("authoredOn"))
        if end is None:
            raise _NoDates()
        ctx.notes.add(f"FHIR import: {rid(r)}: status {code_word(status)} but no end date: end_date set to the "
                      f"{'start date' if med.start else 'date it was recorded'}; document when it was stopped")
    if med.start and end and end < med.start:
        ctx.notes.add(f"FHIR import: {rid(r)}: end date before start date: end date dropped")
        end = med.start if status in ENDED else None
    out["end_date"] = end.isoformat() if end else None
    return out


def _outcome(ctx: Context, med: Med, treatment: dict) -> Optional[str]:
    """statusReason decides (a drug still taken can have flared on taper); else active -> ongoing."""
    outcome = first_match(ctx.maps.outcome_matchers, med.reason) if med.reason else None
    if outcome:
        return outcome
    if treatment.get("end_date") is None and med.resource.get("status") in ACTIVE:
        return "ongoing"
    if med.reason:
        ctx.notes.add(f"FHIR import: {rid(med.resource)}: statusReason matches no outcome in "
                      "criteria/fhir/medications.yaml: outcome unknown")
    return None


# ------------------------------------------------------------------ contraindications


def contraindications(ctx: Context) -> list[dict]:
    out = []
    for allergy in ctx.bundle.of_type("AllergyIntolerance"):
        item = _allergy(ctx, allergy)
        if item:
            out.append(item)
    for event in ctx.bundle.of_type("AdverseEvent"):
        item = _adverse_event(ctx, event)
        if item:
            out.append(item)
    return out


def _drug_or_class(ctx: Context, text: str) -> Optional[dict]:
    generic = ctx.generic_in(text)
    if generic:
        return {"drug": generic}
    drug_class = first_match(ctx.maps.class_matchers, text)
    return {"drug_class": drug_class} if drug_class else None


def _allergy(ctx: Context, allergy: dict) -> Optional[dict]:
    if not ctx.is_patient(allergy, "patient"):
        return None
    verification = codes(allergy.get("verificationStatus"),
                         "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification")
    clinical = codes(allergy.get("clinicalStatus"),
                     "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical")
    if set(verification) & {"refuted", "entered-in-error"} or set(clinical) & {"resolved", "inactive"}:
        ctx.notes.skip(allergy, "refuted, entered in error, resolved or inactive")
        return None
    substance = " ".join(texts(allergy.get("code")) + [t for r in allergy.get("reaction") or []
                                                       for t in texts(r.get("substance"))])
    what = _drug_or_class(ctx, substance)
    if what is None:
        ctx.notes.skip(allergy, "names no drug or drug class in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(allergy))
    manifestations = [t for r in allergy.get("reaction") or [] for t in texts(r.get("manifestation"))]
    reason = allergy.get("type") or "allergy"
    if manifestations:
        reason += ": " + ", ".join(dict.fromkeys(manifestations))
    out = {**what, "reason": reason}
    day = first_date(allergy.get("recordedDate"), allergy.get("onsetDateTime"))
    if day:
        out["documented_date"] = day.isoformat()
    return out


def _adverse_event(ctx: Context, event: dict) -> Optional[dict]:
    if not ctx.is_patient(event, "subject"):
        return None
    if event.get("actuality") == "potential":
        ctx.notes.skip(event, "a potential event, not one that happened")
        return None
    suspects = []
    for s in event.get("suspectEntity") or []:
        target = ctx.bundle.resolve(s.get("instance"), event, "suspectEntity.instance")
        if target is None:
            suspects.append((s.get("instance") or {}).get("display") or "")
        elif target.get("resourceType") == "Medication":
            suspects.append(" ".join(texts(target.get("code"))))
        else:
            suspects.append(_medication_text(ctx, target) if "medicationCodeableConcept" in target
                            or "medicationReference" in target else " ".join(texts(target.get("code"))))
    what = _drug_or_class(ctx, " ".join(suspects))
    if what is None:
        ctx.notes.skip(event, "its suspect entity names no drug in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(event))
    out = {**what, "reason": "adverse event: " + (", ".join(texts(event.get("event"))) or "not described")}
    day = first_date(event.get("date"), event.get("recordedDate"))
    if day:
        out["documented_date"] = day.isoformat()
    return out


# ------------------------------------------------------------------ the request


def request(ctx: Context, supplement: dict) -> tuple[Optional[dict], Optional[dict]]:
    """(the MedicationRequest that is the request, request data); the request file wins."""
    candidates = [r for r in ctx.bundle.of_type("MedicationRequest")
                  if r.get("status") in ACTIVE and r.get("intent") != "option" and _product_in(ctx, r)]
    candidates.sort(key=lambda r: full_date(r.get("authoredOn")) or Date.min, reverse=True)
    if supplement.get("request"):
        for r in candidates:
            ctx.notes.add(f"FHIR import: {rid(r)} not used as the request: the request file gives it")
        return (candidates[0] if candidates else None), dict(supplement["request"])
    if not candidates:
        return None, None
    chosen = candidates[0]
    for other in candidates[1:]:
        ctx.notes.add(f"FHIR import: {rid(other)}: an older infusion order; {rid(chosen)} is the request")
    if not ctx.is_patient(chosen, "subject"):
        raise ctx.bundle.error(f"{rid(chosen)} subject", "the infusion request is for another patient")
    ctx.bundle.used.add(id(chosen))
    return chosen, _request_fields(ctx, chosen)


def _product_in(ctx: Context, r: dict) -> Optional[tuple[str, Any]]:
    return ctx.product_in(_medication_text(ctx, r))


def _request_fields(ctx: Context, r: dict) -> dict:
    brand, product = _product_in(ctx, r)
    out: dict[str, Any] = {"therapy": product.therapy, "product": brand,
                           "request_type": "continuation" if r.get("priorPrescription") else "initial"}
    dosage = (r.get("dosageInstruction") or [{}])[0]
    if len(r.get("dosageInstruction") or []) > 1:
        ctx.notes.add(f"FHIR import: {rid(r)}: only the first dosageInstruction is read")
    parsed = _structured_dose(ctx, r, dosage, product.therapy)
    for key, value in _text_dose(dosage.get("text") or "", product.therapy).items():
        if key in parsed and parsed[key] != value:
            ctx.notes.add(f"FHIR import: {rid(r)}: dosageInstruction text and structure disagree on {key}; "
                          "the structured value is used")
        parsed.setdefault(key, value)
    out.update(parsed)
    start = first_date(period_start((r.get("dispenseRequest") or {}).get("validityPeriod")),
                       period_start(((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")))
    if start:
        out["start_date"] = start.isoformat()
    return out


def _structured_dose(ctx: Context, r: dict, dosage: dict, therapy: str) -> dict:
    out: dict[str, Any] = {}
    quantity = next((dr.get("doseQuantity") for dr in dosage.get("doseAndRate") or [] if dr.get("doseQuantity")), {})
    unit = str(quantity.get("code") or quantity.get("unit") or "").replace(" ", "").lower()
    if quantity.get("value") is not None:
        if unit == "g/kg":
            out["dose_g_per_kg"] = float(quantity["value"])
        elif unit == "mg" and therapy == "rituximab":
            out["dose_mg"] = float(quantity["value"])
        else:
            ctx.notes.add(f"FHIR import: {rid(r)}: doseQuantity unit is not g/kg (IVIG) or mg (rituximab): ignored")
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    weeks = {"wk": 1, "d": 1 / 7}.get(repeat.get("periodUnit"))
    if repeat.get("period") and weeks and repeat.get("frequency", 1) == 1:
        out["interval_weeks"] = round(float(repeat["period"]) * weeks, 2)
    if repeat.get("count"):
        out["doses" if therapy == "rituximab" else "cycles"] = int(repeat["count"])
    days = next((e.get("valueInteger") for e in dosage.get("extension") or [] if e.get("url") == DAYS_PER_CYCLE_URL), None)
    if days:
        out["days_per_cycle"] = int(days)
    return out


_TEXT_DOSE = {
    "dose_g_per_kg": r"(\d+(?:\.\d+)?)\s*g\s*/\s*kg",
    "days_per_cycle": r"over\s+(\d+)\s+(?:consecutive\s+)?days?",
    "interval_weeks": r"every\s+(\d+(?:\.\d+)?)\s+weeks?",
    "cycles": r"(\d+)\s+cycles?",
    "dose_mg": r"(\d+(?:\.\d+)?)\s*mg\b",
    "doses": r"(\d+)\s+doses?",
}


def _text_dose(text: str, therapy: str) -> dict:
    """The dosageInstruction.text convention, e.g. '2 g/kg over 5 days every 4 weeks for 6 cycles'."""
    wanted = ("dose_mg", "doses", "interval_weeks") if therapy == "rituximab" else \
        ("dose_g_per_kg", "days_per_cycle", "interval_weeks", "cycles")
    out: dict[str, Any] = {}
    for key in wanted:
        found = re.search(_TEXT_DOSE[key], text, re.IGNORECASE)
        if found:
            number = float(found.group(1))
            out[key] = int(number) if key in ("days_per_cycle", "cycles", "doses") else number
    return out
