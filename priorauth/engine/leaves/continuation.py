"""Leaves for continuation requests: the prior course, objective improvement, a taper attempt."""

from __future__ import annotations

from datetime import date as Date
from typing import Literal, Optional

from pydantic import Field

from ...core.dates import add_months
from ...model.referral import Treatment
from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf, lasted_at_least, weeks_between, weeks_text
from ..context import Context
from ..nodes import NodeBase, _Strict
from .registry import drug_class, register


class PriorCourse(NodeBase):
    """A documented earlier course of the requested therapy (continuation requests)."""

    type: Literal["prior_course"]
    drug_class: str
    min_weeks_since_last: Optional[float] = Field(default=None, ge=0, description="e.g. rituximab: 16 weeks")


class MeasureRule(_Strict):
    label: str
    better: Literal["lower", "higher"]
    min_change: Optional[float] = Field(default=None, ge=0, description="absolute change that counts")
    min_change_percent: Optional[float] = Field(default=None, ge=0, le=100)
    verified: bool = True


class Improvement(NodeBase):
    """Objective improvement from the baseline before the prior course to the latest value."""

    type: Literal["improvement"]
    drug_class: str = Field(description="the therapy whose first course start marks the baseline")
    measures: dict[str, MeasureRule] = Field(min_length=1)
    min_improved: int = Field(default=1, ge=1)


class TaperAttempt(NodeBase):
    """After `after_months` of therapy, an attempt to lower the dose or lengthen the interval."""

    type: Literal["taper_attempt"]
    drug_class: str
    after_months: int = Field(ge=0)


def _describe_prior_course(node: PriorCourse, vocab) -> str:
    text = f"an earlier course of {vocab.label(node.drug_class)}"
    return text + (f", the last at least {weeks_text(node.min_weeks_since_last)} ago" if node.min_weeks_since_last else "")


def _describe_improvement(node: Improvement, vocab) -> str:
    rules = []
    for r in node.measures.values():
        by = f"{r.min_change_percent:g}%" if r.min_change_percent else (f"{r.min_change:g}" if r.min_change else "any amount")
        rules.append(f"{r.label} {r.better} by {by}" + ("" if r.verified else " (unconfirmed)"))
    return (f"at least {node.min_improved} measure(s) better than before {vocab.label(node.drug_class)} began: "
            + "; ".join(rules))


def _courses(ctx: Context, drug_class: str) -> list[tuple[int, Treatment, str]]:
    """Courses of the requested therapy that started by the referral date, oldest first."""
    found = [(i, t, g) for i, t, g in ctx.members(drug_class) if t.start_date is None or t.start_date <= ctx.as_of]
    return sorted(found, key=lambda c: c[1].start_date or Date.min)


def _first_start(ctx: Context, drug_class: str) -> Optional[Date]:
    starts = [t.start_date for _, t, _ in _courses(ctx, drug_class) if t.start_date]
    return min(starts) if starts else None


def _undated_course(node, ctx: Context, label: str) -> Result:
    """Improvement and taper are both measured from the first course's start."""
    return _leaf(node, UNKNOWN, f"the start of the {label} course is not documented, so nothing can be measured from it",
                 missing=[f"start date of the first {label} course"])


@register(PriorCourse, describe=_describe_prior_course, classes=drug_class)
def _prior_course(node: PriorCourse, ctx: Context) -> Result:
    label = ctx.vocab.label(node.drug_class)
    courses = _courses(ctx, node.drug_class)
    if not courses:
        return _leaf(node, NOT_MET, f"no earlier course of {label} is documented: this is not a continuation")
    ev = [ctx.evidence(i, t) for i, t, _ in courses]
    if all(t.start_date is None for _, t, _ in courses):
        return _leaf(node, UNKNOWN, f"the earlier {label} course has no start date", ev,
                     [f"start date of the earlier {label} course"])
    if node.min_weeks_since_last:
        last = courses[-1][1]
        if last.end_date is None and last.outcome != "ongoing":
            return _leaf(node, UNKNOWN, f"the date of the last {label} infusion is not documented", ev,
                         [f"date of the last {label} infusion (end date of the course)"])
        last_day = last.end_date or ctx.as_of
        if not lasted_at_least(last_day, ctx.as_of, node.min_weeks_since_last):
            return _leaf(node, NOT_MET, f"only {weeks_between(last_day, ctx.as_of):g} weeks since the last {label} "
                         f"infusion; the policy requires at least {node.min_weeks_since_last:g}", ev)
    return _leaf(node, MET, f"{len(courses)} earlier course(s) of {label} documented", ev)


