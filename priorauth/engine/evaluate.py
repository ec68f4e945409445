"""Three-valued evaluation of a policy tree against a referral (spec section 2).

Each leaf type is one function here: it looks at the referral's records, decides met /
not met / unknown, and says why with the records that decided it. Which leaves a policy
uses, and with what parameters, comes from `criteria/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any, Callable, Iterable, Optional, Sequence

from dateutil.relativedelta import relativedelta

from ..criteria import policy as P
from .dosing import assess as assess_dosing
from ..model.referral import Referral, Treatment
from .safety import facts as safety_facts, screen as safety_screen

MET, NOT_MET, UNKNOWN = "met", "not_met", "unknown"


# ------------------------------------------------------------------ Kleene logic


def kleene_all(statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    if NOT_MET in statuses:
        return NOT_MET
    return UNKNOWN if UNKNOWN in statuses else MET


def kleene_any(statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    if MET in statuses:
        return MET
    return UNKNOWN if UNKNOWN in statuses else NOT_MET


def kleene_at_least(n: int, statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    met = statuses.count(MET)
    if met >= n:
        return MET
    return UNKNOWN if met + statuses.count(UNKNOWN) >= n else NOT_MET


# ------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
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


@dataclass(slots=True)
class Result:
    node: Any
    status: str
    reason: str
    # A leaf has no children, and most results no evidence or nothing missing: those share the
    # empty tuple rather than hold an empty list each (a batch keeps many results for the
    # garbage collector to scan).
    evidence: Sequence[Evidence] = ()
    missing: Sequence[str] = ()
    children: Sequence["Result"] = ()

    @property
    def id(self) -> str:
        return self.node.id

    def walk(self) -> list[tuple["Result", Optional[str]]]:
        """Every result depth first, with its parent's id (a list: the output walks it twice)."""
        out: list[tuple[Result, Optional[str]]] = [(self, None)]
        _walk_children(self, out)
        return out


def _walk_children(r: Result, out: list) -> None:
    node_id = r.node.id
    for c in r.children:
        out.append((c, node_id))
        if c.children:  # most results are leaves
            _walk_children(c, out)


def _leaf(node, status, reason, evidence: Optional[list] = None, missing: Optional[list] = None) -> Result:
    # The leaves pass lists made for the result, so they are kept, not copied.
    return Result(node, status, reason, evidence or (), missing or ())


# ------------------------------------------------------------------ context


def weeks_between(start: Date, end: Date) -> float:
    return round((end - start).days / 7, 1)


def lasted_at_least(start: Date, end: Date, weeks: float) -> bool:
    # Weeks are exact day counts (4 weeks = 28 days, and exactly the minimum counts);
    # relativedelta is kept for calendar months and years, where day counts vary.
    return (end - start).days >= round(weeks * 7)


def humanize(value: str) -> str:
    return value.replace("_", " ")


def _options(ctx: Context, node: Any, field: str, sep: str = " or ") -> str:
    """`muscle biopsy or emg`: a list field of the node, humanized and joined. It depends on the
    node alone, so it is made once and kept with the policy (with the node, so that its id
    cannot be taken by another object while the entry lives)."""
    memo = ctx.memo
    key = (id(node), field, sep)
    hit = memo.get(key)
    if hit is None or hit[0] is not node:
        hit = memo[key] = (node, sep.join([humanize(v) for v in getattr(node, field)]))
    return hit[1]


def treatment_summary(t: Treatment, as_of: Date) -> str:
    parts = [t.drug]
    if t.route:
        parts.append(t.route)
    if t.dose:
        parts.append(t.dose)
    start, stop = t.start_date, t.end_date
    if start:
        span = f"{start} to {stop or 'present'} ({weeks_between(start, stop or as_of):g} weeks)"
        parts.append(span)
    if t.outcome:
        parts.append(humanize(t.outcome))
    return ", ".join(parts)


