"""Safety screening (criteria/safety.yaml): risks present, or evidence missing, before infusion."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Optional

from .dosing import bmi
from ..model.referral import Referral


@dataclass(slots=True)
class Screen:
    rule_id: str
    rule: Any
    status: str  # "ok", "risk" (a `when` matched), "missing" (a `require` not met)
    message: str
    factors: list[str]
    evidence: list[tuple[str, Optional[int], str]]  # (kind, index, summary)


def _texts(ref: Referral) -> list[tuple[str, int, str]]:
    """Free text where a clinic writes conditions, case-folded: (kind, index, text)."""
    out = []
    for i, d in enumerate(ref.diagnoses):
        if text := d.description:
            out.append(("diagnosis", i, text.casefold()))
    for i, c in enumerate(ref.contraindications):
        out.append(("contraindication", i, f"{c.drug or ''} {c.drug_class or ''} {c.reason}".casefold()))
    for i, f in enumerate(ref.findings):
        if text := f.result:
            out.append(("finding", i, text.casefold()))
    for i, t in enumerate(ref.treatments):
        if text := t.details:
            out.append(("treatment", i, text.casefold()))
    return out


def age_years(birth: date, on: date) -> int:
    """Completed years, as relativedelta(on, birth).years (a test holds them equal), without
    building a relativedelta for every referral of a batch."""
    day = birth.day
    if (birth.month, day) == (2, 29) and not calendar.isleap(on.year):
        day = 28  # relativedelta's rule: a leap-day birthday falls on 28 February
    return on.year - birth.year - ((on.month, on.day) < (birth.month, day))


@dataclass(slots=True)
class Facts:
    """What every rule looks at, worked out once per referral."""

    ref: Referral
    age: int
    bmi: Optional[float]
    texts: list[tuple[str, int, str]]
    current: list[tuple[int, str, Optional[str], str]]  # treatments taken on the date: (index, generic, route, name)


def facts(ref: Referral, vocab: Any) -> Facts:
    p, on = ref.patient, ref.date
    current = []
    for i, t in enumerate(ref.treatments):
        name = t.drug
        generic = vocab.generic(name)
        if generic and ((end := t.end_date) is None or end >= on):
            current.append((i, generic, t.route, name))
    weight, height = p.weight_kg, p.height_cm
    return Facts(ref, age_years(p.birth_date, on), bmi(weight, height) if weight and height else None,
                 _texts(ref), current)


def _risk_factors(when: Any, f: Facts, vocab: Any) -> tuple[list[str], list]:
    age_at_least, bmi_at_least, prefixes, drug_classes, phrases = when._checks
    factors, evidence = [], []
    if age_at_least is not None and f.age >= age_at_least:
        factors.append(f"age {f.age}")
    if bmi_at_least is not None and f.bmi is not None and f.bmi >= bmi_at_least:
        factors.append(f"BMI {f.bmi:.1f}")
    if prefixes:
        for i, d in enumerate(f.ref.diagnoses):
            code = d.code
            if code.startswith(prefixes):
                factors.append(code)  # the code, not the chart's description (a warning repeats no free text)
                evidence.append(("diagnosis", i, code))
    if drug_classes:
        for i, generic, route, name in f.current:
            if any(vocab.in_class(generic, c, route) for c in drug_classes):
                factors.append(f"{generic} being taken")
                evidence.append(("treatment", i, name))
    if phrases:
        for kind, i, text in f.texts:
            for hit in phrases:  # the first phrase found names the factor
                if hit in text:
                    if hit:
                        factors.append(f"'{hit}' in {kind} {i + 1}")
                        evidence.append((kind, i, hit))
                    break
    return (list(dict.fromkeys(factors)) if factors else factors), evidence


def _has_evidence(req: Any, ref: Referral) -> list:
    since = ref.date - timedelta(days=req.within_days) if req.within_days else None
    on = ref.date

    def recent(d) -> bool:
        return since is None or (d is not None and since <= d <= on)

    found = [("assessment", i, f"{a.measure} {a.result if a.value is None else format(a.value, 'g')} on {a.date}") for i, a in enumerate(ref.assessments)
             if a.measure in req.measures and recent(a.date)]
    phrases = req._phrases
    if phrases:
        for i, f in enumerate(ref.findings):
            if f.result and recent(f.date):
                text = f.result.casefold()
                if any(w in text for w in phrases):
                    found.append(("finding", i, f.result or f.kind))
    return found


def applies(rule: Any, ref: Referral, product: Optional[str]) -> bool:
    if rule.therapies and ref.request.therapy not in rule.therapies:
        return False
    return not rule.products or (product or "") in rule.products


def screen(rule_id: str, rule: Any, ref: Referral, vocab: Any, product: Optional[str],
           known: Optional[Facts] = None) -> Screen:
    when = rule.when
    if when is not None:
        factors, evidence = _risk_factors(when, known or facts(ref, vocab), vocab)
        if factors:
            message = rule.message.format(factors=", ".join(factors), product=product or ref.request.product)
            return Screen(rule_id, rule, "risk", message, factors, evidence)
    require = rule.require
    if require is not None:
        evidence = _has_evidence(require, ref)
        if not evidence:
            return Screen(rule_id, rule, "missing", rule.message.format(factors="", product=product or ""), [], [])
        return Screen(rule_id, rule, "ok", f"{rule.label}: documented", [], evidence)
    return Screen(rule_id, rule, "ok", f"{rule.label}: none documented", [], [])


def screen_all(ref: Referral, criteria: Any, known: Optional[Facts] = None) -> list[Screen]:
    found = criteria.products.find(ref.request.product)
    product = found[0] if found else None
    known = known or facts(ref, criteria.vocabulary)
    # Which rules apply depends on the therapy and product alone: worked out once for each.
    key = (ref.request.therapy, product)
    rules = criteria.safety._applicable.get(key)
    if rules is None:
        rules = criteria.safety._applicable[key] = [(rid, rule) for rid, rule in criteria.safety.rules.items()
                                                    if applies(rule, ref, product)]
    return [screen(rid, rule, ref, criteria.vocabulary, product, known) for rid, rule in rules]
