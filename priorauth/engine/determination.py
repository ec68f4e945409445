"""The determination: the one place that defines the output JSON (spec section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

from ..core.dates import add_months
from .billing import authorization_cycles, billing_block
from .context import make_context, resolve_treatments
from .course import course_of, product_of
from .fit import would_fit
from .dosing import DEFAULT_ADJUSTED_WEIGHT_BMI, compute as compute_dosing
from .leaves.label import label_status
from .result import MET, NOT_MET, UNKNOWN, Result
from .tree import evaluate_node
from ..model.referral import Referral
from .safety import screen_all

OUTCOMES = {MET: "meets_criteria", UNKNOWN: "missing_documentation", NOT_MET: "not_eligible"}


@dataclass
class Determination:
    referral: Referral
    policy: Optional[Any]  # criteria.Policy
    determination: str
    result: Optional[Result]
    pathways_met: list[str]
    missing: list[str]
    dosing: Optional[dict]
    warnings: list[str] = field(default_factory=list)
    safety: list[dict] = field(default_factory=list)
    flat: list = field(default_factory=list, repr=False)  # result.walk(), once
    course: dict = field(default_factory=dict)  # earlier courses of the therapy, patient age (engine.course)
    product: dict = field(default_factory=dict)  # the requested product's brand, HCPCS code, billing unit
    billing: Optional[dict] = None  # HCPCS, NDC lines, JW / JZ, administration CPT, place of service (engine.billing)
    prior_authorization: Optional[dict] = None  # does the line of business do prior authorization (payers.yaml)
    label: Optional[dict] = None  # the product's FDA-label status for this diagnosis and age (labels.yaml)
    baseline_for_payer: Optional[str] = None  # the payer whose referral got the baseline (no variant of its own)
    would_fit: list[dict] = field(default_factory=list)  # changes that would meet the policy (engine.fit)

    @property
    def referral_id(self) -> str:
        return self.referral.referral_id

    def criteria(self) -> list[dict]:
        """Every node of the policy tree, depth first, with its parent's id."""
        if self.result is None:
            return []
        known = self.policy._node_fields  # every result's node is one of the policy's own
        out = []
        for r, parent in self.flat:
            _, node_id, label, pathway, source, citation, verified = known[id(r.node)]
            out.append({
                "id": node_id,
                "label": label,
                "status": r.status,
                "reason": r.reason,
                "evidence": [e.to_dict() for e in r.evidence] if r.evidence else [],
                "parent": parent,
                "pathway": pathway,
                "source": source,
                "citation": citation,
                "verified": verified,
            })
        return out

    def reasons(self) -> list[str]:
        """Why it is not eligible: the failed criteria that decided it, in words."""
        if self.result is None:
            return [f"no {self.referral.request.therapy} policy covers "
                    f"{', '.join(d.code for d in self.referral.diagnoses)}"] if self.policy is None else []
        out: list[str] = []

        def visit(r: Result) -> None:
            if r.status != NOT_MET:
                return
            if not r.children:
                out.append(f"{r.node.label}: {r.reason}")
            for child in r.children:
                visit(child)

        visit(self.result)
        return out

    def authorization(self) -> Optional[dict]:
        """The approvable period when criteria are met: from the requested start for the policy's months."""
        auth = self.policy.authorization if self.policy else None
        if self.determination != "meets_criteria" or auth is None:
            return None
        start = self.referral.request.start_date or self.referral.date
        end = add_months(start, auth.months) - timedelta(days=1)
        return {"start": start.isoformat(), "end": end.isoformat(), "months": auth.months,
                "reauthorization_due": (end - timedelta(days=auth.reauthorization_lead_days)).isoformat(),
                **authorization_cycles(self.referral, self.dosing, start, end)}

    def policy_ref(self) -> Optional[dict]:
        if not self.policy:
            return None
        return {**self.policy.reference, "baseline_for_payer": self.baseline_for_payer}

    def to_dict(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "determination": self.determination,
            "as_of": self.referral.date.isoformat(),
            "request_type": self.referral.request.request_type,
            "policy": self.policy_ref(),
            "pathways_met": self.pathways_met,
            "criteria": self.criteria(),
            "missing": self.missing,
            "reasons": self.reasons(),
            "dosing": self.dosing,
            "authorization": self.authorization(),
            "billing": self.billing,
            "safety": self.safety,
            "warnings": self.warnings,
            "course": self.course,
            "product": self.product,
            "prior_authorization": self.prior_authorization,
            "label": self.label,
            "would_fit": self.would_fit,
        }


