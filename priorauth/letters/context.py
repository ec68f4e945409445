"""The letter model: everything a letter says, as a plain JSON-able dict built from the
referral and what its determination decided (nothing re-derived)."""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from datetime import date as Date
from typing import Any, Mapping, Optional


from ..core.errors import InputError

from . import content
from .content import iso_dates
from .denial import parse_denial
from .wording import _clean_context, _rows, _say, lcfirst, long_date, num, us_date, wording

KINDS = ("initial", "continuation", "appeal")
MET = "met"
MAX_CHART_MEASURES = 6


# ------------------------------------------------------------------ the context


def _walk(result, ancestors: tuple = ()):
    yield result, ancestors
    for child in result.children:
        yield from _walk(child, ancestors + (result,))


# (pattern, replacement, a text in every match): plain() runs a pattern only on text that
# holds it (a substring test is far cheaper than a regular expression that finds nothing).
_PLAIN = [
    (re.compile(r"\s*\((\d+) of \1 needed\)"), "", "needed)"),                 # "(1 of 1 needed)": says nothing
    (re.compile(r"\((\d+) of (\d+) needed\)"), r"(\1 of the \2 the policy requires)", "needed)"),
    (re.compile(r"\b1 (\w+)\(s\)"), r"1 \1", "(s)"),
    (re.compile(r"\b(\d+) (\w+)\(s\)"), r"\1 \2s", "(s)"),
    (re.compile(r" -> "), " to ", " -> "),
    (re.compile(r": [-+](\d+%) (better|worse)\b"), r": \1 \2", "%"),
    (re.compile(r"\bfinding\(s\)"), "findings", "finding(s)"),
    (re.compile(r"\b(findings?) of an accepted kind\b"), r"\1 of a kind the criteria accept", " of an accepted kind"),
    (re.compile(r"\bemg\b"), "EMG", "emg"),
    (re.compile(r"\bmri\b"), "MRI", "mri"),
    (re.compile(r"\b(\d+)\.0\b(?!\.\d)"), r"\1", ".0"),                   # "every 4.0 weeks", "2.0 g/kg"
    (re.compile(r"\b(\d{1,3})(\d{3})\b(?= ?(?:mg|U/L|g)\b)"), r"\1,\2", ""),  # "1000 mg" -> "1,000 mg"
    (re.compile(r"\((mg|U/L)\) (\d{1,3})(\d{3})\b"), r"(\1) \2,\3", ") "),    # "dose (mg) 1000 within"
]


_ACRONYMS = re.compile(r"\b(ivig|scig|emg|mri|hrct|fvc|dlco|ck|cdasi|pdai|bpdai|absis|mmt-8|mmt8|dif|iif|bsa|ild|hcpcs|ndc|bmi|npi|igg|iga|hbsag)\b")
_OR_LIST = re.compile(r"\(([^()]*? or [^()]*? or [^()]*?)\)")
_LIMIT = re.compile(r"\b([a-z][a-z ]*?)(?: \(([^()]+)\))? ([\d.,]+) (within|exceeds the policy's) ([^;]+)")


def _or_list(m: "re.Match") -> str:
    items = m.group(1).split(" or ")
    return "(" + ", ".join(items[:-1]) + " or " + items[-1] + ")"


def _limit(m: "re.Match") -> str:
    what, unit, value, verb, limit = m.groups()
    shown = f"{what} {value}{' ' + unit if unit else ''}"
    if verb == "within":
        return f"{shown} (the criteria allow {limit})"
    return f"{shown}, more than the criteria allow ({limit})"


@functools.lru_cache(maxsize=8192)
def plain(text: str) -> str:
    """The engine's sentences as a person writes them (no "(1 of 1 needed)", "4.0 weeks", "emg")."""
    for pattern, repl, needed in _PLAIN:
        if needed in text:
            text = pattern.sub(repl, text)
    text = text.replace("do(es)", "does")
    if " or " in text:
        text = _OR_LIST.sub(_or_list, text)
    if " within " in text or " exceeds the policy's " in text:
        text = _LIMIT.sub(_limit, text)
    return _ACRONYMS.sub(lambda m: m.group(1).upper(), text)


