"""What a letter says beyond the criteria: history and current scores, the product's FDA-label
status, the payer's own policy, literature per disease and therapy, the billing lines, whether
the letter asks for a prior authorization at all (Original Medicare: no), and where an appeal
goes, at which level and by when.

Every clinical decision is the determination's: this module reads `det.to_dict()` (the spec's
output) and the referral's own words; it never evaluates a criterion. Wording is in
`templates/letter-text.yaml`, the appeal rules in `templates/appeals.yaml`, the literature in
`criteria/literature.yaml`.
"""

from __future__ import annotations

import functools
import re
from datetime import date as Date, timedelta
from pathlib import Path
from typing import Any, Mapping, Optional

from ..engine.summary import carton_note, ndc_text
from .wording import num, us_date


# ------------------------------------------------------------------ data tables


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> Any:
    from ..core.yamlio import read_yaml

    return read_yaml(Path(path))


def _table(path: Path) -> dict:
    try:
        data = _read(str(path), path.stat().st_mtime)
    except OSError:
        return {}
    return data if isinstance(data, dict) else {}


def literature_table(criteria: Optional[Path] = None) -> dict:
    """criteria/literature.yaml (of the criteria folder in use, else the bundled one)."""
    from ..core.resources import bundled, criteria_dir

    path = Path(criteria or criteria_dir()) / "literature.yaml"
    if not path.is_file():
        path = bundled("criteria") / "literature.yaml"
    return _table(path)


def appeals_table(templates: Optional[Path] = None) -> dict:
    from ..core.resources import bundled, templates_dir

    path = Path(templates or templates_dir()) / "appeals.yaml"
    if not path.is_file():
        path = bundled("templates") / "appeals.yaml"
    return _table(path)


# ------------------------------------------------------------------ small helpers


_ISO_IN_TEXT = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")


def iso_dates(value: Any) -> Any:
    """ISO dates in a text, alone or inside a citation ("rev. 2023-02-05"), as the letter writes
    dates (02/05/2023), nothing else changed; anything but text as it is."""
    return _ISO_IN_TEXT.sub(r"\2/\3/\1", value) if isinstance(value, str) and "-" in value else value


def _prefix(code: str, prefixes) -> bool:
    c = code.replace(".", "").upper()
    return any(c.startswith(str(p).replace(".", "").upper()) for p in prefixes or ())


def non_us(text: Optional[str], lit: Mapping[str, Any]) -> bool:
    """Does a criteria source name a non-US guideline (never "the policy" of a US payer)?"""
    if not text:
        return False
    return _non_us(text, tuple(lit.get("not_the_policy") or ()))


@functools.lru_cache(maxsize=4096)
def _non_us(text: str, words: tuple) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)


# ------------------------------------------------------------------ the determination's keys


def det_view(det) -> dict:
    """The determination as the spec prints it (`to_dict`), computed once for a letter."""
    return det.to_dict()


def _is_baseline(view: Mapping[str, Any]) -> bool:
    """The baseline is no payer's policy: a letter never calls it the payer's (it says the
    criteria commonly used by US payers, and cites each source by name)."""
    return (view.get("policy") or {}).get("payer") == "baseline"


def payer_citations(view: Mapping[str, Any], *, short: bool = False) -> dict[str, str]:
    """criterion id -> the payer policy's own citation (criteria[].citation), as text. `short`:
    without the policy document's name, which a letter gives once above its criteria (the same
    40 words in every row of the table were most of its length)."""
    if _is_baseline(view):
        return {}
    named = ((view.get("policy") or {}).get("document") or {}).get("citation") if short else None
    out = {}
    for c in view.get("criteria") or ():
        cit = c.get("citation")
        if isinstance(cit, Mapping):
            cit = ", ".join(str(cit[k]) for k in ("document", "section", "text") if cit.get(k))
        if cit and named and str(cit).startswith(named):
            rest = str(cit)[len(named):].lstrip(",;: ")
            cit = rest[:1].upper() + rest[1:] if rest else "The policy as a whole"
        if cit:
            out[c["id"]] = iso_dates(str(cit))
    return out


