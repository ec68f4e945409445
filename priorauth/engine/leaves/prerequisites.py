"""Leaves for what must be on file before a drug is given, whatever the indication pathway:
a screening panel of lab tests (hepatitis B before rituximab), a documented disease severity
(PDAI in pemphigus), and the requested product being one of a list from a date (a product
labelled for the indication on the referral date).

The mechanisms only: which tests, which results, which thresholds and which products are
data in criteria/ (the rituximab policies).
"""

from __future__ import annotations

import re
from datetime import date as Date
from datetime import timedelta
from typing import Literal, Optional

from pydantic import Field

from ..context import Context
from ..nodes import NodeBase, _Strict
from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf
from .registry import register


def _key(text: str) -> str:
    """`Anti-HBc`, `anti_hbc`, `anti hbc` -> `antihbc`: measure and result spellings compared."""
    return re.sub(r"[\s_\-]+", "", text.casefold())


def _latest(ctx: Context, measures: list[str], numeric: Optional[bool] = None) -> Optional[tuple[int, object]]:
    """(index, assessment) of the latest assessment of these measures on or before the date."""
    keys = {_key(m) for m in measures}
    found = [(a.date, i, a) for i, a in enumerate(ctx.referral.assessments)
             if _key(a.measure) in keys and a.date <= ctx.as_of
             and (numeric is None or (a.value is not None) == numeric)]
    if not found:
        return None
    _, i, a = max(found, key=lambda x: (x[0], x[1]))
    return i, a


def _shown(a) -> str:
    what = a.result if a.result is not None else format(a.value, "g")
    return f"{a.measure} {what}{' ' + a.unit if a.unit and a.result is None else ''} on {a.date}"


# ------------------------------------------------------------------ lab screening


class LabTest(_Strict):
    label: str
    measures: list[str] = Field(min_length=1, description="assessment measure keys that report this test")
    reactive_at: Optional[float] = Field(default=None, description="a numeric result at or above this is reactive (index, S/CO)")
    verified: bool = True


class LabScreening(NodeBase):
    """Every listed test documented with a readable result within `within_days` of the date."""

    type: Literal["lab_screening"]
    tests: dict[str, LabTest] = Field(min_length=1)
    within_days: int = Field(gt=0)
    negative: list[str] = Field(default=["negative", "nonreactive", "not detected", "undetectable"],
                                description="qualitative results read as negative (compared without case, spaces, dashes)")
    positive: list[str] = Field(default=["positive", "reactive", "detected"])
    positive_status: Literal["met", "not_met", "unknown"] = Field(
        default="met", description="what a documented positive result makes the criterion (screening was done)")
    on_positive: str = Field(description="what a positive result calls for (the warning and the reason)")
    managed_by: list[str] = Field(default=[], description="drug names that, being taken, show a positive result is managed")
    text: list[str] = Field(default=[], description="phrases in findings that show the tests were mentioned but not recorded")


def _read(test: LabTest, node: LabScreening, a) -> Optional[str]:
    """'negative', 'positive' or None (cannot be read)."""
    if a.result is not None:
        r = _key(a.result)
        # Negative words first: "nonreactive" contains "reactive".
        if any(r.startswith(_key(w)) for w in node.negative):
            return "negative"
        if any(r.startswith(_key(w)) for w in node.positive):
            return "positive"
        return None
    if a.value is not None and test.reactive_at is not None:
        return "positive" if a.value >= test.reactive_at else "negative"
    return None


def _describe_lab(node: LabScreening, vocab) -> str:
    tests = " and ".join(t.label for t in node.tests.values())
    return f"{tests} documented within {node.within_days} days of the referral date"


def _lint_lab(node: LabScreening, vocab, safety) -> list[str]:
    overlap = {_key(w) for w in node.negative} & {_key(w) for w in node.positive}
    return [f"negative and positive both list {', '.join(sorted(overlap))}"] if overlap else []


