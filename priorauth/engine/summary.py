"""The policy, dosing and billing blocks of a determination (its JSON form) in plain words: the
same text for the terminal report (`priorauth check`) and the case page of the service."""

from __future__ import annotations


def policy_lines(ref: dict | None) -> list[str]:
    """Which policy decided, by its title and the payer's document (the id and version too, to
    find the criteria file), and whether the baseline stood in for a payer without its own."""
    if not ref:
        return []
    out = [f"Policy: {ref['title']} ({ref['id']}, payer {ref['payer']}, version {ref['version']}, "
           f"effective {ref['effective']})"]
    doc = ref.get("document")
    if doc:
        out.append(("Applies: " if doc.get("basis") else "Payer's policy: ") + doc["citation"]
                   + (f", {doc['section']}" if doc.get("section") else ""))
    if ref.get("baseline_for_payer"):
        out.append(f"No {ref['baseline_for_payer']} variant: criteria commonly used by US payers (baseline) applied")
    return out


def dosing_line(d: dict | None) -> str:
    if not d:
        return "cannot be computed (see what to document)"
    if "dose_mg" in d:
        units = d["billing_units_per_dose"]
        return (f"{d['product']} {d['dose_mg']:g} mg x {d['doses'] or '?'} doses; {d['hcpcs'] or 'HCPCS unknown'}: "
                f"{units if units is not None else '?'} units per dose (10 mg each)")
    basis = f"{d['weight_basis']} weight"
    if d["weight_basis"] == "adjusted":
        basis += f" (BMI {d['bmi']:g}, ideal {d['ideal_body_weight_kg']:g} kg, actual {d['actual_weight_kg']:g} kg)"
    units = d["billing_units_per_cycle"]
    return (f"{d['dose_g_per_kg']:g} g/kg x {d['dosing_weight_kg']:g} kg ({basis}) = {d['grams_per_cycle']:g} g per cycle; "
            f"{d['hcpcs'] or 'HCPCS unknown'}: {units if units is not None else '?'} units of {d['billing_unit'] or '?'}")


def billing_lines(b: dict, auth: dict | None) -> list[str]:
    """The billing block in words: vials and NDCs, waste and its modifier, administration, place."""
    per = b["per"]
    out = []
    if b["lines"]:
        vials = ", ".join(f"{l['count']} x {l['vial']} ({ndc_text(l)})" for l in b["lines"])
        out.append(f"dispensed per {per}: {vials} = {b['dispensed_units']} units of {b['hcpcs']}; "
                   f"prescribed {b['prescribed_units']}, wasted {b['waste_units']} ({b['modifier']})"
                   + carton_note(b["lines"]))
    for a in b["administration"]:
        units = a["units"] if a["units"] is not None else (a.get("rule") or "from the infusion record")
        out.append(f"administration {a['cpt']}: {a['description']}; units per {per}: {units}")
    pos = b["place_of_service"]
    out.append(f"place of service: {pos['code']} {pos['name'] or ''} (from the {pos['basis'].replace('_', ' ')})"
               if pos else "place of service: not stated (request.place_of_service or site_of_care)")
    if auth and auth.get("cycles_approvable") is not None:
        fit = f", {auth['cycles_fit']} fit in {auth['months']} months" if auth.get("cycles_fit") is not None else ""
        out.append(f"authorization: {auth['cycles_approvable']} {per}s approvable (requested "
                   f"{auth['cycles_requested'] if auth['cycles_requested'] is not None else '?'}{fit}); "
                   f"{auth['units_approvable']} units prescribed, {auth['dispensed_units_approvable']} dispensed")
    return out


def ndc_text(line: dict) -> str:
    """A billing line's NDC as billed (11 digits), or its labeler-product code when only that is
    on file (the caller says where the package code comes from: once per cell in a letter)."""
    if line.get("ndc"):
        return f"NDC {line['ndc']}"
    if line.get("ndc_product"):
        return f"NDC {line['ndc_product']}"
    return "NDC from the dispensed carton"


def carton_note(lines) -> str:
    """Said once after the vials, when some have only a labeler-product code: where their
    package codes come from."""
    n = sum(1 for line in lines if not line.get("ndc") and line.get("ndc_product"))
    return "" if not n else "; package codes to be added from the cartons" if n > 1 else \
        "; package code to be added from the carton"