@register(Improvement, describe=_describe_improvement, classes=drug_class)
def _improvement(node: Improvement, ctx: Context) -> Result:
    start = _first_start(ctx, node.drug_class)
    label = ctx.vocab.label(node.drug_class)
    if start is None:
        return _undated_course(node, ctx, label)
    improved, worse, open_, ev = [], [], [], []
    for key, rule in node.measures.items():
        series = sorted(((a.date, i, a) for i, a in enumerate(ctx.referral.assessments)
                         if a.measure == key and a.value is not None and a.date <= ctx.as_of), key=lambda x: x[0])
        before = [x for x in series if x[0] <= start]
        after = [x for x in series if x[0] > start]
        if not before and not after:
            continue
        if not before or not after:
            open_.append(rule.label)
            continue
        (d0, i0, a0), (d1, i1, a1) = before[-1], after[-1]
        change = a0.value - a1.value if rule.better == "lower" else a1.value - a0.value
        pct = 100 * change / abs(a0.value) if a0.value else 0.0
        ok = change > 0 and (rule.min_change is None or change >= rule.min_change) \
            and (rule.min_change_percent is None or pct >= rule.min_change_percent)
        unit = f" {a0.unit}" if a0.unit else ""
        trend = f"{pct:+.0f}% better" if change >= 0 else "worse"
        summary = f"{rule.label} {a0.value:g}{unit} ({d0}) -> {a1.value:g}{unit} ({d1}): {trend}"
        ev.append(Evidence("assessment", i1, summary))
        (improved if ok else worse).append(summary)
        if ok and not rule.verified:
            ctx.warnings.append(f"improvement threshold for {rule.label} is not confirmed in a published source")
    n = node.min_improved
    if len(improved) >= n:
        return _leaf(node, MET, f"objective improvement since {label} began on {start}: {'; '.join(improved)}", ev)
    if len(improved) + len(open_) >= n:
        missing = [node.document or f"{', '.join(open_)} both before the {label} course began ({start}) and since"]
        return _leaf(node, UNKNOWN, f"improvement cannot be judged yet: {', '.join(open_)} lack a baseline "
                     f"before {start} or a value since", ev, missing)
    if not ev:
        measures = ", ".join(r.label for r in node.measures.values())
        return _leaf(node, UNKNOWN, f"no objective measure ({measures}) is documented before and after {start}",
                     missing=[node.document or f"objective measures ({measures}) before the {label} course and since"])
    return _leaf(node, NOT_MET, f"no measure improved enough since {start}: {'; '.join(worse)}", ev)


@register(TaperAttempt, describe=lambda node, vocab: f"after {node.after_months} months, an attempt to lower the dose or lengthen the interval", classes=drug_class)
def _taper_attempt(node: TaperAttempt, ctx: Context) -> Result:
    start = _first_start(ctx, node.drug_class)
    label = ctx.vocab.label(node.drug_class)
    if start is None:
        return _undated_course(node, ctx, label)
    due = add_months(start, node.after_months)
    if due > ctx.as_of:
        return _leaf(node, MET, f"not yet required: {label} began {start}; a taper attempt is expected from {due}")
    courses = _courses(ctx, node.drug_class)
    flared = [(i, t) for i, t, _ in courses if t.outcome == "flare_on_taper"]
    if flared:
        return _leaf(node, MET, "a taper was attempted and the disease flared", [ctx.evidence(i, t) for i, t in flared])
    req = ctx.referral.request
    steps = [(t.dose_g_per_kg, t.interval_weeks, ctx.evidence(i, t)) for i, t, _ in courses]
    steps.append((req.dose_g_per_kg, req.interval_weeks, Evidence("request", None, "this request")))
    for k in range(1, len(steps)):
        for j in range(k):
            (d0, w0, _), (d1, w1, e1) = steps[j], steps[k]
            if (d0 and d1 and d1 < d0) or (w0 and w1 and w1 > w0):
                return _leaf(node, MET, f"dose lowered or interval lengthened after {node.after_months} months "
                             f"({e1.summary})", [steps[j][2], e1])
    if any(d is None and w is None for d, w, _ in steps[:-1]):
        return _leaf(node, UNKNOWN, f"the {label} courses do not state their dose and interval",
                     [e for _, _, e in steps[:-1]],
                     [node.document or f"dose (g/kg) and interval (weeks) of each {label} course, to show the taper attempt"])
    return _leaf(node, NOT_MET, f"no attempt to lower the dose or lengthen the interval after {node.after_months} "
                 f"months of {label} (since {start})", [e for _, _, e in steps])
