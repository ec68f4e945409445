"""Leaves about the request's size: dose limits per cycle or dose, and billing-unit caps."""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field

from ...core.numbers import round1
from ..dosing import _units as billing_units
from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf, weeks_text
from ..context import Context
from ..nodes import NodeBase
from .registry import register


class Dosing(NodeBase):
    """Dose limits; IVIG/SCIG use the g/kg fields, rituximab the mg fields."""

    type: Literal["dosing"]
    max_g_per_kg_per_cycle: Optional[float] = Field(default=None, gt=0)
    min_interval_weeks: Optional[float] = Field(default=None, gt=0)
    days_per_cycle: Optional[tuple[int, int]] = None
    adjusted_weight_bmi: float = Field(default=30, gt=0, description="BMI from which adjusted body weight is used")
    max_mg_per_dose: Optional[float] = Field(default=None, gt=0)
    max_doses: Optional[int] = Field(default=None, gt=0)


class UnitCap(NodeBase):
    """Billing units in any window of `per_days` days (e.g. 460 units per 28 days)."""

    type: Literal["unit_cap"]
    max_units: int = Field(gt=0)
    per_days: int = Field(default=28, gt=0)


def _describe_dosing(node: Dosing, vocab) -> str:
    limits = []
    if node.max_g_per_kg_per_cycle:
        limits.append(f"at most {node.max_g_per_kg_per_cycle:g} g/kg per cycle")
    if node.min_interval_weeks:
        limits.append(f"cycles at least {weeks_text(node.min_interval_weeks)} apart")
    if node.days_per_cycle:
        limits.append(f"{node.days_per_cycle[0]}-{node.days_per_cycle[1]} infusion days per cycle")
    if node.max_mg_per_dose:
        limits.append(f"at most {node.max_mg_per_dose:g} mg a dose")
    if node.max_doses:
        limits.append(f"at most {node.max_doses} doses")
    if node.max_g_per_kg_per_cycle:
        limits.append(f"adjusted body weight from BMI {node.adjusted_weight_bmi:g}")
    return "; ".join(limits) or "no dose limits"


def _lint_dosing(node: Dosing, vocab, safety) -> list[str]:
    if node.days_per_cycle and node.days_per_cycle[0] > node.days_per_cycle[1]:
        return ["days_per_cycle: minimum above maximum, can never be met"]
    return []