def measure_label(words: Mapping[str, Any], key: str) -> str:
    """A measure as the letter names it: the wording's label, else its key in words ("emg_summary" -> "EMG summary")."""
    meta = (words.get("measures") or {}).get(key) or {}
    if meta.get("label"):
        return meta["label"]
    text = _ACRONYMS.sub(lambda m: m.group(1).upper(), key.replace("_", " "))
    return text[:1].upper() + text[1:]


def us_dates(text: Optional[str]) -> Optional[str]:
    """The determination's sentences say 2025-02-01; the letter says 02/01/2025 throughout, in plain words."""
    return plain(iso_dates(text)) if text else text


def _reason_and_evidence(reason: str, evidence: list[str]) -> dict:
    """Say each thing once: evidence the reason already quotes is not repeated as a bullet,
    and a reason that only lists several pieces of evidence keeps its lead-in, the bullets the rest."""
    quoted = [e for e in evidence if e and e in reason]
    if len(evidence) >= 2 and len(quoted) == len(evidence):
        lead = reason[:min(reason.index(e) for e in evidence)].rstrip(" :;,")
        if lead:
            reason = lead
            quoted = []
    return {"reason": us_dates(reason), "evidence": [us_dates(e) for e in evidence if e not in quoted]}


def _criterion(r, ancestors, policy) -> dict:
    src = policy.sources.get(r.node.source) if policy and r.node.source else None
    pathway = next((a.node for a in (*ancestors, r) if getattr(a.node, "pathway", False)), None)
    label = r.node.label or ""
    return {
        "id": r.node.id,
        "label": label[:1].upper() + label[1:],
        **_reason_and_evidence(r.reason, [e.summary for e in r.evidence]),
        "citation": src.citation if src else None,
        "url": src.url if src else None,
        "pathway": pathway.label if pathway is not None else None,
    }


def _met_leaves(result, policy) -> list[dict]:
    """The met leaves under `result`, in _walk's order, but none inside an alternative (child
    of any_of / at_least) that is not met as a whole: a met leaf of an unmet pathway (a drug
    being taken, in a rapidly-progressive pathway whose course is not rapidly progressive)
    proves nothing and is not shown as a criterion met. The walk does not go into such an
    alternative at all."""
    out: list[dict] = []

    def visit(r, ancestors: tuple) -> None:
        if not r.children:
            if r.status == MET:
                out.append(_criterion(r, ancestors, policy))
            return
        chain = ancestors + (r,)
        alternatives = not hasattr(r.node, "all_of")
        for child in r.children:
            if not (alternatives and child.status != MET):
                visit(child, chain)

    if result is not None:
        visit(result, ())
    return out


def _change(baseline: float, latest: float, better: Optional[str]) -> str:
    if latest == baseline:
        return "unchanged"
    if better not in ("lower", "higher"):
        return "changed"
    return "improved" if (latest < baseline) == (better == "lower") else "worse"


def _continuation(referral, words: dict, course: dict, therapy_short: str) -> dict:
    # Which treatments are earlier courses, and when the first began, the determination decided.
    courses = [referral.treatments[i] for i in course.get("treatments", ())]
    first = Date.fromisoformat(course["first_start"]) if course.get("first_start") else None
    groups: "OrderedDict[str, list]" = OrderedDict()
    for a in referral.assessments:
        if a.value is None:  # a qualitative result (a screening test) is no measure of change
            continue
        groups.setdefault(a.measure, []).append(a)
    measures, series, improved = [], [], []
    for key, points in groups.items():
        points = sorted(points, key=lambda a: a.date)
        meta = words.get("measures", {}).get(key) or {}
        label = measure_label(words, key)
        unit = next((p.unit for p in reversed(points) if p.unit), None) or ""
        if first is not None:
            before = [p for p in points if p.date <= first]
            baseline = before[-1] if before else None
        else:
            baseline = points[0]
        latest = points[-1] if points[-1] is not baseline else None
        row = {"key": key, "label": label, "unit": unit,
               "baseline": num(baseline.value) if baseline else None,
               "baseline_date": us_date(baseline.date) if baseline else None,
               "latest": num(latest.value) if latest else None,
               "latest_date": us_date(latest.date) if latest else None,
               "change": None, "change_percent": None, "verdict": None}
        if baseline and latest:
            delta = latest.value - baseline.value
            verdict = _change(baseline.value, latest.value, meta.get("better"))
            row["change"] = ("+" if delta > 0 else "") + num(delta)
            if baseline.value:
                row["change_percent"] = f"{'+' if delta > 0 else ''}{round(100 * delta / abs(baseline.value))}%"
            row["verdict"] = words.get("change", {}).get(verdict, verdict)
            if verdict == "improved":
                u = f" {unit}" if unit else ""
                improved.append(f"{lcfirst(label)} from {num(baseline.value)}{u} to {num(latest.value)}{u}")
        measures.append(row)
        if len(points) >= 3:  # two points are a change, not a trend: the table says it
            series.append({"key": key, "label": label, "unit": unit,
                           "points": [[p.date.isoformat(), p.value, us_date(p.date), num(p.value)] for p in points]})
    return {
        "first_course": us_date(first),
        "first_course_iso": first.isoformat() if first else None,
        "has_baseline": first is not None,
        "courses": [{"drug": t.drug, "dose": t.dose, "start_date": us_date(t.start_date),
                     "end_date": us_date(t.end_date)} for t in courses],
        "measures": measures,
        "improved": improved,
        "series": series[:MAX_CHART_MEASURES],
        "therapy_short": therapy_short,
    }


