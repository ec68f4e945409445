"""A rule of criteria/safety.yaml used as a criterion rather than a warning."""

from __future__ import annotations

from typing import Literal

from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf
from ..context import Context
from ..nodes import NodeBase
from ..safety import screen as safety_screen
from .registry import register


class SafetyLeaf(NodeBase):
    """A rule of criteria/safety.yaml used as a criterion rather than a warning."""

    type: Literal["safety"]
    rule: str


def _lint_safety(node: SafetyLeaf, vocab, safety) -> list[str]:
    return [] if node.rule in safety.rules else [f"rule: {node.rule!r} is not a rule of safety.yaml"]


@register(SafetyLeaf, describe=lambda node, vocab: f"safety rule {node.rule}", lint=_lint_safety)
def _safety(node: SafetyLeaf, ctx: Context) -> Result:
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
