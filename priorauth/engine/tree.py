"""Evaluating a policy tree: leaves through the registry, combinators with Kleene logic."""

from __future__ import annotations

from typing import Any, Iterable

from .context import Context
from .leaves import BY_MODEL
from .nodes import AllOf, AnyOf, AtLeast, children
from .result import MET, NOT_MET, UNKNOWN, Result, kleene_all, kleene_any, kleene_at_least


def evaluate_node(node: Any, ctx: Context) -> Result:
    leaf = BY_MODEL.get(type(node))
    if leaf is not None:
        result = leaf.evaluate(node, ctx)
        # An unconfirmed rule (ctx.verified: the policy's verified_nodes) matters when it is
        # relied on, or when it blocks: an unmet pathway among others decides nothing by itself.
        if id(node) not in ctx.verified:
            if result.status != NOT_MET or not node.pathway:
                ctx.warnings.append(_unverified(node, result.status, ctx.memo))
        return result
    kids = [evaluate_node(child, ctx) for child in children(node)]
    statuses = [k.status for k in kids]
    if isinstance(node, AllOf):
        status = kleene_all(statuses)
    elif isinstance(node, AnyOf):
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


def _unverified(node: Any, status: str, memo: dict) -> str:
    """The warning for an unconfirmed rule: it depends on the node and the status alone, so it
    is made once and kept with the policy (with the node, so its id cannot be reused)."""
    key = (id(node), "unverified", status)
    hit = memo.get(key)
    if hit is None or hit[0] is not node:
        hit = memo[key] = (node, f"rule {node.id!r} ({node.label}) is not confirmed in a published source "
                                 f"(verified: false): {status.replace('_', ' ')}")
    return hit[1]


def _combined_reason(node, status, kids) -> str:
    # Only the sentence for the status reached is built.
    if isinstance(node, AtLeast):
        met = sum(k.status == MET for k in kids)
        return f"{met} of the {node.at_least} required are met"
    if isinstance(node, AnyOf):
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
