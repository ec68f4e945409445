"""Leaves about treatment history: trials and their outcomes, contraindications, the
disease course, therapy being taken now, and policies that need no prior therapy."""

from __future__ import annotations

from datetime import date as Date
from typing import Literal, Optional

from pydantic import Field

from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf, humanize, lasted_at_least, weeks_between, weeks_text
from ..context import Context, _options
from ..doses import mg_per_kg_day
from ..nodes import NodeBase, _Strict
from .registry import drug_class, register


class ClassRule(_Strict):
    min_weeks: Optional[float] = Field(default=None, ge=0)


class TrialOutcome(_Strict):
    min_weeks: Optional[float] = Field(default=None, ge=0)
    # Dose adequacy: a trial counts only at this starting dose or more, in prednisone
    # equivalents (drugs.yaml) per kg of actual weight per day.
    min_mg_per_kg_day: Optional[float] = Field(default=None, gt=0)
    # A class judged by its own length (rituximab: from the first infusion of its course).
    by_class: dict[str, ClassRule] = {}


class DrugTrial(NodeBase):
    type: Literal["drug_trial"]
    drug_class: str
    outcomes: dict[Literal["inadequate_response", "intolerance", "flare_on_taper", "response"], TrialOutcome]
    min_distinct: int = Field(default=1, ge=1, description="different drugs that must qualify")
    applies_from: Optional[Date] = Field(default=None, description="the class counts for referrals from this date (a new approval)")
    # A trial counts only when its dose or details say one of these (whole-body topical therapy).
    mentions: list[str] = []


class ContraindicationLeaf(NodeBase):
    type: Literal["contraindication"]
    drug_class: str


class ClinicalCourse(NodeBase):
    type: Literal["clinical_course"]
    values: list[Literal["stable", "active", "rapidly_progressive"]]


class TherapyOngoing(NodeBase):
    type: Literal["therapy_ongoing"]
    drug_classes: list[str] = Field(min_length=1)


class FirstLine(NodeBase):
    type: Literal["first_line"]


def _class_has_drugs(vocab, class_id: str) -> bool:
    wanted = vocab.members(class_id)
    return any(set(d.classes) & wanted for d in vocab.drugs.values())


def _lint_classes_have_drugs(node, vocab, safety) -> list[str]:
    classes = node.drug_classes if isinstance(node, TherapyOngoing) else [node.drug_class]
    return [f"can never be met: no drug in drugs.yaml belongs to class {c!r}"
            for c in classes if c in vocab.classes and not _class_has_drugs(vocab, c)]


def _lint_trial(node: DrugTrial, vocab, safety) -> list[str]:
    out = _lint_classes_have_drugs(node, vocab, safety)
    if node.drug_class in vocab.classes:
        wanted = vocab.members(node.drug_class)
        n_drugs = sum(1 for d in vocab.drugs.values() if set(d.classes) & wanted)
        if node.min_distinct > n_drugs:
            out.append(f"can never be met: needs {node.min_distinct} different drugs, "
                       f"class {node.drug_class!r} has {n_drugs}")
    return out


def _describe_trial(node: DrugTrial, vocab) -> str:
    parts = []
    for outcome, rule in node.outcomes.items():
        text = humanize(outcome)
        text = f"{text} after at least {weeks_text(rule.min_weeks)}" if rule.min_weeks else f"{text} (any length)"
        if rule.min_mg_per_kg_day:
            text += f" at {rule.min_mg_per_kg_day:g} mg/kg/day prednisone-equivalent or more"
        for cls, own in rule.by_class.items():
            if own.min_weeks:
                text += f" ({vocab.label(cls)}: {weeks_text(own.min_weeks)} from the first infusion)"
        parts.append(text)
    label = vocab.label(node.drug_class)
    who = f"{node.min_distinct} different {label}s" if node.min_distinct > 1 else f"a {label}"
    since = f" (counts from {node.applies_from})" if node.applies_from else ""
    return f"{who} ended in " + " or ".join(parts) + since


def _trial_texts(ctx: Context, node: DrugTrial) -> tuple[str, str]:
    """(class label, outcomes wanted) of a drug-trial leaf: made once per node and vocabulary
    (a referral asks for several trials, a batch for many referrals)."""
    key = (id(node), "trial")
    hit = ctx.memo.get(key)
    if hit is None or hit[0] is not node or hit[1] is not ctx.vocab:
        hit = ctx.memo[key] = (node, ctx.vocab, ctx.vocab.label(node.drug_class), _options(ctx, node, "outcomes"))
    return hit[2], hit[3]


def _mentions(node: DrugTrial, t) -> bool:
    text = f"{t.dose or ''} {t.details or ''}".casefold()
    return any(m.casefold() in text for m in node.mentions)


def _length_rule(ctx: Context, rule: TrialOutcome, generic: str, route) -> tuple[Optional[float], Optional[float]]:
    """(minimum weeks, course window in weeks or None) for this drug under this outcome rule."""
    for cls, own in rule.by_class.items():
        if ctx.vocab.in_class(generic, cls, route):
            return own.min_weeks, ctx.vocab.course_weeks(cls)
    return rule.min_weeks, None


