"""Safety screening (criteria/safety.yaml): risks present, or evidence missing, before infusion."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Optional

from . import policy as P
from .dosing import bmi
from .referral import Referral


@dataclass
class Screen:
    rule_id: str
    rule: P.SafetyRule
    status: str  # "ok", "risk" (a `when` matched), "missing" (a `require` not met)
    message: str
    factors: list[str]
    evidence: list[tuple[str, Optional[int], str]]  # (kind, index, summary)


def _texts(ref: Referral) -> list[tuple[str, int, str]]:
    """Free text where a clinic writes conditions, case-folded: (kind, index, text)."""
    out = [("diagnosis", i, d.description) for i, d in enumerate(ref.diagnoses)]
    out += [("contraindication", i, f"{c.drug or ''} {c.drug_class or ''} {c.reason}")
            for i, c in enumerate(ref.contraindications)]
    out += [("finding", i, f.result) for i, f in enumerate(ref.findings)]
    out += [("treatment", i, t.details) for i, t in enumerate(ref.treatments)]
    return [(k, i, t.casefold()) for k, i, t in out if t]


def age_years(birth: date, on: date) -> int:
    """Completed years, as relativedelta(on, birth).years (a test holds them equal), without
    building a relativedelta for every referral of a batch."""
    day = birth.day
    if (birth.month, day) == (2, 29) and not calendar.isleap(on.year):
        day = 28  # relativedelta's rule: a leap-day birthday falls on 28 February
    return on.year - birth.year - ((on.month, on.day) < (birth.month, day))


@dataclass
class Facts:
    """What every rule looks at, worked out once per referral."""

    ref: Referral
    age: int
    bmi: Optional[float]
    texts: list[tuple[str, int, str]]
    current: list[tuple[int, str, Optional[str], str]]  # treatments taken on the date: (index, generic, route, name)


def facts(ref: Referral, vocab: P.Vocabulary) -> Facts:
    p = ref.patient
    current = []
    for i, t in enumerate(ref.treatments):
        generic = vocab.generic(t.drug)
        if generic and (t.end_date is None or t.end_date >= ref.date):
            current.append((i, generic, t.route, t.drug))
    return Facts(ref, age_years(p.birth_date, ref.date),
                 bmi(p.weight_kg, p.height_cm) if p.weight_kg and p.height_cm else None, _texts(ref), current)


def _risk_factors(when: P.SafetyWhen, f: Facts, vocab: P.Vocabulary) -> tuple[list[str], list]:
    factors, evidence = [], []
    ref = f.ref
    if when.age_at_least is not None and f.age >= when.age_at_least:
        factors.append(f"age {f.age}")
    if when.bmi_at_least is not None and f.bmi is not None and f.bmi >= when.bmi_at_least:
        factors.append(f"BMI {f.bmi:.1f}")
    for i, d in enumerate(ref.diagnoses):
        if when.diagnosis_codes and d.code.startswith(tuple(when.diagnosis_codes)):
            factors.append(d.code + (f" {d.description}" if d.description else ""))
            evidence.append(("diagnosis", i, d.code))
    for i, generic, route, name in f.current:
        if any(vocab.in_class(generic, c, route) for c in when.drug_classes):
            factors.append(f"{name} being taken")
            evidence.append(("treatment", i, name))
    phrases = [w.casefold() for w in when.text]
    for kind, i, text in f.texts:
        hit = next((w for w in phrases if w in text), None)
        if hit:
            factors.append(f"'{hit}' in {kind} {i + 1}")
            evidence.append((kind, i, hit))
    return list(dict.fromkeys(factors)), evidence


def _has_evidence(req: P.SafetyRequire, ref: Referral) -> list:
    since = ref.date - timedelta(days=req.within_days) if req.within_days else None

    def recent(d) -> bool:
        return since is None or (d is not None and since <= d <= ref.date)

    found = [("assessment", i, f"{a.measure} {a.value:g} on {a.date}") for i, a in enumerate(ref.assessments)
             if a.measure in req.measures and recent(a.date)]
    phrases = [w.casefold() for w in req.text]
    found += [("finding", i, f.result or f.kind) for i, f in enumerate(ref.findings)
              if f.result and recent(f.date) and any(w in f.result.casefold() for w in phrases)]
    return found


def applies(rule: P.SafetyRule, ref: Referral, product: Optional[str]) -> bool:
    if rule.therapies and ref.request.therapy not in rule.therapies:
        return False
    return not rule.products or (product or "") in rule.products


def screen(rule_id: str, rule: P.SafetyRule, ref: Referral, vocab: P.Vocabulary, product: Optional[str],
           known: Optional[Facts] = None) -> Screen:
    if rule.when is not None:
        factors, evidence = _risk_factors(rule.when, known or facts(ref, vocab), vocab)
        if factors:
            message = rule.message.format(factors=", ".join(factors), product=product or ref.request.product)
            return Screen(rule_id, rule, "risk", message, factors, evidence)
    if rule.require is not None:
        evidence = _has_evidence(rule.require, ref)
        if not evidence:
            return Screen(rule_id, rule, "missing", rule.message.format(factors="", product=product or ""), [], [])
        return Screen(rule_id, rule, "ok", f"{rule.label}: documented", [], evidence)
    return Screen(rule_id, rule, "ok", f"{rule.label}: none documented", [], [])


def screen_all(ref: Referral, criteria: P.Criteria) -> list[Screen]:
    found = criteria.products.find(ref.request.product)
    product = found[0] if found else None
    known = facts(ref, criteria.vocabulary)
    return [screen(rid, rule, ref, criteria.vocabulary, product, known)
            for rid, rule in criteria.safety.rules.items() if applies(rule, ref, product)]
