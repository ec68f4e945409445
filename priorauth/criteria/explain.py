"""`priorauth explain POLICY`: a policy as plain text a physician can read."""

from __future__ import annotations

from typing import Any

from . import policy as P

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _weeks(n) -> str:
    return f"{n:g} week{'s' if n != 1 else ''}"


def describe_leaf(node: Any, vocab: P.Vocabulary) -> str:
    """One sentence for a leaf: what the chart must show."""
    label = vocab.label
    if isinstance(node, P.DiagnosisCovered):
        return "a diagnosis code this policy covers"
    if isinstance(node, P.FindingLeaf):
        return "a finding supporting the diagnosis: " + ", ".join(k.replace("_", " ") for k in node.kinds)
    if isinstance(node, P.DrugTrial):
        parts = []
        for outcome, rule in node.outcomes.items():
            text = outcome.replace("_", " ")
            parts.append(f"{text} after at least {_weeks(rule.min_weeks)}" if rule.min_weeks else f"{text} (any length)")
        who = f"{node.min_distinct} different {label(node.drug_class)}s" if node.min_distinct > 1 else f"a {label(node.drug_class)}"
        return f"{who} ended in " + " or ".join(parts)
    if isinstance(node, P.ContraindicationLeaf):
        return f"a documented contraindication to {label(node.drug_class)}s"
    if isinstance(node, P.ClinicalCourse):
        return "the prescriber states the disease is " + " or ".join(v.replace("_", " ") for v in node.values)
    if isinstance(node, P.TherapyOngoing):
        return "taking a " + " or ".join(label(c) for c in node.drug_classes) + " on the referral date"
    if isinstance(node, P.FirstLine):
        return "no prior therapy is required"
    if isinstance(node, P.Dosing):
        limits = []
        if node.max_g_per_kg_per_cycle:
            limits.append(f"at most {node.max_g_per_kg_per_cycle:g} g/kg per cycle")
        if node.min_interval_weeks:
            limits.append(f"cycles at least {_weeks(node.min_interval_weeks)} apart")
        if node.days_per_cycle:
            limits.append(f"{node.days_per_cycle[0]}-{node.days_per_cycle[1]} infusion days per cycle")
        if node.max_mg_per_dose:
            limits.append(f"at most {node.max_mg_per_dose:g} mg a dose")
        if node.max_doses:
            limits.append(f"at most {node.max_doses} doses")
        if node.max_g_per_kg_per_cycle:
            limits.append(f"adjusted body weight from BMI {node.adjusted_weight_bmi:g}")
        return "; ".join(limits) or "no dose limits"
    if isinstance(node, P.UnitCap):
        return f"at most {node.max_units} billing units in any {node.per_days} days"
    if isinstance(node, P.ProductPreferred):
        return "one of " + ", ".join(node.products) + ", or one of them tried first"
    if isinstance(node, P.PrescriberSpecialty):
        return "prescribed by " + " or ".join(node.specialties)
    if isinstance(node, P.SiteOfCare):
        return "given at " + " or ".join(a.replace("_", " ") for a in node.allowed)
    if isinstance(node, P.PriorCourse):
        text = f"an earlier course of {label(node.drug_class)}"
        return text + (f", the last at least {_weeks(node.min_weeks_since_last)} ago" if node.min_weeks_since_last else "")
    if isinstance(node, P.Improvement):
        rules = []
        for r in node.measures.values():
            by = f"{r.min_change_percent:g}%" if r.min_change_percent else (f"{r.min_change:g}" if r.min_change else "any amount")
            rules.append(f"{r.label} {r.better} by {by}" + ("" if r.verified else " (unconfirmed)"))
        return (f"at least {node.min_improved} measure(s) better than before {label(node.drug_class)} began: "
                + "; ".join(rules))
    if isinstance(node, P.TaperAttempt):
        return f"after {node.after_months} months, an attempt to lower the dose or lengthen the interval"
    if isinstance(node, P.SafetyLeaf):
        return f"safety rule {node.rule}"
    return node.label


def _lines(node: Any, vocab: P.Vocabulary, policy: P.Policy, depth: int, marker: str) -> list[str]:
    pad = "   " * depth
    cite = f" [{node.source}]" if node.source else ""
    flag = "" if policy.is_verified(node) else " (unconfirmed)"
    kids = P.children(node)
    if not kids:
        return [f"{pad}{marker} {node.label}: {describe_leaf(node, vocab)}{cite}{flag}"]
    if isinstance(node, P.AllOf):
        how = "all of"
    elif isinstance(node, P.AnyOf):
        how = "any one of"
    else:
        how = f"at least {node.at_least} of"
    out = [f"{pad}{marker} {node.label}, {how}:{cite}{flag}"]
    for i, child in enumerate(kids):
        sub = f"{i + 1}." if depth % 2 else f"{LETTERS[i % 26]}."
        out += _lines(child, vocab, policy, depth + 1, sub)
    return out


def explain_policy(policy: P.Policy, vocab: P.Vocabulary) -> str:
    out = [policy.title, "=" * len(policy.title),
           f"Policy {policy.id}, payer {policy.payer}, version {policy.version}, effective {policy.effective}",
           "Covers ICD-10-CM: " + ", ".join(f"{c}*" for c in policy.covered_codes)
           + (f" (except {', '.join(policy.excluded_codes)})" if policy.excluded_codes else "")]
    if policy.authorization:
        a = policy.authorization
        out.append(f"Approval: {a.months} months; request renewal {a.reauthorization_lead_days} days before it ends"
                   + (f" [{a.source}]" if a.source else ""))
    out += ["", "Initial request"] + _lines(policy.criteria, vocab, policy, 0, "-")
    if policy.continuation:
        out += ["", "Continuation request"] + _lines(policy.continuation, vocab, policy, 0, "-")
    out += ["", "Sources"]
    for key, src in policy.sources.items():
        out.append(f"  [{key}] {src.citation}" + (f" <{src.url}>" if src.url else "")
                   + ("" if src.verified else " (unconfirmed)"))
    out += ["", "(unconfirmed): not confirmed in a published source; check with the payer before relying on it."]
    return "\n".join(out)


def find_policy(criteria: P.Criteria, ident: str) -> P.Policy:
    """By id (newest version), or id@version."""
    pid, _, version = ident.partition("@")
    found = [p for p in criteria.policies if p.id == pid and (not version or p.version == version)]
    if not found:
        from ..core.errors import InputError

        known = ", ".join(sorted({p.id for p in criteria.policies}))
        raise InputError(f"no policy {ident!r} (known: {known})")
    return max(found, key=lambda p: p.effective)