def _course_start(ctx: Context, generic: str, index: int, window: float):
    """The first infusion of the course a treatment belongs to: earlier entries of the same drug
    starting within `window` weeks of the next one are the same course (spec: rituximab courses)."""
    starts = sorted(t.start_date for _, t, g in ctx.treatments if g == generic and t.start_date)
    mine = ctx.referral.treatments[index].start_date
    if mine is None:
        return None
    first = mine
    for s in reversed([s for s in starts if s < mine]):
        if weeks_between(s, first) > window:
            break
        first = s
    return first


def _dose_adequate(ctx: Context, minimum: float, i: int, t, generic: str, near_misses: list[str]) -> bool:
    """Dose adequacy: False (with the reason) when the stated dose is below the minimum; a dose
    that cannot be read counts as before, with a warning to document it (spec rule)."""
    per_kg = mg_per_kg_day(t.dose, ctx.referral.patient.weight_kg)
    factor = ctx.vocab.drugs[generic].prednisone_equivalent
    if per_kg is None or factor is None:
        ctx.warnings.append(f"dose of the {t.drug} trial (treatments[{i}]) not readable as a daily amount: "
                            f"document it (at least {minimum:g} mg/kg/day prednisone-equivalent)")
        return True
    equivalent = per_kg * factor
    if equivalent + 1e-9 < minimum:
        near_misses.append(f"{t.drug} at {equivalent:.2g} mg/kg/day prednisone-equivalent, "
                           f"below the {minimum:g} mg/kg/day of an adequate trial")
        return False
    return True


@register(DrugTrial, describe=_describe_trial, lint=_lint_trial, classes=drug_class)
def _drug_trial(node: DrugTrial, ctx: Context) -> Result:
    label, wanted = _trial_texts(ctx, node)
    qualifying: dict[str, list[Evidence]] = {}
    undecided: dict[str, list[str]] = {}
    near_misses: list[str] = []
    outcomes = node.outcomes
    if node.applies_from and ctx.as_of < node.applies_from:
        return _leaf(node, NOT_MET, f"{label} counts as prior therapy for referrals from {node.applies_from}")
    for i, t, generic in ctx.members(node.drug_class):
        outcome = t.outcome
        if outcome is None:
            undecided.setdefault(generic, []).append(f"outcome of the {t.drug} trial (inadequate response, intolerance, flare on taper, response)")
            continue
        rule = outcomes.get(outcome)
        if rule is None:
            continue
        if node.mentions and not _mentions(node, t):
            near_misses.append(f"{t.drug}: not documented as {' or '.join(node.mentions[:2])} therapy")
            continue
        min_weeks, course = _length_rule(ctx, rule, generic, t.route)
        if min_weeks:
            start = _course_start(ctx, generic, i, course) if course else t.start_date
            if start is None:
                undecided.setdefault(generic, []).append(f"start date of the {t.drug} trial")
                continue
            end = ctx.as_of if course else (t.end_date or ctx.as_of)
            if not lasted_at_least(start, end, min_weeks):
                since = "since the first infusion of its course" if course else "lasted"
                near_misses.append(f"{t.drug}: {weeks_between(start, end):g} weeks {since}, "
                                   f"fewer than the {min_weeks:g} required")
                continue
        if rule.min_mg_per_kg_day and not _dose_adequate(ctx, rule.min_mg_per_kg_day, i, t, generic, near_misses):
            continue
        qualifying.setdefault(generic, []).append(ctx.evidence(i, t))

    n = node.min_distinct
    if len(qualifying) >= n:
        ev = [e for evs in qualifying.values() for e in evs]
        count = f" ({len(qualifying)} different drugs; {n} required)" if n > 1 else ""
        return _leaf(node, MET, f"{', '.join(sorted(qualifying))}: {wanted} documented{count}", ev)
    noun = f"{n} different {label}s" if n > 1 else f"a {label}"
    open_ = {g: m for g, m in undecided.items() if g not in qualifying} if undecided else {}
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


@register(ContraindicationLeaf, describe=lambda node, vocab: f"a documented contraindication to {vocab.label(node.drug_class)}s", classes=drug_class)
def _contraindication(node: ContraindicationLeaf, ctx: Context) -> Result:
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


@register(ClinicalCourse, describe=lambda node, vocab: "the prescriber states the disease is " + " or ".join(humanize(v) for v in node.values))
def _clinical_course(node: ClinicalCourse, ctx: Context) -> Result:
    course = ctx.referral.clinical_course
    if course in node.values:
        return _leaf(node, MET, f"the prescriber states the disease course is {humanize(course)}",
                     [Evidence("referral", None, f"clinical course: {humanize(course)}")])
    stated = f"stated as {humanize(course)}" if course else "not stated"
    return _leaf(node, NOT_MET, f"the clinical course is {stated}, not {_options(ctx, node, 'values')}")


@register(TherapyOngoing, describe=lambda node, vocab: "taking a " + " or ".join(vocab.label(c) for c in node.drug_classes) + " on the referral date", lint=_lint_classes_have_drugs, classes=lambda node: list(node.drug_classes))
def _therapy_ongoing(node: TherapyOngoing, ctx: Context) -> Result:
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


@register(FirstLine, describe=lambda node, vocab: "no prior therapy is required")
def _first_line(node: FirstLine, ctx: Context) -> Result:
    return _leaf(node, MET, "this policy covers the therapy without a prior-therapy requirement")
