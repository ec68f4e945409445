"""The patient's course of the requested therapy: what letters and the case service show, decided once."""

from __future__ import annotations

from datetime import date as Date
from typing import Any, Optional

from ..model.referral import Referral
from .safety import age_years


def course_of(referral: Referral, treatments: list, vocab: Any, therapy: Any) -> dict[str, Any]:
    """Earlier courses of the requested therapy (treatment indices, oldest first) and when the first began.

    `treatments` is the resolved (index, treatment, generic) list; a course counts when its
    drug is the requested product itself or a systemic member of the therapy's drug class.
    """
    product = referral.request.product.casefold()
    found = [(i, t) for i, t, generic in treatments
             if (t.start_date is None or t.start_date <= referral.date)
             and (t.drug.casefold() == product or (generic and vocab.in_class(generic, therapy.drug_class, t.route)))]
    found.sort(key=lambda c: c[1].start_date or Date.min)
    starts = [t.start_date for _, t in found if t.start_date]
    first: Optional[Date] = min(starts) if starts else None
    return {"drug_class": therapy.drug_class, "treatments": [i for i, _ in found],
            "first_start": first.isoformat() if first else None,
            "patient_age": age_years(referral.patient.birth_date, referral.date)}


def product_of(referral: Referral, products: Any) -> dict[str, Any]:
    """The requested product as the product table knows it (empty when it does not)."""
    found = products.find(referral.request.product)
    if found is None:
        return {}
    brand, product = found
    return {"brand": brand, "therapy": product.therapy, "hcpcs": product.hcpcs,
            "billing_unit": f"{product.unit.amount:g} {product.unit.of}"}
