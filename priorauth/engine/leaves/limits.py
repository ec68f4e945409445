"""Leaves about the request's size: dose limits per cycle or dose, and billing-unit caps."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

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


@register(Dosing, describe=_describe_dosing, lint=_lint_dosing)
def _dosing(node: Dosing, ctx: Context) -> Result:
    check = ctx.dosing()
    return _leaf(node, check.status, check.reason, list(check.evidence), list(check.missing))


@register(UnitCap, describe=lambda node, vocab: f"at most {node.max_units} billing units in any {node.per_days} days")
def _unit_cap(node: UnitCap, ctx: Context) -> Result:
    d, req = ctx.dosing().dosing, ctx.referral.request
    if ctx.therapy.fixed_dose:
        per_dose = d and d.get("billing_units_per_dose")
        units = per_dose * (req.doses or 1) if per_dose else None
        how = f"{per_dose} units x {req.doses or 1} doses" if per_dose else ""
    else:
        per_cycle = d and d.get("billing_units_per_cycle")
        if per_cycle and req.interval_weeks:
            # A cycle may start every interval: that many can fall in one window.
            cycles = -(-node.per_days // round(req.interval_weeks * 7))
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