def _cycles_in_window(node: UnitCap, interval_weeks: float) -> int:
    """A cycle may start every interval: that many can fall in one window of the cap."""
    return -(-node.per_days // round(interval_weeks * 7))


def _units_at(ctx: Context, g_per_kg: float) -> tuple[Optional[float], Optional[int]]:
    """(grams, billing units) per cycle at another dose, on the same dosing weight and product."""
    d = ctx.dosing().dosing
    kg = d and d.get("dosing_weight_kg")
    if not kg:
        return None, None
    grams = round1(g_per_kg * kg)  # as the dosing object rounds it
    found = ctx.criteria.products.find(ctx.referral.request.product)
    unit = found[1].unit if found else None
    if unit is None or unit.of != "g":
        return grams, None
    return grams, billing_units(grams, unit.amount)


def _fit_dosing(node: Dosing, ctx: Context) -> Optional[dict]:
    """The request brought within the limits it exceeds (a change the prescriber can make)."""
    req, change = ctx.referral.request, {}
    if ctx.therapy.fixed_dose:
        if node.max_mg_per_dose and req.dose_mg and req.dose_mg > node.max_mg_per_dose:
            change["dose_mg"] = node.max_mg_per_dose
        if node.max_doses and req.doses and req.doses > node.max_doses:
            change["doses"] = node.max_doses
        words = [f"{change['dose_mg']:g} mg a dose" if "dose_mg" in change else "",
                 f"{change['doses']} doses" if "doses" in change else ""]
        return {"change": change, "text": " and ".join(w for w in words if w) + " fit the policy"} if change else None
    if node.max_g_per_kg_per_cycle and req.dose_g_per_kg and req.dose_g_per_kg > node.max_g_per_kg_per_cycle:
        change["dose_g_per_kg"] = node.max_g_per_kg_per_cycle
    if node.min_interval_weeks and req.interval_weeks and req.interval_weeks < node.min_interval_weeks:
        change["interval_weeks"] = node.min_interval_weeks
    if node.days_per_cycle and req.days_per_cycle:
        lo, hi = node.days_per_cycle
        if not lo <= req.days_per_cycle <= hi:
            change["days_per_cycle"] = min(max(req.days_per_cycle, lo), hi)
    if not change:
        return None
    words = []
    if "dose_g_per_kg" in change:
        grams, units = _units_at(ctx, change["dose_g_per_kg"])
        head = f"{units} units fit: " if units else ""
        words.append(f"{head}{change['dose_g_per_kg']:.1f} g/kg" + (f" ({grams:g} g per cycle)" if grams else ""))
    if "interval_weeks" in change:
        words.append(f"cycles every {change['interval_weeks']:g} weeks")
    if "days_per_cycle" in change:
        words.append(f"{change['days_per_cycle']} infusion days per cycle")
    return {"change": change, "text": "; ".join(words)}


@register(Dosing, describe=_describe_dosing, lint=_lint_dosing, fit=_fit_dosing)
def _dosing(node: Dosing, ctx: Context) -> Result:
    check = ctx.dosing()
    return _leaf(node, check.status, check.reason, list(check.evidence), list(check.missing))


def _fit_unit_cap(node: UnitCap, ctx: Context) -> Optional[dict]:
    """The largest dose whose units stay within the cap ("460 units fit: 1.9 g/kg")."""
    req = ctx.referral.request
    if ctx.therapy.fixed_dose:
        found = ctx.criteria.products.find(req.product)
        if not found or found[1].unit.of != "mg":
            return None
        per_dose = node.max_units // (req.doses or 1)
        mg = per_dose * found[1].unit.amount
        return {"change": {"dose_mg": mg}, "text": f"{per_dose * (req.doses or 1)} units fit: {mg:g} mg a dose"}
    if not req.interval_weeks or not req.dose_g_per_kg:
        return None
    cycles = _cycles_in_window(node, req.interval_weeks)
    dose = math.floor(req.dose_g_per_kg * 10) / 10
    while dose > 0:
        grams, units = _units_at(ctx, dose)
        if units is None:
            return None
        if units * cycles <= node.max_units:
            return {"change": {"dose_g_per_kg": dose},
                    "text": f"{units * cycles} units fit: {dose:.1f} g/kg ({grams:g} g per cycle)"}
        dose = round(dose - 0.1, 1)
    return None


@register(UnitCap, describe=lambda node, vocab: f"at most {node.max_units} billing units in any {node.per_days} days",
          fit=_fit_unit_cap)
def _unit_cap(node: UnitCap, ctx: Context) -> Result:
    d, req = ctx.dosing().dosing, ctx.referral.request
    if ctx.therapy.fixed_dose:
        per_dose = d and d.get("billing_units_per_dose")
        units = per_dose * (req.doses or 1) if per_dose else None
        how = f"{per_dose} units x {req.doses or 1} doses" if per_dose else ""
    else:
        per_cycle = d and d.get("billing_units_per_cycle")
        if per_cycle and req.interval_weeks:
            cycles = _cycles_in_window(node, req.interval_weeks)
            units, how = per_cycle * cycles, f"{per_cycle} units x {cycles} cycle(s)"
        else:
            units, how = None, ""
    if units is None:
        return _leaf(node, UNKNOWN, "billing units cannot be computed yet (see dosing)",
                     missing=["dose, dosing weight and interval, to count billing units"])
    ok = units <= node.max_units
    verdict = "within" if ok else "above"
    return _leaf(node, MET if ok else NOT_MET,
                 f"{units} billing units per {node.per_days} days ({how}), {verdict} the cap of {node.max_units}",
                 [Evidence("request", None, f"{units} units per {node.per_days} days")])
