"""Leaves about the diagnosis: a covered code, and a finding that confirms it."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from ...model.referral import FindingKind
from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf, humanize
from ..context import Context, _options
from ..nodes import NodeBase
from .registry import register

FINDING_KINDS = frozenset(get_args(FindingKind))


class DiagnosisCovered(NodeBase):
    type: Literal["diagnosis_covered"]


class FindingLeaf(NodeBase):
    type: Literal["finding"]
    kinds: list[str] = Field(min_length=1)


def _lint_finding(node: FindingLeaf, vocab, safety) -> list[str]:
    return [f"kinds: unknown finding kind {k!r} (known: {', '.join(sorted(FINDING_KINDS))})"
            for k in node.kinds if k not in FINDING_KINDS]


@register(DiagnosisCovered, describe=lambda node, vocab: "a diagnosis code this policy covers")
def _diagnosis_covered(node: DiagnosisCovered, ctx: Context) -> Result:
    for i, d in enumerate(ctx.referral.diagnoses):
        if ctx.policy.covers(d.code):
            label = f"{d.code} {d.description}" if d.description else d.code
            return _leaf(node, MET, f"{label} is a covered diagnosis under {ctx.policy.title}",
                         [Evidence("diagnosis", i, label)])
    return _leaf(node, NOT_MET, "no diagnosis code on the referral is covered by this policy")


@register(FindingLeaf, describe=lambda node, vocab: "a finding supporting the diagnosis: " + ", ".join(humanize(k) for k in node.kinds), lint=_lint_finding)
def _finding(node: FindingLeaf, ctx: Context) -> Result:
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