def _appeal(denial: dict, det, policy) -> dict:
    result = det.result
    found = {r.node.id: (r, anc) for r, anc in _walk(result)} if result is not None else {}
    points = []
    for i, cid in enumerate(denial["criteria"]):
        if cid not in found:
            known = ", ".join(found) or "none: no policy applies"
            raise InputError(f"denial criteria[{i}]: {cid!r} is not a criterion of the policy "
                             f"(its criteria: {known})")
        r, anc = found[cid]
        point = _criterion(r, anc, policy)
        if r.status == MET:
            point["answer"] = "appeal_met"
            point["support"] = _met_leaves(r, policy) if r.children else [dict(point)]
        else:
            alt = next((a for a in reversed(anc) if hasattr(a.node, "any_of") and a.status == MET), None)
            if alt is not None:
                point["answer"] = "appeal_alternative"
                point["support"] = _met_leaves(alt, policy)
            else:
                point["answer"] = "appeal_open"
                point["support"] = [dict(point)]
        points.append(point)
    met = _met_leaves(result, policy)
    if not denial["criteria"]:
        # The denial names no criterion: the indication (the pathway criteria) is answered
        # point by point; what else the record meets is summarised.
        indication = [m for m in met if m["pathway"]] or met
        for item in indication:
            points.append({**item, "answer": "appeal_met", "support": [dict(item)]})
    answered = {s["id"] for p in points for s in p["support"]} | {p["id"] for p in points}
    others = list(dict.fromkeys(m["label"] for m in met if m["id"] not in answered))
    return {**denial, "date_iso": denial["date"],
            "date": us_date(Date.fromisoformat(denial["date"])) if denial["date"] else None,
            "points": points, "also_met": others}


