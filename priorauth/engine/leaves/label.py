"""The on-label pathway: the requested product's FDA label carries the diagnosis for the
patient's age group (criteria/labels.yaml; Medicare LCD L35093 pattern, which covers
FDA-labelled use). `label_status` is also what the determination's `label` block states."""

from __future__ import annotations

from typing import Any, Literal, Optional

from ..result import MET, NOT_MET, Evidence, Result, _leaf
from ..context import Context
from ..nodes import NodeBase
from ..safety import age_years
from .registry import register


class OnLabel(NodeBase):
    """Met when the requested product's label lists a referral diagnosis for the patient's age."""

    type: Literal["on_label"]


def label_status(referral: Any, criteria: Any) -> Optional[dict]:
    """{product, on_label (true/false/null), indication, label_date, source, ...} for the request.

    on_label is null when the label table has no entry for the product (its label status is
    not known here), false when the product's labels on file do not carry the diagnosis for the
    patient's age on the referral date."""
    req = referral.request
    if not req.product:
        return None
    found = criteria.products.find(req.product)
    brand = found[0] if found else req.product
    out = {"product": brand, "on_label": None, "indication": None, "label_date": None, "source": None,
           "age_group": None, "verified": None, "reason": None}
    entries = criteria.labels.for_product(brand)
    if entries is None:
        out["reason"] = f"no FDA label for {brand} is on file in criteria/labels.yaml"
        return out
    codes = [d.code for d in referral.diagnoses]
    age = age_years(referral.patient.birth_date, referral.date)
    near = []
    for e in entries:
        hits = [c for c in codes if c.startswith(tuple(e.codes))]
        if not hits:
            continue
        if not e.fits_age(age):
            near.append(f"labelled for {e.indication} in {e.age_group()}; the patient is {age}")
            continue
        if e.since > referral.date:
            near.append(f"the {e.indication} indication was approved only on {e.since}")
            continue
        out.update(on_label=True, indication=e.indication, label_date=e.since.isoformat(), source=e.source,
                   age_group=e.age_group(), verified=e.verified,
                   reason=f"{brand} is FDA-labelled for {e.indication} in {e.age_group()} (since {e.since}); "
                          f"diagnosis {hits[0]}, patient aged {age}")
        return out
    on_file = "; ".join(f"{e.indication} ({e.age_group()}, {e.since})" for e in entries)
    out.update(on_label=False,
               reason=f"{brand} is not FDA-labelled for {', '.join(codes) or 'the diagnosis'} in this patient"
                      + (f" ({'; '.join(near)})" if near else "") + f"; labelled indications on file: {on_file}")
    return out


def _describe(node: OnLabel, vocab) -> str:
    return "the requested product's FDA label lists the diagnosis for the patient's age group"


@register(OnLabel, describe=_describe)
def _on_label(node: OnLabel, ctx: Context) -> Result:
    status = label_status(ctx.referral, ctx.criteria)
    ctx._label = (status,)  # the determination's label block is this same answer
    if status is None:
        return _leaf(node, NOT_MET, "no product is named in the request")
    if status["on_label"]:
        if status["verified"] is False:
            ctx.warnings.append(f"the FDA label entry for {status['product']} ({status['indication']}) is not "
                                f"confirmed in a published source (verified: false)")
        return _leaf(node, MET, status["reason"],
                     [Evidence("request", None, f"product {status['product']}: {status['indication']}, "
                                                f"FDA label {status['label_date']}")])
    return _leaf(node, NOT_MET, status["reason"])