def policy_document(view: Mapping[str, Any]) -> Optional[dict]:
    doc = (view.get("policy") or {}).get("document")
    if _is_baseline(view) or not isinstance(doc, Mapping) or not (doc.get("title") or doc.get("number")):
        return None
    return {k: iso_dates(doc.get(k)) for k in ("number", "title", "date", "section", "url")}


def label_status(view: Mapping[str, Any]) -> Optional[dict]:
    lab = view.get("label")
    if not isinstance(lab, Mapping) or lab.get("on_label") is None:
        return None
    return {"product": lab.get("product"), "on_label": bool(lab.get("on_label")),
            "indication": lab.get("indication"), "age_group": lab.get("age_group"),
            "label_date": iso_dates(lab.get("label_date")),
            "source": iso_dates(lab.get("source"))}


def line_of_business(view: Mapping[str, Any], ref) -> tuple[str, bool]:
    """(line of business, is a prior authorization required?): the determination's
    `prior_authorization`, which the engine decides from criteria/payers.yaml."""
    pa = view.get("prior_authorization") or {}
    return str(pa.get("line_of_business") or "commercial"), bool(pa.get("required", True))


# ------------------------------------------------------------------ sections


def history(ref, words: dict) -> Optional[dict]:
    """The clinical history (clinical_summary) and the current activity scores."""
    cs = ref.clinical_summary
    organ_words = words.get("organ_involvement") or {}
    organs = [organ_words.get(o, str(o).replace("_", " ")) for o in (cs.organ_involvement if cs else [])]
    measures = words.get("measures") or {}
    latest: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    for a in sorted(ref.assessments, key=lambda a: a.date):
        meta = measures.get(a.measure) or {}
        if "better" in meta and meta["better"] is None:  # a safety lab (creatinine), not disease activity
            continue
        if a.measure in latest:
            previous[a.measure] = latest[a.measure]
        latest[a.measure] = a
    scores = []
    for key, a in latest.items():
        prev = previous.get(key)

        def shown(x):
            return x.result if x.value is None else f"{num(x.value)}{' ' + x.unit if x.unit else ''}"

        from .context import measure_label

        scores.append({"label": measure_label(words, key), "value": shown(a), "date": us_date(a.date),
                       "previous": f"{shown(prev)} on {us_date(prev.date)}" if prev is not None else None})

    text = iso_dates(cs.history) if cs and cs.history else None
    goal = cs.goal if cs and cs.goal else None
    if not (text or goal or organs or scores):
        return None
    return {"text": text or "", "goal": goal, "organs": organs, "scores": scores,
            "course": (words.get("clinical_course") or {}).get(ref.clinical_course) if ref.clinical_course else None}


def literature(ref, primary_code: str, lit: Mapping[str, Any]) -> list[dict]:
    therapy = ref.request.therapy
    out = []
    for key, e in (lit.get("entries") or {}).items():
        if therapy in (e.get("therapies") or ()) and _prefix(primary_code, e.get("codes")):
            out.append({"id": key, "citation": e["citation"], "pmid": e.get("pmid"), "url": e.get("url"),
                        "finding": e.get("finding"), "verified": bool(e.get("verified")),
                        "disease": e.get("disease")})
    return out


