"""Leaves a payer adds: preferred products, prescriber specialty, site of care."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

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


Site = Literal["home", "infusion_center", "hospital_outpatient", "physician_office"]


class SiteOfCare(NodeBase):
    """The planned site of care is one the policy pays for: in `allowed` (when listed) and not
    in `refused`; `refused_reason` says why a refused site is not covered (data, e.g. Medicare
    Part B pays for IVIG at home only for primary immunodeficiency)."""

    type: Literal["site_of_care"]
    allowed: list[Site] = []
    refused: list[Site] = []
    refused_reason: Optional[str] = None
    # CMS place-of-service code -> site (data: `request.place_of_service` read beside the site)
    place_of_service_sites: dict[str, Site] = {}
    # no site and no place of service: unknown, or met with a warning to document it (a rule
    # that only refuses a site the request would have to state)
    if_unstated: Literal["unknown", "warn"] = "unknown"

    @model_validator(mode="after")
    def _some_rule(self) -> "SiteOfCare":
        if not self.allowed and not self.refused:
            raise ValueError("site_of_care needs `allowed` or `refused` sites")
        return self


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


SITES = ("physician_office", "infusion_center", "hospital_outpatient", "home")  # the referral's values


def _fit_site(node: SiteOfCare, ctx: Context) -> dict:
    sites = [s for s in (node.allowed or SITES) if s not in node.refused]
    return {"change": {"site_of_care": sites}, "text": "a site of care the policy pays for: "
            + ", ".join(humanize(s) for s in sites)}


def _fit_not_excluded(node: ProductNotExcluded, ctx: Context) -> dict:
    return {"change": {"product_not": list(node.products)},
            "text": "any immune globulin product other than " + ", ".join(node.products)}


def _describe_site(node: SiteOfCare, vocab) -> str:
    parts = []
    if node.allowed:
        parts.append("given at " + " or ".join(humanize(a) for a in node.allowed))
    if node.refused:
        parts.append("not at " + " or ".join(humanize(a) for a in node.refused)
                     + (f" ({node.refused_reason})" if node.refused_reason else ""))
    return "; ".join(parts)


@register(SiteOfCare, describe=_describe_site, fit=_fit_site)
def _site_of_care(node: SiteOfCare, ctx: Context) -> Result:
    req = ctx.referral.request
    site, pos = req.site_of_care, req.place_of_service
    pos_site = node.place_of_service_sites.get(pos) if pos else None
    if site and pos_site and site != pos_site and node.refused and {site, pos_site} & set(node.refused):
        return _leaf(node, UNKNOWN, f"the site of care ({humanize(site)}) and the place of service ({pos}: "
                     f"{humanize(pos_site)}) disagree", [Evidence("request", None, f"site of care: {humanize(site)}"),
                                                         Evidence("request", None, f"place of service {pos}")],
                     missing=[node.document or "the planned site of care (the site and the place of service disagree)"])
    site = site or pos_site
    if site is None:
        if node.if_unstated == "warn":
            ctx.warnings.append(f"site of care not stated: {node.document or 'document the planned site of care'}")
            return _leaf(node, MET, "the site of care is not stated (assumed not to be a refused site; document it)")
        return _leaf(node, UNKNOWN, "the site of care is not stated", missing=[node.document or "the planned site of care"])
    if site in node.refused:
        why = f": {node.refused_reason}" if node.refused_reason else ""
        return _leaf(node, NOT_MET, f"{humanize(site)} is not a covered site of care under this policy{why}",
                     [Evidence("request", None, f"site of care: {humanize(site)}")])
    if not node.allowed or site in node.allowed:
        return _leaf(node, MET, f"{humanize(site)} is an approved site of care",
                     [Evidence("request", None, f"site of care: {humanize(site)}")])
    allowed = _options(ctx, node, "allowed", ", ")
    return _leaf(node, NOT_MET, f"{humanize(site)} is not an approved site of care ({allowed})",
                 missing=[node.document] if node.document else [])


class ProductNotExcluded(NodeBase):
    """The product is not one the payer finds not medically necessary for any diagnosis in the
    policy (e.g. UHC 2021D0035AF: Asceniv, Cutaquig, Panzyga)."""

    type: Literal["product_not_excluded"]
    products: list[str] = Field(min_length=1)
    reason: Optional[str] = None


@register(ProductNotExcluded, describe=lambda node, vocab: "not one of " + ", ".join(node.products),
          fit=lambda node, ctx: _fit_not_excluded(node, ctx))
def _product_not_excluded(node: ProductNotExcluded, ctx: Context) -> Result:
    product = _brand(ctx, ctx.referral.request.product)
    if product in [_brand(ctx, p) for p in node.products]:
        why = f": {node.reason}" if node.reason else ""
        return _leaf(node, NOT_MET, f"{product} is not covered by this payer's policy{why}",
                     [Evidence("request", None, f"product {product}")])
    return _leaf(node, MET, f"{product} is not among the products this policy excludes",
                 [Evidence("request", None, f"product {product}")])