NO_LIMITS = P.Dosing(id="dosing", label="dosing", type="dosing")


@dataclass
class Context:
    referral: Referral
    criteria: P.Criteria
    policy: P.Policy
    warnings: list[str]
    # (index, treatment, generic name or None) once, so each leaf need not look names up again
    treatments: list[tuple[int, Treatment, Optional[str]]] = field(default_factory=list)
    _dosing: Any = None
    _facts: Any = None
    _members: dict = field(default_factory=dict)
    _evidence: dict = field(default_factory=dict)  # treatment index -> Evidence
    # Plain attributes, not properties: the leaves ask for them often.
    verified: frozenset = field(init=False)  # policy.verified_nodes: is_verified, once per policy
    vocab: P.Vocabulary = field(init=False)
    as_of: Date = field(init=False)
    memo: dict = field(init=False)  # policy._memo (see _options)

    def __post_init__(self) -> None:
        self.verified = self.policy.verified_nodes
        self.vocab = self.criteria.vocabulary
        self.as_of = self.referral.date
        self.memo = self.policy._memo

    def dosing(self):
        """The dosing computation, once per referral (dosing and unit-cap leaves share it)."""
        if self._dosing is None:
            limits = self.policy.dosing_node(self.referral.request.request_type) or NO_LIMITS
            self._dosing = assess_dosing(self.referral, self.criteria.products, limits, self.warnings)
        return self._dosing

    def facts(self):
        """What safety rules look at (safety leaves and the safety screen share it)."""
        if self._facts is None:
            self._facts = safety_facts(self.referral, self.vocab)
        return self._facts

    def members(self, class_id: str) -> list[tuple[int, Treatment, str]]:
        """Treatments that are systemic members of a drug class (asked by several leaves: cached)."""
        found = self._members.get(class_id)
        if found is None:
            found = self._members[class_id] = [(i, t, g) for i, t, g in self.treatments
                                               if g and self.vocab.in_class(g, class_id, t.route)]
        return found

    def evidence(self, i: int, t: Treatment) -> Evidence:
        # Several leaves may cite the same treatment: one (immutable) Evidence serves them all.
        found = self._evidence.get(i)
        if found is None:
            found = self._evidence[i] = Evidence("treatment", i, treatment_summary(t, self.as_of))
        return found


def resolve_treatments(referral: Referral, vocab: P.Vocabulary, warnings: list[str]) -> list:
    """(index, treatment, generic name or None) for each treatment; unknown names are warned about."""
    resolved = []
    for i, t in enumerate(referral.treatments):
        generic = vocab.generic(t.drug)
        if generic is None:
            warnings.append(f"unknown drug name {t.drug!r} (treatments[{i}]): not counted")
        resolved.append((i, t, generic))
    return resolved


def make_context(referral: Referral, criteria: P.Criteria, policy: P.Policy, warnings: list[str]) -> Context:
    return Context(referral, criteria, policy, warnings, resolve_treatments(referral, criteria.vocabulary, warnings))


# ------------------------------------------------------------------ leaves


def _diagnosis_covered(node: P.DiagnosisCovered, ctx: Context) -> Result:
    for i, d in enumerate(ctx.referral.diagnoses):
        if ctx.policy.covers(d.code):
            label = f"{d.code} {d.description}" if d.description else d.code
            return _leaf(node, MET, f"{label} is a covered diagnosis under {ctx.policy.title}",
                         [Evidence("diagnosis", i, label)])
    return _leaf(node, NOT_MET, "no diagnosis code on the referral is covered by this policy")


