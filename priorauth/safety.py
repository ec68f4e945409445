"""Safety screening (criteria/safety.yaml): risks present, or evidence missing, before infusion."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from dateutil.relativedelta import relativedelta

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


def _texts(ref: Referral):
    """Free text where a clinic writes conditions: (kind, index, text)."""
    for i, d in enumerate(ref.diagnoses):
        yield "diagnosis", i, d.description or ""
    for i, c in enumerate(ref.contraindications):
        yield "contraindication", i, f"{c.drug or ''} {c.drug_class or ''} {c.reason}"
    for i, f in enumerate(ref.findings):
        yield "finding", i, f.result or ""
    for i, t in enumerate(ref.treatments):
        yield "treatment", i, t.details or ""


def _risk_factors(when: P.SafetyWhen, ref: Referral, vocab: P.Vocabulary) -> tuple[list[str], list]:
    factors, evidence = [], []
    age = relativedelta(ref.date, ref.patient.birth_date).years
    if when.age_at_least is not None and age >= when.age_at_least:
        factors.append(f"age {age}")
    p = ref.patient
    if when.bmi_at_least is not None and p.weight_kg and p.height_cm and bmi(p.weight_kg, p.height_cm) >= when.bmi_at_least:
        factors.append(f"BMI {bmi(p.weight_kg, p.height_cm):.1f}")
    for i, d in enumerate(ref.diagnoses):
        if when.diagnosis_codes and d.code.startswith(tuple(when.diagnosis_codes)):
            factors.append(d.code + (f" {d.description}" if d.description else ""))
            evidence.append(("diagnosis", i, d.code))
    for i, t in enumerate(ref.treatments):
        generic = vocab.generic(t.drug)
        current = t.end_date is None or t.end_date >= ref.date
        if generic and current and any(vocab.in_class(generic, c, t.route) for c in when.drug_classes):
            factors.append(f"{t.drug} being taken")
            evidence.append(("treatment", i, t.drug))
    phrases = [w.casefold() for w in when.text]
    for kind, i, text in _texts(ref):
        hit = next((w for w in phrases if w in text.casefold()), None)
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


def screen(rule_id: str, rule: P.SafetyRule, ref: Referral, vocab: P.Vocabulary, product: Optional[str]) -> Screen:
    if rule.when is not None:
        factors, evidence = _risk_factors(rule.when, ref, vocab)
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
    return [screen(rid, rule, ref, criteria.vocabulary, product)
            for rid, rule in criteria.safety.rules.items() if applies(rule, ref, product)]
