"""Dosing weight, grams per cycle and HCPCS billing units (spec section 2, "Dosing weight").

Devine ideal body weight and the adjusted body weight IBW + 0.4 x (actual - IBW) are from
../shared/domain/ivig-payer-criteria.md section 1.2; the BMI from which the adjusted weight
applies is a policy parameter (`adjusted_weight_bmi`, baseline 30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Optional

from .referral import Patient, Referral

CM_PER_INCH = 2.54
DEVINE_BASE_KG = {"male": 50.0, "female": 45.5}
DEVINE_KG_PER_INCH = 2.3
ADJUSTED_FRACTION = 0.4


def round1(x: float) -> float:
    """Round half up to 0.1 (not banker's rounding: 136.45 g is 136.5 g)."""
    return float(Decimal(repr(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def bmi(weight_kg: float, height_cm: float) -> float:
    return weight_kg / (height_cm / 100) ** 2


def ideal_body_weight(sex: str, height_cm: float) -> Optional[float]:
    if sex not in DEVINE_BASE_KG:
        return None
    return DEVINE_BASE_KG[sex] + DEVINE_KG_PER_INCH * (height_cm / CM_PER_INCH - 60)


@dataclass
class DosingWeight:
    kg: Optional[float]
    basis: Optional[str]  # "actual" or "adjusted"
    bmi: Optional[float] = None
    ibw: Optional[float] = None
    missing: list[str] = field(default_factory=list)


def dosing_weight(patient: Patient, bmi_threshold: float = 30) -> DosingWeight:
    if patient.weight_kg is None:
        return DosingWeight(None, None, missing=["patient's current weight in kg"])
    if patient.height_cm is None:
        # Without height, BMI is unknown and so is whether the adjusted weight applies.
        return DosingWeight(None, None, missing=["patient's height in cm (BMI decides actual or adjusted dosing weight)"])
    index = bmi(patient.weight_kg, patient.height_cm)
    if index < bmi_threshold:
        return DosingWeight(patient.weight_kg, "actual", index)
    ibw = ideal_body_weight(patient.sex, patient.height_cm)
    if ibw is None:
        return DosingWeight(None, None, index, missing=[
            f"patient's sex, female or male (BMI {index:.1f} needs ideal body weight, which depends on sex)"])
    # An adjusted weight above the actual one (very short patients) would overdose: cap it.
    adjusted = min(patient.weight_kg, ibw + ADJUSTED_FRACTION * (patient.weight_kg - ibw))
    return DosingWeight(adjusted, "adjusted", index, ibw)


@dataclass
class DosingCheck:
    status: str
    reason: str
    evidence: list = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dosing: Optional[dict] = None


def compute(referral: Referral, products: Any, bmi_threshold: float, warnings: list[str],
            weight: Optional[DosingWeight] = None) -> Optional[dict]:
    """The determination's `dosing` object (spec section 3); None when it cannot be computed."""
    req = referral.request
    found = products.find(req.product)
    if found is None:
        warnings.append(f"unknown product {req.product!r}: HCPCS code and billing units not computed")
        brand, product = req.product, None
    else:
        brand, product = found
        if product.therapy != req.therapy:
            warnings.append(f"product {brand} is {product.therapy}, but the request is for {req.therapy}")
        if not product.verified:
            warnings.append(f"HCPCS code {product.hcpcs} for {brand} is not verified: {product.note or 'check the payer'}")
    hcpcs = product.hcpcs if product else None
    if req.therapy == "rituximab":
        if req.dose_mg is None:
            return None
        units = math.ceil(req.dose_mg / product.unit.amount) if product and product.unit.of == "mg" else None
        return {"hcpcs": hcpcs, "product": brand, "dose_mg": req.dose_mg, "doses": req.doses,
                "billing_units_per_dose": units,
                "billing_unit": f"{product.unit.amount:g} {product.unit.of}" if product else None}
    weight = weight or dosing_weight(referral.patient, bmi_threshold)
    if weight.kg is None or req.dose_g_per_kg is None:
        return None
    grams = round1(req.dose_g_per_kg * weight.kg)
    units = None
    if product and product.unit.of == "g":
        units = math.ceil(Decimal(repr(grams)) / Decimal(repr(product.unit.amount)))
    return {
        "dosing_weight_kg": round1(weight.kg),
        "weight_basis": weight.basis,
        "grams_per_cycle": grams,
        "hcpcs": hcpcs,
        "billing_units_per_cycle": units,
        # extensions beyond spec section 3, for letters and worklists
        "product": brand,
        "dose_g_per_kg": req.dose_g_per_kg,
        "actual_weight_kg": referral.patient.weight_kg,
        "bmi": round1(weight.bmi) if weight.bmi is not None else None,
        "ideal_body_weight_kg": round1(weight.ibw) if weight.ibw is not None else None,
        "billing_unit": f"{product.unit.amount:g} {product.unit.of}" if product else None,
        "days_per_cycle": req.days_per_cycle,
        "grams_per_day": round1(grams / req.days_per_cycle) if req.days_per_cycle else None,
        "interval_weeks": req.interval_weeks,
        "cycles": req.cycles,
    }


def assess(referral: Referral, products: Any, limits: Any, warnings: list[str]) -> DosingCheck:
    """Compare the request with the policy's dose limits (a `dosing` node)."""
    from .evaluate import MET, NOT_MET, UNKNOWN, Evidence, kleene_all

    req = referral.request
    # One dosing weight serves both the output object and the limit check.
    weight = dosing_weight(referral.patient, limits.adjusted_weight_bmi)
    dosing = compute(referral, products, limits.adjusted_weight_bmi, warnings, weight)
    parts: list[tuple[str, str]] = []  # (status, sentence)
    missing: list[str] = []

    def check(value, label, ok, limit_text, doc):
        if value is None:
            parts.append((UNKNOWN, f"{label} not stated"))
            missing.append(doc)
        elif ok(value):
            parts.append((MET, f"{label} {value:g} within {limit_text}"))
        else:
            parts.append((NOT_MET, f"{label} {value:g} exceeds the policy's {limit_text}"))

    if req.therapy == "rituximab":
        if limits.max_mg_per_dose:
            check(req.dose_mg, "dose (mg)", lambda v: v <= limits.max_mg_per_dose,
                  f"at most {limits.max_mg_per_dose:g} mg a dose", "requested rituximab dose in mg")
        if limits.max_doses:
            check(req.doses, "number of doses", lambda v: v <= limits.max_doses,
                  f"at most {limits.max_doses} doses", "number of rituximab doses requested")
    else:
        if limits.max_g_per_kg_per_cycle:
            check(req.dose_g_per_kg, "dose (g/kg per cycle)", lambda v: v <= limits.max_g_per_kg_per_cycle,
                  f"at most {limits.max_g_per_kg_per_cycle:g} g/kg per cycle", "requested dose in g/kg per cycle")
        if limits.min_interval_weeks:
            check(req.interval_weeks, "interval (weeks)", lambda v: v >= limits.min_interval_weeks,
                  f"at least {limits.min_interval_weeks:g} weeks between cycles", "interval between cycles in weeks")
        if limits.days_per_cycle:
            lo, hi = limits.days_per_cycle
            check(req.days_per_cycle, "days per cycle", lambda v: lo <= v <= hi,
                  f"{lo}-{hi} days per cycle", "number of infusion days per cycle")
        if weight.kg is None:
            parts.append((UNKNOWN, "dosing weight cannot be computed"))
            missing.extend(weight.missing)
        else:
            parts.append((MET, f"dosing weight {round1(weight.kg):g} kg ({weight.basis})"))

    status = kleene_all(s for s, _ in parts) if parts else MET
    shown = [t for s, t in parts if s == status] if status != MET else [t for _, t in parts]
    evidence = [Evidence("request", None, _request_summary(req, dosing))]
    return DosingCheck(status, "; ".join(shown) or "no dose limits in this policy", evidence, missing, dosing)


def _request_summary(req, dosing: Optional[dict]) -> str:
    if req.therapy == "rituximab":
        return f"{req.product} {req.dose_mg or '?'} mg x {req.doses or '?'} doses"
    text = f"{req.product} {req.dose_g_per_kg or '?'} g/kg over {req.days_per_cycle or '?'} days every {req.interval_weeks or '?'} weeks"
    if dosing:
        text += f" = {dosing['grams_per_cycle']:g} g per cycle ({dosing['weight_basis']} weight {dosing['dosing_weight_kg']:g} kg)"
    return text