def _finding(node: P.FindingLeaf, ctx: Context) -> Result:
    kinds = _options(ctx, node, "kinds")
    accepted, ev = [], []
    for i, f in enumerate(ctx.referral.findings):
        if f.kind in node.kinds:
            accepted.append(f)
            if f.supports_diagnosis:
                ev.append(Evidence("finding", i, _finding_summary(f)))
    if ev:
        return _leaf(node, MET, f"confirmed by {len(ev)} finding(s) of an accepted kind ({kinds})", ev)
    if accepted:
        why = f"the {', '.join(humanize(f.kind) for f in accepted)} on file do(es) not support the diagnosis"
    elif others := sorted({humanize(f.kind) for f in ctx.referral.findings if f.supports_diagnosis}):
        why = f"only {', '.join(others)} on file, which this policy does not accept as confirmation"
    else:
        why = "no diagnostic finding is documented"
    missing = node.document or f"a {kinds} report confirming the diagnosis"
    return _leaf(node, UNKNOWN, f"{why}; needs {kinds}", missing=[missing])


def _finding_summary(f) -> str:
    parts = [humanize(f.kind)]
    if day := f.date:
        parts.append(str(day))
    if result := f.result:
        parts.append(result)
    return ", ".join(parts)


def _trial_texts(ctx: Context, node: P.DrugTrial) -> tuple[str, str]:
    """(class label, outcomes wanted) of a drug-trial leaf: made once per node and vocabulary
    (a referral asks for several trials, a batch for many referrals)."""
    key = (id(node), "trial")
    hit = ctx.memo.get(key)
    if hit is None or hit[0] is not node or hit[1] is not ctx.vocab:
        hit = ctx.memo[key] = (node, ctx.vocab, ctx.vocab.label(node.drug_class), _options(ctx, node, "outcomes"))
    return hit[2], hit[3]


def _drug_trial(node: P.DrugTrial, ctx: Context) -> Result:
    label, wanted = _trial_texts(ctx, node)
    qualifying: dict[str, list[Evidence]] = {}
    undecided: dict[str, list[str]] = {}
    near_misses: list[str] = []
    outcomes = node.outcomes
    for i, t, generic in ctx.members(node.drug_class):
        outcome = t.outcome
        if outcome is None:
            undecided.setdefault(generic, []).append(f"outcome of the {t.drug} trial (inadequate response, intolerance, flare on taper, response)")
            continue
        rule = outcomes.get(outcome)
        if rule is None:
            continue
        min_weeks = rule.min_weeks
        if min_weeks:
            start = t.start_date
            if start is None:
                undecided.setdefault(generic, []).append(f"start date of the {t.drug} trial")
                continue
            end = t.end_date or ctx.as_of
            if not lasted_at_least(start, end, min_weeks):
                near_misses.append(f"{t.drug} lasted {weeks_between(start, end):g} weeks, "
                                   f"fewer than the {min_weeks:g} required")
                continue
        qualifying.setdefault(generic, []).append(ctx.evidence(i, t))

    n = node.min_distinct
    if len(qualifying) >= n:
        ev = [e for evs in qualifying.values() for e in evs]
        return _leaf(node, MET, f"{', '.join(sorted(qualifying))}: {wanted} documented ({len(qualifying)} of {n} needed)", ev)
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
    if course in node.values:
        return _leaf(node, MET, f"the prescriber states the disease course is {humanize(course)}",
                     [Evidence("referral", None, f"clinical course: {humanize(course)}")])
    stated = f"stated as {humanize(course)}" if course else "not stated"
    return _leaf(node, NOT_MET, f"the clinical course is {stated}, not {_options(ctx, node, 'values')}")


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
    check = ctx.dosing()
    return _leaf(node, check.status, check.reason, list(check.evidence), list(check.missing))


def _unit_cap(node: P.UnitCap, ctx: Context) -> Result:
    d, req = ctx.dosing().dosing, ctx.referral.request
    if req.therapy == "rituximab":
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


def _brand(ctx: Context, name: str) -> str:
    found = ctx.criteria.products.find(name)
    return found[0] if found else name


