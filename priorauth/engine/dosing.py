"""Dosing weight, grams per cycle and HCPCS billing units (spec section 2, "Dosing weight").

Devine ideal body weight and the adjusted body weight IBW + 0.4 x (actual - IBW) are from
../shared/domain/ivig-payer-criteria.md section 1.2; the BMI from which the adjusted weight
applies is a policy parameter (`adjusted_weight_bmi`, baseline 30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from decimal import Decimal
from typing import Any, Optional

from ..core.numbers import round1
from .dispense import dispensing
from ..model.referral import Patient, Referral

CM_PER_INCH = 2.54
DEVINE_BASE_KG = {"male": 50.0, "female": 45.5}
DEVINE_KG_PER_INCH = 2.3
DEVINE_MIN_HEIGHT_CM = 60 * CM_PER_INCH  # the formula's floor
ADJUSTED_FRACTION = 0.4
DEFAULT_ADJUSTED_WEIGHT_BMI = 30.0  # when no policy applies (the baseline's threshold)


@lru_cache(maxsize=4096)
def _units(grams: float, unit: float) -> int:
    """Billing units for a dose: ceil(grams / unit), in decimal (doses repeat across a batch)."""
    return math.ceil(Decimal(repr(grams)) / Decimal(repr(unit)))


@lru_cache(maxsize=64)
def _unit_text(amount: float, of: str) -> str:
    return f"{amount:g} {of}"  # "0.5 g": one per product


def bmi(weight_kg: float, height_cm: float) -> float:
    return weight_kg / (height_cm / 100) ** 2


def ideal_body_weight(sex: str, height_cm: float) -> Optional[float]:
    if sex not in DEVINE_BASE_KG:
        return None
    return DEVINE_BASE_KG[sex] + DEVINE_KG_PER_INCH * (height_cm / CM_PER_INCH - 60)


@dataclass(slots=True)
class DosingWeight:
    kg: Optional[float]
    basis: Optional[str]  # "actual" or "adjusted"
    bmi: Optional[float] = None
    ibw: Optional[float] = None
    missing: list[str] = field(default_factory=list)
    note: Optional[str] = None  # a warning for the determination


def dosing_weight(patient: Patient, bmi_threshold: float = 30) -> DosingWeight:
    weight, height = patient.weight_kg, patient.height_cm
    if weight is None:
        return DosingWeight(None, None, missing=["patient's current weight in kg"])
    if height is None:
        # Without height, BMI is unknown and so is whether the adjusted weight applies.
        return DosingWeight(None, None, missing=["patient's height in cm (BMI decides actual or adjusted dosing weight)"])
    index = bmi(weight, height)
    if index < bmi_threshold:
        return DosingWeight(weight, "actual", index)
    if height < DEVINE_MIN_HEIGHT_CM:
        # Devine's formula is defined from 60 inches up (below ~102 cm it is negative): a child
        # or a very short adult is dosed on actual weight, and the prescriber is told so.
        return DosingWeight(weight, "actual", index, note=(
            f"BMI {index:.1f} would call for adjusted body weight, but ideal body weight (Devine) is not "
            f"defined under 60 inches (152 cm): actual weight used; confirm the dose with the prescriber"))
    ibw = ideal_body_weight(patient.sex, height)
    if ibw is None:
        return DosingWeight(None, None, index, missing=[
            f"patient's sex, female or male (BMI {index:.1f} needs ideal body weight, which depends on sex)"])
    # An adjusted weight above the actual one (very short patients) would overdose: cap it.
    adjusted = min(weight, ibw + ADJUSTED_FRACTION * (weight - ibw))
    return DosingWeight(adjusted, "adjusted", index, ibw)


@dataclass(slots=True)
class DosingCheck:
    status: str
    reason: str
    evidence: list = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dosing: Optional[dict] = None


def compute(referral: Referral, products: Any, therapy: Any, bmi_threshold: float, warnings: list[str],
            weight: Optional[DosingWeight] = None) -> Optional[dict]:
    """The determination's `dosing` object (spec section 3); None when it cannot be computed.

    `therapy` is the requested therapy's row of criteria/therapies.yaml: it says whether the
    dose is fixed (mg a dose) or by weight (g/kg a cycle)."""
    req = referral.request
    name = req.product
    found = products.find(name)
    if found is None:
        warnings.append(f"unknown product {name!r}: HCPCS code and billing units not computed")
        brand, product = name, None
    else:
        brand, product = found
        if (ambiguous := products.ambiguity(name)) is not None:
            warnings.append(ambiguous)
        if not product.usable_for(req.therapy):
            warnings.append(f"product {brand} is {product.therapy}, but the request is for {req.therapy}")
        if not product.verified:
            warnings.append(f"HCPCS code {product.hcpcs} for {brand} is not verified: {product.note or 'check the payer'}")
    hcpcs = product.hcpcs if product else None
    if therapy.fixed_dose:
        if req.dose_mg is None:
            return None
        units = math.ceil(req.dose_mg / product.unit.amount) if product and product.unit.of == "mg" else None
        return {"hcpcs": hcpcs, "product": brand, "dose_mg": req.dose_mg, "doses": req.doses,
                "billing_units_per_dose": units,
                "billing_unit": _unit_text(product.unit.amount, product.unit.of) if product else None,
                **_dispensed(products, product, req.dose_mg, units, warnings, "mg")}
    weight = weight or dosing_weight(referral.patient, bmi_threshold)
    if weight.note:
        warnings.append(weight.note)
    dose, days = req.dose_g_per_kg, req.days_per_cycle
    if weight.kg is None or dose is None:
        return None
    grams = round1(dose * weight.kg)
    unit = product.unit if product else None
    units = _units(grams, unit.amount) if unit is not None and unit.of == "g" else None
    return {
        "dosing_weight_kg": round1(weight.kg),
        "weight_basis": weight.basis,
        "grams_per_cycle": grams,
        "hcpcs": hcpcs,
        "billing_units_per_cycle": units,
        # extensions beyond spec section 3, for letters and worklists
        "product": brand,
        "dose_g_per_kg": dose,
        "actual_weight_kg": referral.patient.weight_kg,
        "bmi": round1(weight.bmi) if weight.bmi is not None else None,
        "ideal_body_weight_kg": round1(weight.ibw) if weight.ibw is not None else None,
        "billing_unit": _unit_text(unit.amount, unit.of) if unit is not None else None,
        "days_per_cycle": days,
        "grams_per_day": round1(grams / days) if days else None,
        "interval_weeks": req.interval_weeks,
        "cycles": req.cycles,
        # what is dispensed (spec rule "vials and NDCs"): billing_units_per_cycle stays the prescribed dose
        **_dispensed(products, product, grams, units, warnings, "g"),
    }


def _dispensed(products: Any, product: Any, dose: float, units: Optional[int], warnings: list[str], of: str) -> dict:
    """The dispensing keys (engine.dispense), all null when the product or its unit is unknown."""
    if product is None or product.unit.of != of:
        total = "dispensed_mg" if of == "mg" else "dispensed_grams"
        return {"vials": None, total: None, "dispensed_units": None, "waste_units": None, "waste_modifier": None}
    return dispensing(product, dose, units, products.waste_modifiers, warnings)


@lru_cache(maxsize=None)
def _evaluate_names() -> tuple:
    # evaluate imports this module, so its names are imported on first use; once, since an
    # import statement costs microseconds on every call.
    from .result import MET, NOT_MET, UNKNOWN, Evidence, kleene_all

    return MET, NOT_MET, UNKNOWN, Evidence, kleene_all


@lru_cache(maxsize=256, typed=True)
def _limit_checks(fixed_dose: bool, max_mg_per_dose, max_doses, max_g_per_kg_per_cycle, min_interval_weeks,
                  days_per_cycle) -> tuple:
    """The checks a policy's limits ask for, with their texts, worked out once per set of limits:
    (request field, label, lowest, highest, limit text, what to document)."""
    if fixed_dose:
        checks = [
            max_mg_per_dose and ("dose_mg", "dose (mg)", None, max_mg_per_dose,
                                 f"at most {max_mg_per_dose:g} mg a dose", "requested dose in mg"),
            max_doses and ("doses", "number of doses", None, max_doses,
                           f"at most {max_doses} doses", "number of doses requested"),
        ]
    else:
        lo, hi = days_per_cycle or (None, None)
        checks = [
            max_g_per_kg_per_cycle and ("dose_g_per_kg", "dose (g/kg per cycle)", None, max_g_per_kg_per_cycle,
                                        f"at most {max_g_per_kg_per_cycle:g} g/kg per cycle",
                                        "requested dose in g/kg per cycle"),
            min_interval_weeks and ("interval_weeks", "interval (weeks)", min_interval_weeks, None,
                                    f"at least {min_interval_weeks:g} weeks between cycles",
                                    "interval between cycles in weeks"),
            days_per_cycle and ("days_per_cycle", "days per cycle", lo, hi,
                                f"{lo}-{hi} days per cycle", "number of infusion days per cycle"),
        ]
    return tuple(c for c in checks if c)


@lru_cache(maxsize=1024, typed=True)
def _verdict(check: tuple, value: float) -> tuple[bool, str]:
    """Is a stated value within a limit, and the sentence saying so (the same few doses,
    intervals and day counts come back across a batch; they are validated positive, so
    equal values print alike)."""
    name, label, lowest, highest, limit_text, doc = check
    if (lowest is None or lowest <= value) and (highest is None or value <= highest):
        return True, f"{label} {value:g} within {limit_text}"
    return False, f"{label} {value:g} exceeds the policy's {limit_text}"


def assess(referral: Referral, products: Any, therapy: Any, limits: Any, warnings: list[str]) -> DosingCheck:
    """Compare the request with the policy's dose limits (a `dosing` node)."""
    MET, NOT_MET, UNKNOWN, Evidence, kleene_all = _evaluate_names()

    req = referral.request
    # One dosing weight serves both the output object and the limit check.
    weight = dosing_weight(referral.patient, limits.adjusted_weight_bmi)
    dosing = compute(referral, products, therapy, limits.adjusted_weight_bmi, warnings, weight)
    parts: list[tuple[str, str]] = []  # (status, sentence)
    missing: list[str] = []

    fixed = therapy.fixed_dose
    checks = _limit_checks(fixed, limits.max_mg_per_dose, limits.max_doses, limits.max_g_per_kg_per_cycle,
                           limits.min_interval_weeks, limits.days_per_cycle)
    for check in checks:
        value = getattr(req, check[0])
        if value is None:
            parts.append((UNKNOWN, f"{check[1]} not stated"))
            missing.append(check[5])
        else:
            within, sentence = _verdict(check, value)
            parts.append((MET if within else NOT_MET, sentence))
    if not fixed:
        if weight.kg is None:
            parts.append((UNKNOWN, "dosing weight cannot be computed"))
            missing.extend(weight.missing)
        else:
            # The dosing object, when there is one, has rounded this same weight already.
            kg = dosing["dosing_weight_kg"] if dosing else round1(weight.kg)
            parts.append((MET, f"dosing weight {kg:g} kg ({weight.basis})"))

    status = kleene_all([s for s, _ in parts]) if parts else MET
    shown = [t for s, t in parts if s == status] if status != MET else [t for _, t in parts]
    evidence = [Evidence("request", None, _request_summary(req, dosing, fixed))]
    return DosingCheck(status, "; ".join(shown) or "no dose limits in this policy", evidence, missing, dosing)


def _request_summary(req, dosing: Optional[dict], fixed_dose: bool) -> str:
    if fixed_dose:
        return f"{req.product} {_n(req.dose_mg)} mg x {_n(req.doses)} doses"
    text = f"{req.product} {_n(req.dose_g_per_kg)} g/kg over {_n(req.days_per_cycle)} days every {_n(req.interval_weeks)} weeks"
    if dosing:
        text += f" = {dosing['grams_per_cycle']:g} g per cycle ({dosing['weight_basis']} weight {dosing['dosing_weight_kg']:g} kg)"
    return text


def _n(value) -> str:  # noqa: ANN001
    """A number as a person writes it (4, not 4.0); '?' when the referral does not say."""
    return "?" if value is None else f"{value:g}"