def letter_context(referral, determination, kind: str = "initial", draft: bool = False,
                   denial: Optional[Mapping[str, Any]] = None, *, vocabulary=None, words: Optional[dict] = None,
                   view: Optional[Mapping[str, Any]] = None, literature: Optional[Mapping[str, Any]] = None) -> dict:
    """Everything a letter says, as a plain JSON-able dict (strings, numbers, lists, dicts).

    `denial` (appeals): {reason, date?, reference?, criteria?: [criterion ids]}.
    Nothing clinical is worked out here: earlier courses, the patient's age, the product's
    codes and the dose come from the determination. (`vocabulary` is accepted for callers of
    the earlier signature and not used.) A batch passes what it has already: `view`, the
    determination's to_dict() (read, never changed), and `literature`, the table it read for
    the run (content.literature_table()).
    """
    if kind not in KINDS:
        raise InputError(f"letter kind {kind!r}: expected one of {', '.join(KINDS)}")
    det, ref = determination, referral
    if kind == "appeal" and not denial:
        raise InputError("an appeal letter needs the denial: --denial FILE, or --denial-reason")
    words = words if words is not None else wording()
    req, pat, cov, pres = ref.request, ref.patient, ref.coverage, ref.prescriber
    policy = det.policy
    view = view if view is not None else content.det_view(det)  # the spec's determination: what the letter reads
    d = view.get("dosing") or {}
    therapy = words["therapy"][req.therapy]
    auth = view.get("authorization") if isinstance(view.get("authorization"), dict) else None

    def weeks(t) -> Optional[str]:
        if not t.start_date:
            return None
        return num(round(((t.end_date or ref.date) - t.start_date).days / 7, 1))

    ig = req.therapy != "rituximab"
    cycles, grams, units = req.cycles, d.get("grams_per_cycle"), d.get("billing_units_per_cycle")
    # The cycles the authorization period holds (the determination's): the letter asks for those, not more.
    approvable = auth.get("cycles_approvable") if auth else None
    if ig and isinstance(approvable, int) and cycles and 0 < approvable < cycles:
        cycles = approvable
    doses, units_dose = req.doses, d.get("billing_units_per_dose")
    request = {
        "therapy": req.therapy,
        "therapy_name": therapy["name"],
        "therapy_short": therapy["short"],
        "is_rituximab": not ig,
        "product": d.get("product") or req.product,
        # The product's own code and unit, even when no dose can be computed yet (a draft
        # without the weight): the determination looked them up in the product table.
        "hcpcs": d.get("hcpcs") or det.product.get("hcpcs"),
        "billing_unit": d.get("billing_unit") or det.product.get("billing_unit"),
        "request_type": req.request_type,
        "dose_g_per_kg": num(req.dose_g_per_kg),
        "dosing_weight_kg": num(d.get("dosing_weight_kg")),
        "weight_basis": d.get("weight_basis"),
        "bmi": num(d.get("bmi")),
        "ideal_body_weight_kg": num(d.get("ideal_body_weight_kg")),
        "actual_weight_kg": num(pat.weight_kg),
        "grams_per_cycle": num(grams),
        "grams_per_day": num(d.get("grams_per_day")),
        "billing_units_per_cycle": num(units),
        "days_per_cycle": num(req.days_per_cycle),
        "interval_weeks": num(req.interval_weeks),
        "cycles": num(cycles),
        "cycles_ordered": num(req.cycles) if req.cycles != cycles else None,
        "total_grams": num(round(grams * cycles, 1)) if grams and cycles else None,
        "total_units": (num(units * cycles) if ig and units and cycles
                        else num(units_dose * doses) if units_dose and doses else None),
        "dose_mg": num(req.dose_mg),
        "doses": num(doses),
        "billing_units_per_dose": num(units_dose),
        "total_mg": num(req.dose_mg * doses) if req.dose_mg and doses else None,
        "site_of_care": words["site_of_care"].get(req.site_of_care, req.site_of_care) if req.site_of_care else None,
        "start_date": us_date(req.start_date),
    }
    walked = list(_walk(det.result)) if det.result else []
    covered = next((r for r, _ in walked if r.node.id == "diagnosis_covered"), None)
    idx = next((e.index for e in covered.evidence if e.kind == "diagnosis"), 0) if covered and covered.evidence else 0
    primary = ref.diagnoses[idx if idx is not None and idx < len(ref.diagnoses) else 0]
    finding_words = words["findings"]
    lit = literature if literature is not None else content.literature_table()
    appeals_rules = words.get("appeals") or content.appeals_table()
    lob, pa_required = content.line_of_business(view, ref)
    document = content.policy_document(view)
    # the criteria table under the policy's name cites sections; an appeal's point quotes it whole
    payer_cites = content.payer_citations(view, short=True)
    ctx: dict[str, Any] = {
        "kind": kind,
        "draft": bool(draft),
        "ready": det.determination == "meets_criteria",
        "determination": det.determination,
        "referral_id": ref.referral_id,
        "missing": [us_dates(m) for m in det.missing],
        "reasons": [us_dates(r) for r in det.reasons()],
        "warnings": list(det.warnings),
        "safety": [dict(s) for s in getattr(det, "safety", None) or []],
        "letter_date": long_date(ref.date),
        "letter_date_iso": ref.date.isoformat(),
        "patient": {
            "name": f"{pat.given_name} {pat.family_name}",
            "given_name": pat.given_name,
            "family_name": pat.family_name,
            "birth_date": us_date(pat.birth_date),
            "birth_date_iso": pat.birth_date.isoformat(),
            "age": det.course.get("patient_age"),
            "sex": pat.sex,
            "weight_kg": num(pat.weight_kg),
            "height_cm": num(pat.height_cm),
        },
        "prescriber": {
            "name": pres.name, "npi": pres.npi,
            "specialty": pres.specialty[:1].upper() + pres.specialty[1:] if pres.specialty else None,
            "organization": pres.organization, "phone": pres.phone, "fax": pres.fax, "address": pres.address,
        },
        "payer": {"key": cov.payer, "name": cov.plan_name or cov.payer.replace("-", " ").replace("_", " ").title(),
                  "plan_name": cov.plan_name, "member_id": cov.member_id, "group_number": cov.group_number},
        "request": request,
        "diagnoses": [{"code": dx.code, "description": dx.description, "onset_date": us_date(dx.onset_date)}
                      for dx in ref.diagnoses],
        "primary_diagnosis": {"code": primary.code, "description": primary.description,
                              "text": f"{primary.description} ({primary.code})" if primary.description else primary.code},
        "confirmation": [{"kind": f.kind, "label": finding_words.get(f.kind, {}).get("label", f.kind),
                          "date": us_date(f.date), "result": iso_dates(f.result)}
                         for f in ref.findings if f.supports_diagnosis],
        "treatments": [{"drug": t.drug, "route": words["route"].get(t.route, t.route) if t.route else None,
                        "dose": t.dose, "start_date": us_date(t.start_date),
                        "end_date": us_date(t.end_date) if t.end_date else ("present" if t.start_date else None),
                        "weeks": weeks(t),
                        "outcome": words["outcome"].get(t.outcome, t.outcome) if t.outcome else None,
                        "details": iso_dates(t.details)} for t in ref.treatments],
        "contraindications": [{"what": c.drug or (c.drug_class or "").replace("_", " "), "reason": iso_dates(c.reason),
                               "date": us_date(c.documented_date)} for c in ref.contraindications],
        "policy": {"found": policy is not None,
                   "id": policy.id if policy else None, "title": policy.title if policy else None,
                   "version": policy.version if policy else None, "payer": policy.payer if policy else None,
                   "effective": us_date(policy.effective) if policy else None,
                   "conditions": list(policy.conditions) if policy else [],
                   "document": document},
        "line_of_business": lob,
        "record_only": not pa_required,
        "history": content.history(ref, words),
        "label": content.label_status(view),
        "billing": content.billing(view, ref, words),
        "pathways": [{"id": r.node.id, "label": r.node.label}
                     for r, _ in walked if getattr(r.node, "pathway", False) and r.status == MET],
        "criteria": _met_leaves(det.result, policy),
        "met_ids": [r.node.id for r, _ in walked if r.status == MET],
        "literature": content.literature(ref, primary.code, lit),
        "labs": {},
        "authorization": None,
        "continuation": None,
        "appeal": None,
        "chart": None,
        "dosing": dict(det.dosing) if det.dosing else None,
    }
    latest: dict[str, Any] = {}
    for a in sorted(ref.assessments, key=lambda a: a.date):
        shown = a.result if a.value is None else f"{num(a.value)}{' ' + a.unit if a.unit else ''}"
        latest[a.measure] = f"{shown} on {us_date(a.date)}"
    ctx["labs"] = latest
    if isinstance(auth, dict):
        ctx["authorization"] = {
            k: (us_date(Date.fromisoformat(v)) if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) else v)
            for k, v in auth.items()}
        ctx["authorization"].setdefault("months", None)
    if kind == "continuation":
        ctx["continuation"] = _continuation(ref, words, det.course, therapy["short"])
        hist = ctx["history"]
        if hist:  # the response table shows each measure before and since: not twice
            hist["scores"] = []
            if not (hist["text"] or hist["goal"] or hist["organs"] or hist["course"]):
                ctx["history"] = None
    if kind == "appeal":
        denial = parse_denial(dict(denial), "denial")
        if denial["date"] and Date.fromisoformat(denial["date"]) > ref.date:
            raise InputError("denial date: after the referral date, which dates the letter; "
                             "update the referral's date to the day of the appeal")
        ctx["appeal"] = _appeal(denial, det, policy)
        ctx["appeal"]["route"] = content.appeal_route(lob, denial, ref, ref.date, appeals_rules, pres.specialty)

    # Citations: the payer's own policy where the determination names it; a source that is a
    # non-US guideline is never shown as the policy of a US payer.
    def cite(item: dict, cites: Mapping[str, str] = payer_cites) -> None:
        own = cites.get(item["id"])
        if own:
            item["citation"] = own
        elif document is not None or content.non_us(item.get("citation"), lit):
            item["citation"] = None
            item["url"] = None
        else:
            item["citation"] = iso_dates(item.get("citation"))
    for item in ctx["criteria"]:
        cite(item)
    if ctx["appeal"]:
        whole = content.payer_citations(view)
        for p in ctx["appeal"]["points"]:
            cite(p, whole)
            for item in p["support"]:
                cite(item, whole)

    # Wording, in stages: later snippets use what earlier ones produced.
    ctx["policy_name"] = _say(words.get("policy_name", ""), ctx)
    request["weight_basis_text"] = _say(words["weight_basis"].get(request["weight_basis"] or "", ""), ctx)
    request["summary"] = _say(words["request_summary"][req.therapy], ctx)
    request["rows"] = _rows(words["request_rows"][req.therapy], ctx)
    ctx["re_rows"] = _rows(words["re_rows"], ctx)
    ctx["letterhead"] = {"name": pres.organization or pres.name,
                         "lines": [t for t in (_say(s, ctx) for s in words["letterhead"]) if t]}
    ctx["recipient"] = [t for t in (_say(s, ctx) for s in words["recipient"]) if t]
    code = primary.code
    measures_by_code = words["response_measures_by_code"]
    ctx["monitoring_measures"] = measures_by_code[max((p for p in measures_by_code if code.startswith(p)), key=len)]
    extra = words.get("monitoring_by_code", {}).get(req.therapy, {})
    ctx["monitoring"] = [_say(s, ctx) for s in words["monitoring"][req.therapy]
                         + [item for prefix, items in extra.items() if code.startswith(prefix) for item in items]]
    para = words["paragraphs"]
    ctx["text"] = {
        "title": _say(words["title"][kind], ctx),
        "subject": _say(words["subject"][kind], ctx),
        "salutation": _say(words["salutation"], ctx),
        "opening": _say(para["opening"][kind], ctx),
        "closing": _say(para["closing"][kind], ctx),
        **{k: _say(para[k], ctx) for k in ("criteria_intro", "literature_intro", "attestation",
                                            "draft_banner", "draft_notice", "chart_caption", "chart_omitted",
                                            "criteria_source_header", "citation_label")},
        # Sections a letter may not have: their snippets are rendered only when it has them.
        **{k: _say(para[k], ctx) if ctx["history"] else "" for k in ("history_heading", "history_goal",
                                                                      "history_organs", "scores_intro")},
        **{k: _say(para[k], ctx) if ctx["label"] else "" for k in ("label_heading", "label")},
        **{k: _say(para[k], ctx) if kind == "appeal" else "" for k in ("appeal_route", "appeal_reviewer",
                                                                       "appeal_expedited", "appeal_also_met")},
        "response_intro": _say(para["response_intro"], ctx) if kind == "continuation" else "",
        "no_prior_course": _say(para["no_prior_course"], ctx) if kind == "continuation" else "",
        "appeal_intro": _say(para["appeal_intro"], ctx) if kind == "appeal" else "",
    }
    if ctx["appeal"]:
        for p in ctx["appeal"]["points"]:
            p["answer"] = _say(para[p["answer"]], ctx)
    ctx["enclosures"] = _enclosures(ref, ctx, words)
    ctx["signature"] = {"name": pres.name, "specialty": ctx["prescriber"]["specialty"], "npi": pres.npi,
                        "organization": pres.organization, "date": ctx["letter_date"]}
    return _clean_context(ctx)


def _enclosures(ref, ctx: dict, words: dict) -> list[str]:
    enc = words["enclosures"]
    out = [_say(enc["order"], ctx), _say(enc["clinic_note"], ctx)]
    for f in ref.findings:
        if f.supports_diagnosis:
            name = words["findings"].get(f.kind, {}).get("enclosure", f.kind.replace("_", " "))
            out.append(f"{name}{', ' + us_date(f.date) if f.date else ''}")
    if ref.assessments:
        labels = list(dict.fromkeys(measure_label(words, a.measure) for a in ref.assessments))
        out.append(_say(enc["assessments"], ctx, measures=labels))
    if ref.treatments:
        out.append(_say(enc["treatments"], ctx, drugs=list(dict.fromkeys(t.drug for t in ref.treatments))))
    if ref.contraindications:
        out.append(_say(enc["contraindications"], ctx, items=[c["what"] for c in ctx["contraindications"]]))
    if ctx["kind"] in ("continuation", "appeal"):
        out.append(_say(enc[ctx["kind"]], ctx))
    return list(dict.fromkeys(t for t in out if t))