def _product_preferred(node: P.ProductPreferred, ctx: Context) -> Result:
    req = ctx.referral.request
    product = _brand(ctx, req.product)
    preferred = [_brand(ctx, p) for p in node.products]
    if product in [_brand(ctx, p) for p in node.excluded]:
        return _leaf(node, NOT_MET, f"{product} is not covered by this payer; use one of: {', '.join(preferred)}")
    if product in preferred:
        return _leaf(node, MET, f"{product} is a preferred product",
                     [Evidence("request", None, f"product {product}")])
    for i, t in enumerate(ctx.referral.treatments):
        tried = _brand(ctx, t.drug)
        if tried in preferred and t.outcome in ("inadequate_response", "intolerance"):
            return _leaf(node, MET, f"{product} is not preferred, but preferred {tried} was tried first "
                         f"({humanize(t.outcome)})", [ctx.evidence(i, t)])
        if tried == product and req.request_type == "continuation":
            return _leaf(node, MET, f"{product} continues an established course", [ctx.evidence(i, t)])
    return _leaf(node, NOT_MET, f"{product} is not a preferred product and no preferred product "
                 f"({', '.join(preferred)}) was tried first")


def _prescriber_specialty(node: P.PrescriberSpecialty, ctx: Context) -> Result:
    specialty = ctx.referral.prescriber.specialty
    wanted = " or ".join(node.specialties)
    if not specialty:
        return _leaf(node, UNKNOWN, f"the prescriber's specialty is not stated (needs {wanted})",
                     missing=[node.document or f"the prescriber's specialty ({wanted})"])
    if any(s.casefold() in specialty.casefold() for s in node.specialties):
        return _leaf(node, MET, f"prescribed by {specialty}", [Evidence("prescriber", None, specialty)])
    return _leaf(node, NOT_MET, f"prescriber specialty is {specialty}; the policy requires {wanted}")


def _site_of_care(node: P.SiteOfCare, ctx: Context) -> Result:
    site = ctx.referral.request.site_of_care
    if site is None:
        return _leaf(node, UNKNOWN, "the site of care is not stated", missing=["the planned site of care"])
    if site in node.allowed:
        return _leaf(node, MET, f"{humanize(site)} is an approved site of care",
                     [Evidence("request", None, f"site of care: {humanize(site)}")])
    allowed = _options(ctx, node, "allowed", ", ")
    return _leaf(node, NOT_MET, f"{humanize(site)} is not an approved site of care ({allowed})",
                 missing=[node.document] if node.document else [])


def _courses(ctx: Context, drug_class: str) -> list[tuple[int, Treatment, str]]:
    """Courses of the requested therapy that started by the referral date, oldest first."""
    found = [(i, t, g) for i, t, g in ctx.members(drug_class) if t.start_date is None or t.start_date <= ctx.as_of]
    return sorted(found, key=lambda c: c[1].start_date or Date.min)


def _first_start(ctx: Context, drug_class: str) -> Optional[Date]:
    starts = [t.start_date for _, t, _ in _courses(ctx, drug_class) if t.start_date]
    return min(starts) if starts else None


def _prior_course(node: P.PriorCourse, ctx: Context) -> Result:
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


def _undated_course(node, ctx: Context, label: str) -> Result:
    """Improvement and taper are both measured from the first course's start."""
    return _leaf(node, UNKNOWN, f"the start of the {label} course is not documented, so nothing can be measured from it",
                 missing=[f"start date of the first {label} course"])


def _improvement(node: P.Improvement, ctx: Context) -> Result:
    start = _first_start(ctx, node.drug_class)
    label = ctx.vocab.label(node.drug_class)
    if start is None:
        return _undated_course(node, ctx, label)
    improved, worse, open_, ev = [], [], [], []
    for key, rule in node.measures.items():
        series = sorted(((a.date, i, a) for i, a in enumerate(ctx.referral.assessments)
                         if a.measure == key and a.date <= ctx.as_of), key=lambda x: x[0])
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