@register(LabScreening, describe=_describe_lab, lint=_lint_lab)
def _lab_screening(node: LabScreening, ctx: Context) -> Result:
    since = ctx.as_of - timedelta(days=node.within_days)
    ev: list[Evidence] = []
    negative, positive, open_, missing = [], [], [], []
    for test in node.tests.values():
        hit = _latest(ctx, test.measures)
        if hit is None:
            open_.append(f"{test.label}: not documented")
            missing.append(f"{test.label} result from the {node.within_days} days before the referral date")
            continue
        i, a = hit
        ev.append(Evidence("assessment", i, _shown(a)))
        if a.date < since:
            open_.append(f"{test.label}: last result {a.date}, more than {node.within_days} days before {ctx.as_of}")
            missing.append(f"a {test.label} result from the {node.within_days} days before the referral date (last: {a.date})")
            continue
        read = _read(test, node, a)
        if read is None:
            shown = a.result if a.result is not None else format(a.value, "g")
            open_.append(f"{test.label}: result {shown!r} cannot be read as negative or positive")
            missing.append(f"{test.label} result stated as negative or positive (on file: {shown!r})")
            continue
        (positive if read == "positive" else negative).append(f"{test.label} {read} ({a.date})")
    if open_:
        reason = "screening incomplete: " + "; ".join(open_)
        mentions = [f"finding {j + 1}" for j, f in enumerate(ctx.referral.findings)
                    if f.result and any(w.casefold() in f.result.casefold() for w in node.text)]
        if mentions and len(ev) < len(node.tests):
            reason += (f" ({', '.join(mentions)} mentions the screening: record each test's result as an "
                       "assessment with its date)")
        return _leaf(node, UNKNOWN, reason, ev, [node.document] if node.document else missing)
    if not positive:
        return _leaf(node, MET, "screening documented: " + "; ".join(negative), ev)
    taken = [t.drug for t in ctx.referral.treatments
             if _key(t.drug) in {_key(d) for d in node.managed_by}
             and (t.end_date is None or t.end_date >= ctx.as_of)
             and (t.start_date is None or t.start_date <= ctx.as_of)]
    done = "; ".join(positive + negative)
    if taken:
        return _leaf(node, {"met": MET, "not_met": NOT_MET, "unknown": UNKNOWN}[node.positive_status],
                     f"screening documented: {done}; being managed ({', '.join(taken)} on {ctx.as_of})", ev)
    ctx.warnings.append(f"{done}: {node.on_positive}")
    status = {"met": MET, "not_met": NOT_MET, "unknown": UNKNOWN}[node.positive_status]
    return _leaf(node, status, f"screening documented: {done}. {node.on_positive}", ev,
                 [node.on_positive] if status == UNKNOWN else None)


# ------------------------------------------------------------------ severity


class SeverityScore(_Strict):
    label: str
    measures: list[str] = Field(min_length=1)
    min_value: float = Field(description="the score at or above which the disease counts as severe enough")
    verified: bool = True


class Severity(NodeBase):
    """A severity score at or above its threshold, or a physician's grading among `accepted`."""

    type: Literal["severity"]
    scores: dict[str, SeverityScore] = {}
    grade_measures: list[str] = Field(default=[], description="assessment measures whose qualitative result is a grading")
    accepted: list[str] = Field(default=[], description="gradings that meet (e.g. moderate, severe)")
    rejected: list[str] = Field(default=[], description="gradings that do not (e.g. mild)")
    within_days: Optional[int] = Field(default=None, gt=0, description="how recent the measure must be")


def _describe_severity(node: Severity, vocab) -> str:
    parts = [f"{s.label} at least {s.min_value:g}" + ("" if s.verified else " (threshold unconfirmed)")
             for s in node.scores.values()]
    if node.accepted:
        parts.append("a documented grading of " + " or ".join(node.accepted))
    when = f", within {node.within_days} days" if node.within_days else ""
    return " or ".join(parts) + when


def _lint_severity(node: Severity, vocab, safety) -> list[str]:
    out = []
    if not node.scores and not (node.grade_measures and node.accepted):
        out.append("can never be met: no score and no accepted grading")
    overlap = {_key(w) for w in node.accepted} & {_key(w) for w in node.rejected}
    if overlap:
        out.append(f"accepted and rejected both list {', '.join(sorted(overlap))}")
    return out