def determine(referral: Referral, criteria: Any, warnings: list[str] | None = None) -> Determination:
    """Referral + criteria -> determination. Pure: the as-of date is the referral's.

    `warnings` carries what reading the referral noticed (a FHIR import's unmapped data).
    """
    det, ctx = _decide(referral, criteria, warnings)
    det.product = product_of(referral, criteria.products)
    det.billing = billing_block(referral, det.dosing, criteria.products, getattr(criteria, "billing", None))
    det.prior_authorization = criteria.prior_authorization(referral.coverage.payer, referral.coverage.plan_type)
    known_label = ctx._label if ctx is not None else None
    det.label = known_label[0] if known_label else label_status(referral, criteria)
    for s in screen_all(referral, criteria, ctx._facts if ctx is not None else None):
        if s.status != "ok":
            det.safety.append({"rule": s.rule_id, "label": s.rule.label, "status": s.status, "message": s.message})
            det.warnings.append(f"safety: {s.message}")
    return det


def _decide(referral: Referral, criteria: Any, warnings: list[str] | None) -> tuple[Determination, Any]:
    """The determination, and the evaluation's context (None without a policy): the safety facts
    and the label block it worked out are reused, not worked out again."""
    codes = [d.code for d in referral.diagnoses]
    payer, plan_type = referral.coverage.payer, referral.coverage.plan_type
    policy = criteria.select_policy(referral.request.therapy, codes, payer, referral.date, plan_type)
    warnings = list(warnings or [])
    baseline_for = None
    if policy is not None and policy.payer != payer:
        if policy.payer == "baseline":
            baseline_for = payer
            warnings.append(f"payer {payer!r} has no policy variant here for {referral.request.therapy} and this "
                            f"diagnosis: the baseline (criteria commonly used by US payers) is applied; check "
                            f"the payer's own policy")
        else:
            warnings.append(f"payer {payer!r}, {criteria.plan_type(payer, plan_type)}: the {policy.payer} coverage "
                            f"rules apply ({policy.title})")
    if policy is None:
        # Nothing to evaluate (reasons() says why), but the chart's unknown drug names and
        # the dose are still worth showing.
        treatments = resolve_treatments(referral, criteria.vocabulary, warnings)
        dosing = compute_dosing(referral, criteria.products, criteria.therapies[referral.request.therapy],
                                DEFAULT_ADJUSTED_WEIGHT_BMI, warnings)
        course = course_of(referral, treatments, criteria.vocabulary, criteria.therapies[referral.request.therapy])
        return Determination(referral, None, "not_eligible", None, [], [], dosing, warnings, course=course), None
    ctx = make_context(referral, criteria, policy, warnings)
    result = evaluate_node(policy.tree_for(referral.request.request_type), ctx)
    flat = result.walk()
    pathways = [r.node.id for r, _ in flat if r.status == MET and r.node.pathway]
    det = Determination(referral, policy, OUTCOMES[result.status], result, pathways,
                        list(result.missing), ctx.dosing().dosing, _unique(warnings), flat=flat,
                        course=course_of(referral, ctx.treatments, ctx.vocab, ctx.therapy),
                        baseline_for_payer=baseline_for, would_fit=would_fit(result, ctx))
    return det, ctx


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
