"""Three-valued evaluation of a policy tree against a referral (spec section 2).

Each leaf type is one function here: it looks at the referral's records, decides met /
not met / unknown, and says why with the records that decided it. Which leaves a policy
uses, and with what parameters, comes from `criteria/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any, Callable, Iterable, Optional

from dateutil.relativedelta import relativedelta

from . import policy as P
from .referral import Referral, Treatment

MET, NOT_MET, UNKNOWN = "met", "not_met", "unknown"


# ------------------------------------------------------------------ Kleene logic


def kleene_all(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if NOT_MET in statuses:
        return NOT_MET
    return UNKNOWN if UNKNOWN in statuses else MET


def kleene_any(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if MET in statuses:
        return MET
    return UNKNOWN if UNKNOWN in statuses else NOT_MET


def kleene_at_least(n: int, statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    met = statuses.count(MET)
    if met >= n:
        return MET
    return UNKNOWN if met + statuses.count(UNKNOWN) >= n else NOT_MET


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Evidence:
    kind: str  # finding, treatment, diagnosis, contraindication, assessment, patient, request
    index: Optional[int]
    summary: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index, "summary": self.summary}

    @property
    def where(self) -> str:
        """`treatments[1]`: the referral field the evidence comes from."""
        field = PLURAL.get(self.kind, self.kind)
        return f"{field}[{self.index}]" if self.index is not None else field


PLURAL = {"finding": "findings", "treatment": "treatments", "diagnosis": "diagnoses",
          "contraindication": "contraindications", "assessment": "assessments"}


@dataclass
class Result:
    node: Any
    status: str
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    children: list["Result"] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.node.id

    def walk(self, parent: Optional[str] = None):
        yield self, parent
        for child in self.children:
            yield from child.walk(self.node.id)


def _leaf(node, status, reason, evidence=(), missing=()) -> Result:
    return Result(node, status, reason, list(evidence), list(missing))


# ------------------------------------------------------------------ context


def weeks_between(start: Date, end: Date) -> float:
    return round((end - start).days / 7, 1)


def lasted_at_least(start: Date, end: Date, weeks: float) -> bool:
    # relativedelta keeps "exactly the minimum" on the boundary: 4 weeks = 28 days counts.
    return start + relativedelta(days=round(weeks * 7)) <= end


def humanize(value: str) -> str:
    return value.replace("_", " ")


def treatment_summary(t: Treatment, as_of: Date) -> str:
    parts = [t.drug]
    if t.route:
        parts.append(t.route)
    if t.dose:
        parts.append(t.dose)
    if t.start_date:
        end = t.end_date or as_of
        span = f"{t.start_date} to {t.end_date or 'present'} ({weeks_between(t.start_date, end):g} weeks)"
        parts.append(span)
    if t.outcome:
        parts.append(humanize(t.outcome))
    return ", ".join(parts)


@dataclass
class Context:
    referral: Referral
    criteria: P.Criteria
    policy: P.Policy
    warnings: list[str]
    # (index, treatment, generic name or None) once, so each leaf need not look names up again
    treatments: list[tuple[int, Treatment, Optional[str]]] = field(default_factory=list)
    dosing: Optional[dict] = None  # set by the dosing leaf

    @property
    def vocab(self) -> P.Vocabulary:
        return self.criteria.vocabulary

    @property
    def as_of(self) -> Date:
        return self.referral.date

    def members(self, class_id: str) -> list[tuple[int, Treatment, str]]:
        """Treatments that are systemic members of a drug class."""
        return [(i, t, g) for i, t, g in self.treatments if g and self.vocab.in_class(g, class_id, t.route)]

    def evidence(self, i: int, t: Treatment) -> Evidence:
        return Evidence("treatment", i, treatment_summary(t, self.as_of))


def make_context(referral: Referral, criteria: P.Criteria, policy: P.Policy, warnings: list[str]) -> Context:
    resolved = []
    for i, t in enumerate(referral.treatments):
        generic = criteria.vocabulary.generic(t.drug)
        if generic is None:
            warnings.append(f"unknown drug name {t.drug!r} (treatments[{i}]): not counted")
        resolved.append((i, t, generic))
    return Context(referral, criteria, policy, warnings, resolved)


# ------------------------------------------------------------------ leaves


def _diagnosis_covered(node: P.DiagnosisCovered, ctx: Context) -> Result:
    for i, d in enumerate(ctx.referral.diagnoses):
        if ctx.policy.covers(d.code):
            label = f"{d.code} {d.description}" if d.description else d.code
            return _leaf(node, MET, f"{label} is a covered diagnosis under {ctx.policy.title}",
                         [Evidence("diagnosis", i, label)])
    return _leaf(node, NOT_MET, "no diagnosis code on the referral is covered by this policy")


def _finding(node: P.FindingLeaf, ctx: Context) -> Result:
    kinds = " or ".join(humanize(k) for k in node.kinds)
    accepted = [(i, f) for i, f in enumerate(ctx.referral.findings) if f.kind in node.kinds]
    supporting = [(i, f) for i, f in accepted if f.supports_diagnosis]
    if supporting:
        ev = [Evidence("finding", i, _finding_summary(f)) for i, f in supporting]
        return _leaf(node, MET, f"confirmed by {len(ev)} finding(s) of an accepted kind ({kinds})", ev)
    others = sorted({humanize(f.kind) for f in ctx.referral.findings if f.supports_diagnosis})
    if accepted:
        why = f"the {', '.join(humanize(f.kind) for _, f in accepted)} on file do(es) not support the diagnosis"
    elif others:
        why = f"only {', '.join(others)} on file, which this policy does not accept as confirmation"
    else:
        why = "no diagnostic finding is documented"
    missing = node.document or f"a {kinds} report confirming the diagnosis"
    return _leaf(node, UNKNOWN, f"{why}; needs {kinds}", missing=[missing])


def _finding_summary(f) -> str:
    parts = [humanize(f.kind)]
    if f.date:
        parts.append(str(f.date))
    if f.result:
        parts.append(f.result)
    return ", ".join(parts)


def _drug_trial(node: P.DrugTrial, ctx: Context) -> Result:
    label = ctx.vocab.label(node.drug_class)
    wanted = " or ".join(humanize(o) for o in node.outcomes)
    qualifying: dict[str, list[Evidence]] = {}
    undecided: dict[str, list[str]] = {}
    near_misses: list[str] = []
    for i, t, generic in ctx.members(node.drug_class):
        if t.outcome is None:
            undecided.setdefault(generic, []).append(f"outcome of the {t.drug} trial (inadequate response, intolerance, flare on taper, response)")
            continue
        rule = node.outcomes.get(t.outcome)
        if rule is None:
            continue
        if rule.min_weeks:
            if t.start_date is None:
                undecided.setdefault(generic, []).append(f"start date of the {t.drug} trial")
                continue
            end = t.end_date or ctx.as_of
            if not lasted_at_least(t.start_date, end, rule.min_weeks):
                near_misses.append(f"{t.drug} lasted {weeks_between(t.start_date, end):g} weeks, "
                                   f"fewer than the {rule.min_weeks:g} required")
                continue
        qualifying.setdefault(generic, []).append(ctx.evidence(i, t))

    n = node.min_distinct
    noun = f"{n} different {label}s" if n > 1 else f"a {label}"
    if len(qualifying) >= n:
        ev = [e for evs in qualifying.values() for e in evs]
        return _leaf(node, MET, f"{', '.join(sorted(qualifying))}: {wanted} documented ({len(qualifying)} of {n} needed)", ev)
    open_ = {g: m for g, m in undecided.items() if g not in qualifying}
    if len(qualifying) + len(open_) >= n:
        missing = [m for ms in open_.values() for m in ms]
        return _leaf(node, UNKNOWN, f"{', '.join(sorted(open_))} could qualify as {noun} with {wanted}, "
                     f"but the chart lacks: {'; '.join(missing)}",
                     [e for evs in qualifying.values() for e in evs], missing)
    reason = f"no trial of {noun} ending in {wanted} is documented"
    if near_misses:
        reason += " (" + "; ".join(near_misses) + ")"
    elif qualifying:
        reason = f"only {len(qualifying)} of the {n} {label}s required ended in {wanted}"
    return _leaf(node, NOT_MET, reason, [e for evs in qualifying.values() for e in evs])


def _contraindication(node: P.ContraindicationLeaf, ctx: Context) -> Result:
    classes = ctx.vocab.members(node.drug_class)
    label = ctx.vocab.label(node.drug_class)
    for i, c in enumerate(ctx.referral.contraindications):
        generic = ctx.vocab.generic(c.drug) if c.drug else None
        by_drug = generic is not None and any(k in classes for k in ctx.vocab.drugs[generic].classes)
        if c.drug_class in classes or by_drug:
            what = c.drug or humanize(c.drug_class or "")
            when = f" (documented {c.documented_date})" if c.documented_date else ""
            return _leaf(node, MET, f"contraindication to {what} documented: {c.reason}{when}",
                         [Evidence("contraindication", i, f"{what}: {c.reason}")])
    return _leaf(node, NOT_MET, f"no contraindication to {label}s is documented")


def _clinical_course(node: P.ClinicalCourse, ctx: Context) -> Result:
    course = ctx.referral.clinical_course
    wanted = " or ".join(humanize(v) for v in node.values)
    if course in node.values:
        return _leaf(node, MET, f"the prescriber states the disease course is {humanize(course)}",
                     [Evidence("referral", None, f"clinical course: {humanize(course)}")])
    stated = f"stated as {humanize(course)}" if course else "not stated"
    return _leaf(node, NOT_MET, f"the clinical course is {stated}, not {wanted}")


def _therapy_ongoing(node: P.TherapyOngoing, ctx: Context) -> Result:
    on = ctx.as_of
    ev = []
    for cls in node.drug_classes:
        for i, t, _ in ctx.members(cls):
            started = t.start_date is None or t.start_date <= on
            current = t.end_date is None or t.end_date >= on
            if started and current:
                ev.append(ctx.evidence(i, t))
    labels = " or ".join(ctx.vocab.label(c) for c in node.drug_classes)
    if ev:
        return _leaf(node, MET, f"{len(ev)} {labels} therapy being taken on {on}", ev)
    return _leaf(node, NOT_MET, f"no {labels} is being taken on {on}")


def _first_line(node: P.FirstLine, ctx: Context) -> Result:
    return _leaf(node, MET, "this policy covers the therapy without a prior-therapy requirement")


def _dosing(node: P.Dosing, ctx: Context) -> Result:
    from .dosing import assess

    check = assess(ctx.referral, ctx.criteria.products, node, ctx.warnings)
    ctx.dosing = check.dosing
    return _leaf(node, check.status, check.reason, check.evidence, check.missing)


LEAVES: dict[type, Callable[[Any, Context], Result]] = {
    P.DiagnosisCovered: _diagnosis_covered,
    P.FindingLeaf: _finding,
    P.DrugTrial: _drug_trial,
    P.ContraindicationLeaf: _contraindication,
    P.ClinicalCourse: _clinical_course,
    P.TherapyOngoing: _therapy_ongoing,
    P.FirstLine: _first_line,
    P.Dosing: _dosing,
}


# ------------------------------------------------------------------ tree


def evaluate_node(node: Any, ctx: Context) -> Result:
    leaf = LEAVES.get(type(node))
    if leaf is not None:
        result = leaf(node, ctx)
        if not node.verified and result.status != NOT_MET:
            ctx.warnings.append(f"criterion {node.id!r} is not confirmed in a published source (verified: false)")
        return result
    kids = [evaluate_node(child, ctx) for child in P.children(node)]
    statuses = [k.status for k in kids]
    if isinstance(node, P.AllOf):
        status = kleene_all(statuses)
    elif isinstance(node, P.AnyOf):
        status = kleene_any(statuses)
    else:
        status = kleene_at_least(node.at_least, statuses)
    deciding = [k for k in kids if k.status == status]
    reason = _combined_reason(node, status, kids, deciding)
    # What to document matters only while the answer is still open or blocked elsewhere:
    # once an any_of is met, its unknown siblings need nothing.
    missing = [] if status == MET else _unique(m for k in kids for m in k.missing)
    if node.document and status == UNKNOWN:
        missing = [node.document]
    return Result(node, status, reason, [], missing, kids)


def _combined_reason(node, status, kids, deciding) -> str:
    names = ", ".join(k.node.label for k in deciding)
    if isinstance(node, P.AnyOf):
        return {MET: f"met through: {names}", UNKNOWN: f"could be met once documented: {names}",
                NOT_MET: "none of the options is met"}[status]
    if isinstance(node, P.AtLeast):
        met = sum(k.status == MET for k in kids)
        return f"{met} of the {node.at_least} required are met"
    return {MET: "every part is met", UNKNOWN: f"still to be documented: {names}",
            NOT_MET: f"not met: {names}"}[status]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