@register(Severity, describe=_describe_severity, lint=_lint_severity)
def _severity(node: Severity, ctx: Context) -> Result:
    since = ctx.as_of - timedelta(days=node.within_days) if node.within_days else Date.min
    met, below, open_, ev = [], [], [], []
    for score in node.scores.values():
        hit = _latest(ctx, score.measures, numeric=True)
        if hit is None:
            continue
        i, a = hit
        if a.date < since:
            open_.append(f"{score.label} {a.value:g} is from {a.date}, more than {node.within_days} days ago")
            continue
        ev.append(Evidence("assessment", i, _shown(a)))
        if a.value >= score.min_value:
            met.append(f"{score.label} {a.value:g} ({a.date}), at least {score.min_value:g}")
        else:
            below.append(f"{score.label} {a.value:g} ({a.date}) is below {score.min_value:g}")
    if node.grade_measures:
        hit = _latest(ctx, node.grade_measures, numeric=False)
        if hit is not None:
            i, a = hit
            grade = _key(a.result)
            if a.date < since:
                open_.append(f"the grading '{a.result}' is from {a.date}, more than {node.within_days} days ago")
            elif grade in {_key(g) for g in node.accepted}:
                ev.append(Evidence("assessment", i, _shown(a)))
                met.append(f"graded {a.result} ({a.date})")
            elif grade in {_key(g) for g in node.rejected}:
                ev.append(Evidence("assessment", i, _shown(a)))
                below.append(f"graded {a.result} ({a.date})")
            else:
                ev.append(Evidence("assessment", i, _shown(a)))
                open_.append(f"the grading '{a.result}' is not one of {', '.join(node.accepted + node.rejected)}")
    if met:
        return _leaf(node, MET, "severity documented: " + "; ".join(met), ev)
    want = _describe_severity(node, None)
    if open_:
        return _leaf(node, UNKNOWN, "severity cannot be judged: " + "; ".join(open_ + below), ev,
                     [node.document or f"current disease severity: {want}"])
    if below:
        return _leaf(node, NOT_MET, "severity below the policy's threshold: " + "; ".join(below), ev)
    return _leaf(node, UNKNOWN, "no disease severity is documented", ev,
                 [node.document or f"current disease severity: {want}"])


# ------------------------------------------------------------------ product list


class ProductIn(NodeBase):
    """The requested product is listed, and the referral date is on or after its date (if any)."""

    type: Literal["product_in"]
    products: dict[str, Optional[Date]] = Field(min_length=1, description="brand -> first date it counts (None: always)")


def _describe_product_in(node: ProductIn, vocab) -> str:
    return "the product is one of " + ", ".join(f"{p} (from {d})" if d else p for p, d in node.products.items())


def _fit_product_in(node: ProductIn, ctx: Context) -> Optional[dict]:
    """The listed products that count on the referral date: a product the prescriber can change."""
    fits = [p for p, since in node.products.items() if since is None or since <= ctx.as_of]
    if not fits:
        return None
    return {"change": {"product": fits}, "text": f"a product that counts on {ctx.as_of} fits: {', '.join(fits)}"}


@register(ProductIn, describe=_describe_product_in, fit=_fit_product_in)
def _product_in(node: ProductIn, ctx: Context) -> Result:
    requested = ctx.referral.request.product
    found = ctx.criteria.products.find(requested)
    brand = found[0] if found else requested
    listed = {ctx.criteria.products.find(p)[0] if ctx.criteria.products.find(p) else p: (p, d)
              for p, d in node.products.items()}
    ev = [Evidence("request", None, f"product {brand}")]
    if brand not in listed:
        return _leaf(node, NOT_MET, f"{brand} is not one of {', '.join(node.products)}", ev)
    _, since = listed[brand]
    if since is not None and ctx.as_of < since:
        return _leaf(node, NOT_MET, f"{brand} counts only from {since}; the referral is dated {ctx.as_of}", ev)
    return _leaf(node, MET, f"{brand} is one of {', '.join(node.products)}" + (f" (counts from {since})" if since else ""), ev)
