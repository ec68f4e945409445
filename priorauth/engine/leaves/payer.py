"""Leaves a payer adds: preferred products, prescriber specialty, site of care."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..result import MET, NOT_MET, UNKNOWN, Evidence, Result, _leaf, humanize
from ..context import Context, _options
from ..nodes import NodeBase
from .registry import register


class ProductPreferred(NodeBase):
    """The product is on the payer's list, or a listed product was tried and failed first."""

    type: Literal["product_preferred"]
    products: list[str] = Field(min_length=1)
    excluded: list[str] = []


class PrescriberSpecialty(NodeBase):
    type: Literal["prescriber_specialty"]
    specialties: list[str] = Field(min_length=1)


class SiteOfCare(NodeBase):
    type: Literal["site_of_care"]
    allowed: list[Literal["home", "infusion_center", "hospital_outpatient", "physician_office"]] = Field(min_length=1)


def _brand(ctx: Context, name: str) -> str:
    found = ctx.criteria.products.find(name)
    return found[0] if found else name


def _fit_product(node: ProductPreferred, ctx: Context) -> dict:
    preferred = list(dict.fromkeys(_brand(ctx, p) for p in node.products))
    return {"change": {"product": preferred}, "text": f"a preferred product fits: {', '.join(preferred)}"}


def _fit_specialty(node: PrescriberSpecialty, ctx: Context) -> dict:
    wanted = " or ".join(node.specialties)
    return {"change": {"prescriber_specialty": list(node.specialties)}, "text": f"a prescriber whose specialty is {wanted}"}


@register(ProductPreferred, describe=lambda node, vocab: "one of " + ", ".join(node.products) + ", or one of them tried first",
          fit=_fit_product)
def _product_preferred(node: ProductPreferred, ctx: Context) -> Result:
    req = ctx.referral.request
    product = _brand(ctx, req.product)
    preferred = [_brand(ctx, p) for p in node.products]
    if product in [_brand(ctx, p) for p in node.excluded]:
        return _leaf(node, NOT_MET, f"{product} is not covered by this payer; use one of: {', '.join(preferred)}")
    if product in preferred:
        return _leaf(node, MET, f"{product} is a preferred product",
                     [Evidence("request", None, f"product {product}")])
    for i, t in enumerate(ctx.referral.treatments):
        tried = _brand(ctx, t.drug)
        if tried in preferred and t.outcome in ("inadequate_response", "intolerance"):
            return _leaf(node, MET, f"{product} is not preferred, but preferred {tried} was tried first "
                         f"({humanize(t.outcome)})", [ctx.evidence(i, t)])
        if tried == product and req.request_type == "continuation":
            return _leaf(node, MET, f"{product} continues an established course", [ctx.evidence(i, t)])
    return _leaf(node, NOT_MET, f"{product} is not a preferred product and no preferred product "
                 f"({', '.join(preferred)}) was tried first")


@register(PrescriberSpecialty, describe=lambda node, vocab: "prescribed by " + " or ".join(node.specialties),
          fit=_fit_specialty)
def _prescriber_specialty(node: PrescriberSpecialty, ctx: Context) -> Result:
    specialty = ctx.referral.prescriber.specialty
    wanted = " or ".join(node.specialties)
    if not specialty:
        return _leaf(node, UNKNOWN, f"the prescriber's specialty is not stated (needs {wanted})",
                     missing=[node.document or f"the prescriber's specialty ({wanted})"])
    if any(s.casefold() in specialty.casefold() for s in node.specialties):
        return _leaf(node, MET, f"prescribed by {specialty}", [Evidence("prescriber", None, specialty)])
    return _leaf(node, NOT_MET, f"prescriber specialty is {specialty}; the policy requires {wanted}")


@register(SiteOfCare, describe=lambda node, vocab: "given at " + " or ".join(humanize(a) for a in node.allowed))
def _site_of_care(node: SiteOfCare, ctx: Context) -> Result:
    site = ctx.referral.request.site_of_care
    if site is None:
        return _leaf(node, UNKNOWN, "the site of care is not stated", missing=["the planned site of care"])
    if site in node.allowed:
        return _leaf(node, MET, f"{humanize(site)} is an approved site of care",
                     [Evidence("request", None, f"site of care: {humanize(site)}")])
    allowed = _options(ctx, node, "allowed", ", ")
    return _leaf(node, NOT_MET, f"{humanize(site)} is not an approved site of care ({allowed})",
                 missing=[node.document] if node.document else [])