def _taper_attempt(node: P.TaperAttempt, ctx: Context) -> Result:
    start = _first_start(ctx, node.drug_class)
    label = ctx.vocab.label(node.drug_class)
    if start is None:
        return _undated_course(node, ctx, label)
    due = start + relativedelta(months=node.after_months)
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


def _safety(node: P.SafetyLeaf, ctx: Context) -> Result:
    rule = ctx.criteria.safety.rules[node.rule]
    found = ctx.criteria.products.find(ctx.referral.request.product)
    s = safety_screen(node.rule, rule, ctx.referral, ctx.vocab, found[0] if found else None,
                      ctx.facts() if rule.when is not None else None)
    ev = [Evidence(k, i, text) for k, i, text in s.evidence]
    if s.status == "risk":
        return _leaf(node, NOT_MET, s.message, ev)
    if s.status == "missing":
        return _leaf(node, UNKNOWN, s.message, ev, [node.document or rule.document or rule.label])
    return _leaf(node, MET, s.message, ev)


LEAVES: dict[type, Callable[[Any, Context], Result]] = {
    P.DiagnosisCovered: _diagnosis_covered,
    P.FindingLeaf: _finding,
    P.DrugTrial: _drug_trial,
    P.ContraindicationLeaf: _contraindication,
    P.ClinicalCourse: _clinical_course,
    P.TherapyOngoing: _therapy_ongoing,
    P.FirstLine: _first_line,
    P.Dosing: _dosing,
    P.UnitCap: _unit_cap,
    P.ProductPreferred: _product_preferred,
    P.PrescriberSpecialty: _prescriber_specialty,
    P.SiteOfCare: _site_of_care,
    P.PriorCourse: _prior_course,
    P.Improvement: _improvement,
    P.TaperAttempt: _taper_attempt,
    P.SafetyLeaf: _safety,
}


# ------------------------------------------------------------------ tree


def evaluate_node(node: Any, ctx: Context) -> Result:
    leaf = LEAVES.get(type(node))
    if leaf is not None:
        result = leaf(node, ctx)
        # An unconfirmed rule (ctx.verified: the policy's verified_nodes) matters when it is
        # relied on, or when it blocks: an unmet pathway among others decides nothing by itself.
        if id(node) not in ctx.verified:
            if result.status != NOT_MET or not node.pathway:
                ctx.warnings.append(f"rule {node.id!r} ({node.label}) is not confirmed in a published source "
                                    f"(verified: false): {result.status.replace('_', ' ')}")
        return result
    kids = [evaluate_node(child, ctx) for child in P.children(node)]
    statuses = [k.status for k in kids]
    if isinstance(node, P.AllOf):
        status = kleene_all(statuses)
    elif isinstance(node, P.AnyOf):
        status = kleene_any(statuses)
    else:
        status = kleene_at_least(node.at_least, statuses)
    reason = _combined_reason(node, status, kids)
    # What to document matters only while the answer is still open or blocked elsewhere:
    # once an any_of is met, its unknown siblings need nothing.
    if status == MET:
        missing = ()
    elif node.document and status == UNKNOWN:
        missing = [node.document]
    else:
        missing = _unique([m for k in kids for m in k.missing]) or ()
    return Result(node, status, reason, (), missing, kids)


def _combined_reason(node, status, kids) -> str:
    # Only the sentence for the status reached is built.
    if isinstance(node, P.AtLeast):
        met = sum(k.status == MET for k in kids)
        return f"{met} of the {node.at_least} required are met"
    if isinstance(node, P.AnyOf):
        if status == NOT_MET:
            return "none of the options is met"
        lead = "met through: " if status == MET else "could be met once documented: "
    else:
        if status == MET:
            return "every part is met"
        lead = "still to be documented: " if status == UNKNOWN else "not met: "
    return lead + ", ".join([k.node.label for k in kids if k.status == status])


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
