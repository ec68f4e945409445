"""The determination's `billing` block and the cycles an approval period holds.

Pure: the referral, its `dosing` object (engine.dosing, with the dispensed vials) and the
criteria tables passed in (products.yaml, billing.yaml) give the claim's drug lines (HCPCS,
NDC per vial, units, JW / JZ), administration CPT codes and place of service. Nothing here
knows a code: every code comes from the tables.
"""

from __future__ import annotations

import math
from datetime import date as Date
from decimal import Decimal
from functools import lru_cache
from typing import Any, Optional

from ..model.referral import Referral


_FACTOR = {"g": Decimal(1000), "mg": Decimal(1)}


@lru_cache(maxsize=1024)
def _vial_units(size: float, vial_unit: str, amount: float, of: str) -> int:
    """Billing units a vial holds (a 1.65 g vial of a 100 mg code is 17 units, rounded up)."""
    return math.ceil(Decimal(repr(size)) * _FACTOR[vial_unit] / (Decimal(repr(amount)) * _FACTOR[of]))


def place_of_service(referral: Referral, table: Any) -> Optional[dict[str, Any]]:
    """The referral's `request.place_of_service`, else the one its site of care implies."""
    req = referral.request
    pos = table.place_of_service
    if req.place_of_service:
        known = pos.codes.get(req.place_of_service)
        return {"code": req.place_of_service, "name": known.name if known else None, "basis": "request",
                "verified": known is not None}
    site = req.site_of_care
    derived = pos.from_site_of_care.get(site) if site else None
    if derived is None:
        return None
    out = {"code": derived.code, "name": pos.codes[derived.code].name, "basis": "site_of_care",
           "verified": derived.verified}
    if derived.note:
        out["note"] = derived.note
    return out


def _administration(referral: Referral, dosing: dict, codes: list, fixed_dose: bool) -> list[dict[str, Any]]:
    days = 1 if fixed_dose else referral.request.days_per_cycle
    out = []
    for c in codes:
        entry: dict[str, Any] = {"cpt": c.cpt, "description": c.description}
        if c.units == "infusion_record":
            entry["units"] = None
            entry["rule"] = c.rule
        else:
            entry["units"] = days  # one a day of infusion (None when days are not stated)
        entry["verified"] = c.verified
        if c.note:
            entry["note"] = c.note
        out.append(entry)
    return out


def billing_block(referral: Referral, dosing: Optional[dict], products: Any, table: Any) -> Optional[dict[str, Any]]:
    """The `billing` object: null when there is no dose or the product is not in the table."""
    if dosing is None or table is None:
        return None
    found = products.find(referral.request.product)
    if found is None:
        return None
    brand, product = found
    fixed = "billing_units_per_dose" in dosing
    prescribed = dosing.get("billing_units_per_dose" if fixed else "billing_units_per_cycle")
    lines = [{"ndc": v["ndc"], "ndc_product": v.get("ndc_product"),
              "vial": f"{v['size_mg' if fixed else 'size_g']:g} {product.vial_unit}", "count": v["count"],
              "units": v["count"] * _vial_units(v["size_mg" if fixed else "size_g"], product.vial_unit,
                                                      product.unit.amount, product.unit.of),
              "verified": v.get("verified", True)}
             for v in dosing.get("vials") or []]
    waste, modifier = dosing.get("waste_units"), dosing.get("waste_modifier")
    mods = products.waste_modifiers
    claim_lines = []
    if prescribed is not None and mods is not None and waste is not None:
        # Administered and discarded amounts go on separate lines; JZ marks a line with no waste.
        claim_lines.append({"hcpcs": product.hcpcs, "modifier": mods.no_waste if waste == 0 else None,
                            "units": prescribed, "kind": "administered"})
        if waste:
            claim_lines.append({"hcpcs": product.hcpcs, "modifier": mods.waste, "units": waste, "kind": "discarded"})
    pos = place_of_service(referral, table)
    therapy = referral.request.therapy
    home_code = getattr(table.place_of_service.from_site_of_care.get("home"), "code", None)
    home = pos is not None and pos["code"] == home_code
    codes = (table.home_administration if home and therapy in table.home_administration
             else table.administration).get(therapy, [])
    return {
        "hcpcs": product.hcpcs,
        "product": brand,
        "unit": f"{product.unit.amount:g} {product.unit.of}",
        "per": "dose" if fixed else "cycle",
        "prescribed_units": prescribed,
        "lines": lines,
        "dispensed_units": dosing.get("dispensed_units"),
        "waste_units": waste,
        "modifier": modifier,
        "claim_lines": claim_lines,
        "administration": _administration(referral, dosing, codes, fixed),
        "place_of_service": pos,
    }


@lru_cache(maxsize=4096)
def cycles_in_period(start: Date, end: Date, interval_weeks: Optional[float]) -> Optional[int]:
    """Cycles (or doses) starting within [start, end] every `interval_weeks`: the first on
    `start`, then one each interval while the start date is not after `end`."""
    if not interval_weeks or end < start:
        return None if not interval_weeks else 0
    span = Decimal((end - start).days)
    step = Decimal(repr(float(interval_weeks))) * 7
    return int(span // step) + 1


def authorization_cycles(referral: Referral, dosing: Optional[dict], start: Date, end: Date) -> dict[str, Any]:
    """How many of the requested cycles (rituximab: doses) fit in the approval period, and the
    billing units the approvable ones need (prescribed and dispensed)."""
    req = referral.request
    # A fixed dose (rituximab) is counted in doses: the dosing object says so, else the request.
    fixed = "billing_units_per_dose" in dosing if dosing is not None else (req.dose_mg is not None or req.doses is not None)
    requested = req.doses if fixed else req.cycles
    fit = cycles_in_period(start, end, req.interval_weeks)
    if fit is None:
        approvable = requested
    elif requested is None:
        approvable = fit
    else:
        approvable = min(requested, fit)
    per = (dosing or {}).get("billing_units_per_dose" if fixed else "billing_units_per_cycle")
    dispensed = (dosing or {}).get("dispensed_units")
    out: dict[str, Any] = {
        "per": "dose" if fixed else "cycle",
        "interval_weeks": req.interval_weeks,
        "cycles_fit": fit,
        "cycles_requested": requested,
        "cycles_approvable": approvable,
        "units_per_cycle": per,
        "units_approvable": per * approvable if per is not None and approvable is not None else None,
        "dispensed_units_approvable": dispensed * approvable if dispensed is not None and approvable is not None else None,
    }
    if fixed:
        out["doses_requested"] = requested
        out["doses_approvable"] = approvable
    return out