def billing(view: Mapping[str, Any], ref, words: dict) -> dict:
    """The billing lines of the request table, from the determination's `billing`; the
    servicing facility and place of service from the referral when billing does not name them."""
    b = view.get("billing") if isinstance(view.get("billing"), Mapping) else None
    pos_names = words.get("place_of_service") or {}
    out: dict[str, Any] = {"found": b is not None, "ndc": None, "units": None, "administration": None,
                           "place_of_service": None, "facility": None}
    if b:
        lines = [ln for ln in b.get("lines") or () if isinstance(ln, Mapping)]
        if lines:
            out["ndc"] = "; ".join(
                ndc_text(ln) + (f" ({num(ln['vial'])}{'' if isinstance(ln.get('vial'), str) else ' g'} vial)"
                                          if ln.get("vial") is not None else "")
                + (f" × {num(ln['count'])}" if ln.get("count") is not None else "")
                for ln in lines)
            out["ndc"] += carton_note(lines)
        if b.get("dispensed_units") is not None:
            unit = f" of {b['unit']}" if b.get("unit") else ""
            per = b.get("per") or "cycle"
            head = f"{num(b['dispensed_units'])} units{unit} per {per} dispensed in whole vials"
            notes = []
            if b.get("prescribed_units") is not None and b.get("prescribed_units") != b.get("dispensed_units"):
                notes.append(f"{num(b['prescribed_units'])} units prescribed")
            if b.get("waste_units"):
                notes.append(f"{num(b['waste_units'])} units discarded, billed with modifier {b.get('modifier') or 'JW'}")
            elif b.get("modifier"):
                notes.append(f"no waste: modifier {b['modifier']}")
            out["units"] = head + (f" ({'; '.join(notes)})" if notes else "")
        adm = [a for a in b.get("administration") or () if isinstance(a, Mapping)]
        if adm:
            out["administration"] = "; ".join(
                f"CPT {a.get('cpt')}" + (f" {a['description']}" if a.get("description") else "")
                + (f" × {num(a['units'])}" if a.get("units") not in (None, 1) else "") for a in adm)
        pos = b.get("place_of_service")
        if isinstance(pos, Mapping) and pos.get("code"):
            out["place_of_service"] = f"{pos['code']} ({pos.get('name') or pos_names.get(str(pos['code']), '')})".replace(" ()", "")
    if out["place_of_service"] is None and ref.request.place_of_service:
        code = ref.request.place_of_service
        name = pos_names.get(code)
        out["place_of_service"] = f"{code} ({name})" if name else code
    f = ref.request.servicing_facility
    if f is not None:
        bits = [f.name]
        if getattr(f, "npi", None):
            bits.append(f"NPI {f.npi}")
        if getattr(f, "tin", None):
            bits.append(f"TIN {f.tin}")
        if getattr(f, "address", None):
            bits.append(f.address)
        if getattr(f, "phone", None):
            bits.append(f"phone {f.phone}")
        if getattr(f, "fax", None):
            bits.append(f"fax {f.fax}")
        out["facility"] = ", ".join(str(x) for x in bits if x)
    return out


def appeal_route(lob: str, denial: Mapping[str, Any], ref, letter_date: Date, table: Mapping[str, Any],
                 specialty: Optional[str]) -> dict:
    """Level, deadline, department, expedited review and the reviewer asked for."""
    lobs = table.get("lines_of_business") or {}
    rules = lobs.get(lob) or lobs.get("commercial") or {}
    levels = rules.get("levels") or {}
    level_key = denial.get("level") if denial.get("level") in levels else rules.get("default")
    level = levels.get(level_key) or {}
    deadline = None
    days_left = None
    if denial.get("date") and level.get("days"):
        due = Date.fromisoformat(denial["date"]) + timedelta(days=int(level["days"]))
        deadline = us_date(due)
        days_left = (due - letter_date).days
    to = dict(denial.get("appeal_to") or {})
    payer_row = (table.get("payers") or {}).get(ref.coverage.payer) or {}
    department = to.get("department") or payer_row.get("department") or rules.get("department") \
        or table.get("default_department") or "Appeals Department"
    when = table.get("expedited_when") or {}
    reasons = []
    if ref.clinical_course in (when.get("clinical_course") or ()):
        reasons.append(str(ref.clinical_course).replace("_", " ") + " disease")
    cs = ref.clinical_summary
    for o in (cs.organ_involvement if cs else []):
        if o in (when.get("organ_involvement") or ()):
            reasons.append(str(o).replace("_", " "))
    exp = rules.get("expedited") or {}
    return {
        "line_of_business": lob,
        "level_key": level_key,
        "level": level.get("name") or "appeal",
        "days": level.get("days"),
        "rule": level.get("rule"),
        "deadline": deadline,
        "days_left": days_left,
        "department": department,
        "address": to.get("address") or payer_row.get("address"),
        "fax": to.get("fax") or payer_row.get("fax"),
        "expedited": bool(reasons) and bool(exp.get("allowed")),
        "expedited_reasons": reasons,
        "expedited_hours": exp.get("hours"),
        "expedited_rule": exp.get("rule"),
        "reviewer_rule": rules.get("reviewer_rule"),
        "specialty": (specialty or "").lower() or None,
    }
