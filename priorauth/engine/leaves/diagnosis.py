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


@register(DiagnosisCovered, describe=lambda node, vocab: "a billable diagnosis code this policy covers")
def _diagnosis_covered(node: DiagnosisCovered, ctx: Context) -> Result:
    headers = ctx.criteria.headers  # criteria/icd10-headers.yaml: non-billable category headers
    pending = []  # (index, code, billable codes under it that the policy covers)
    for i, d in enumerate(ctx.referral.diagnoses):
        header = headers.header(d.code)
        if header is not None:
            choices = [c for c in header.billable if ctx.policy.covers(c)]
            if choices:
                pending.append((i, d.code, header, choices))
            continue
        if ctx.policy.covers(d.code):
            label = f"{d.code} {d.description}" if d.description else d.code
            return _leaf(node, MET, f"{label} is a covered diagnosis under {ctx.policy.title}",
                         [Evidence("diagnosis", i, label)])
    if pending:
        # A header is not a billable ICD-10-CM code: a claim with it is returned, so coverage
        # waits for the billable code (spec revision 2, "billable codes").
        ev = [Evidence("diagnosis", i, f"{code} ({header.title}): category header, not billable")
              for i, code, header, _ in pending]
        why = "; ".join(f"{code} ({header.title}) is a category header, not a billable ICD-10-CM code: "
                        f"choose one of {', '.join(choices)}" for _, code, header, choices in pending)
        missing = [f"a billable ICD-10-CM code instead of the header {code} (one of {', '.join(choices)})"
                   for _, code, _, choices in pending]
        if any(not h.verified for _, _, h, _ in pending):
            ctx.warnings.append("the billable-code list for " + ", ".join(c for _, c, h, _ in pending if not h.verified)
                                + " is not confirmed in a published source (verified: false)")
        return _leaf(node, UNKNOWN, why, ev, missing)
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
