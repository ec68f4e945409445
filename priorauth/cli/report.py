"""A determination as plain text for a person at a terminal (`priorauth check`)."""

from __future__ import annotations

from ..engine.determination import Determination
from ..engine.result import evidence_where
from ..engine.summary import billing_lines, dosing_line, policy_lines

MARK = {"met": "MET", "not_met": "NOT MET", "unknown": "UNKNOWN"}
HEADLINE = {
    "meets_criteria": "MEETS CRITERIA: ready for a letter of medical necessity",
    "missing_documentation": "MISSING DOCUMENTATION: add what is listed below, then check again",
    "not_eligible": "NOT ELIGIBLE under this policy",
}


def explain(det: Determination, style=lambda text, **kw: text) -> str:
    """Readable explanation; `style` is click.style when writing to a terminal."""
    colour = {"met": "green", "not_met": "red", "unknown": "yellow",
              "meets_criteria": "green", "missing_documentation": "yellow", "not_eligible": "red"}
    out = [style(f"{det.referral_id}: {HEADLINE[det.determination]}", fg=colour[det.determination], bold=True)]
    out += policy_lines(det.policy_ref())
    pa = det.prior_authorization
    if pa:
        out.append(f"Prior authorization: {'required' if pa['required'] else 'none'} ({pa['label']})")
    out.append(f"As of: {det.referral.date}  Request: {det.referral.request.therapy} "
               f"{det.referral.request.product} ({det.referral.request.request_type})")
    out.append(f"Pathways met: {', '.join(det.pathways_met) or 'none'}")
    criteria = det.criteria()  # the very list `check --json` prints: the two never disagree
    if criteria:
        out += ["", "Criteria:"]
        depth: dict[str, int] = {}
        for c in criteria:
            d = depth[c["id"]] = depth.get(c["parent"], -1) + 1 if c["parent"] else 0
            pad = "  " * (d + 1)
            mark = style(f"[{MARK[c['status']]}]", fg=colour[c["status"]])
            flag = "" if c["verified"] else "  (rule not confirmed in a published source)"
            out.append(f"{pad}{mark} {c['label']}{flag}")
            out.append(f"{pad}    {c['reason']}")
            for e in c["evidence"]:
                out.append(f"{pad}    - {evidence_where(e['kind'], e['index'])}: {e['summary']}")
    if det.missing:
        out += ["", style("What to document:", bold=True)] + [f"  - {m}" for m in det.missing]
    reasons = det.reasons()
    if det.determination == "not_eligible" and reasons:
        out += ["", style("Why not eligible:", bold=True)] + [f"  - {r}" for r in reasons]
    if det.would_fit:
        out += ["", style("What would fit the policy:", bold=True)] + [f"  - {f['text']}" for f in det.would_fit]
    out += ["", "Dosing:", "  " + dosing_line(det.dosing)]
    if det.billing:
        out += ["", "Billing:"] + ["  " + line for line in billing_lines(det.billing, det.authorization())]
    if det.warnings:
        out += ["", style("Warnings:", fg="yellow")] + [f"  - {w}" for w in det.warnings]
    return "\n".join(out)
