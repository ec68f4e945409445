"""`priorauth explain POLICY`: a policy as plain text a physician can read."""

from __future__ import annotations

from typing import Any

from ..engine.leaves import LEAF_TYPES
from ..engine.nodes import AllOf, AnyOf, children
from . import policy as P

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def describe_leaf(node: Any, vocab: P.Vocabulary) -> str:
    """One sentence for a leaf: what the chart must show (the leaf type's own describe hook)."""
    return LEAF_TYPES[node.type].describe(node, vocab)


def _lines(node: Any, vocab: P.Vocabulary, policy: P.Policy, depth: int, marker: str) -> list[str]:
    pad = "   " * depth
    cite = f" [{node.source}]" if node.source else ""
    flag = "" if policy.is_verified(node) else " (unconfirmed)"
    kids = children(node)
    if not kids:
        return [f"{pad}{marker} {node.label}: {describe_leaf(node, vocab)}{cite}{flag}"]
    if isinstance(node, AllOf):
        how = "all of"
    elif isinstance(node, AnyOf):
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
           f"Policy {policy.id}, payer {policy.payer}, version {policy.version}, effective {policy.effective}"
           + (f", for {', '.join(t.replace('_', ' ') for t in policy.plan_types)}" if policy.plan_types else "")]
    doc = policy.document
    if doc is not None:
        if doc.basis:
            out.append(f"Applies: {doc.title}: {', '.join(doc.basis)}")
        else:
            out.append(f"Payer's policy: {doc.cite()}" + (f", {doc.section}" if doc.section else "")
                       + (f" <{doc.url}>" if doc.url else "") + ("" if doc.verified else " (unconfirmed)"))
    out += [
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
        text = policy.citation(key) if src.section else src.citation
        kind = f" ({src.kind})" if src.kind != "policy" else ""
        out.append(f"  [{key}]{kind} {text}" + (f" <{src.url}>" if src.url else "")
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
