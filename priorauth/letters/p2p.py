"""The peer-to-peer sheet (`letter --kind p2p`): one page the prescriber holds during the call
with the payer's medical director: the contested criterion, key dates and labs, the policy's
wording and the literature (with PMIDs where the criteria sources give them)."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

_PMID = re.compile(r"(?:PMID|pubmed)[:\s]*(\d{6,9})|pubmed\.ncbi\.nlm\.nih\.gov/(\d{6,9})", re.I)
MAX_DATES = 12
MAX_LABS = 6
STATUS = {"met": "met in the record", "not_met": "not met", "unknown": "documentation missing"}


def pmid(*texts: Optional[str]) -> Optional[str]:
    for text in texts:
        m = _PMID.search(text or "")
        if m:
            return m.group(1) or m.group(2)
    return None


def p2p_context(referral, determination, *, draft: bool = False, denial: Optional[Mapping[str, Any]] = None,
                vocabulary=None, words: Optional[dict] = None) -> dict:
    from .context import measure_label
    from .render import letter_context, num, us_date, us_dates

    ref, det = referral, determination
    kind = "appeal" if denial else ref.request.request_type
    ctx = letter_context(ref, det, kind=kind, draft=draft, denial=denial, vocabulary=vocabulary, words=words)
    policy = det.policy
    rows = det.criteria()
    by_id = {r["id"]: r for r in rows}

    from . import content

    lit = content.literature_table()
    own = content.payer_citations(content.det_view(det))
    document = ctx["policy"].get("document")

    def item(r: dict) -> dict:
        src = policy.sources.get(r["source"]) if policy and r["source"] else None
        basis = src if src is not None and not content.non_us(src.citation, lit) else None
        if own.get(r["id"]):
            src = None
        elif src is not None and (document is not None or content.non_us(src.citation, lit)):
            src = None  # never a non-US guideline as the policy of a US payer
        return {"id": r["id"], "label": r["label"], "status_text": STATUS.get(r["status"], r["status"]),
                "reason": us_dates(r["reason"]), "evidence": [us_dates(e["summary"]) for e in r["evidence"]][:4],
                "citation": own.get(r["id"]) or (src.citation if src else None), "url": src.url if src else None,
                # the source behind the criterion (a trial, a label): literature when it has a PMID
                "basis": basis.citation if basis else None, "basis_url": basis.url if basis else None}

    if denial and denial.get("criteria"):
        contested = [item(by_id[c]) for c in denial["criteria"] if c in by_id]
    else:
        open_leaves = [r for r in rows if r["status"] != "met" and not any(x["parent"] == r["id"] for x in rows)]
        pathways = [r for r in rows if r["pathway"] and r["status"] == "met" and r["pathway"] == r["label"]]
        contested = [item(r) for r in (open_leaves if det.determination != "meets_criteria" else
                                       [r for r in rows if r["id"] in det.pathways_met] or pathways)]
    contested = contested[:3]

    dates: list[tuple[Any, str]] = []
    for d in ref.diagnoses:
        if d.onset_date:
            dates.append((d.onset_date, f"Onset: {d.description or d.code} ({d.code})"))
    for f in ref.findings:
        if f.date and f.supports_diagnosis:
            label = (words or {}).get("findings", {}).get(f.kind, {}).get("label", f.kind)
            dates.append((f.date, f"{label}{': ' + f.result if f.result else ''}"))
    for t, shown in zip(ref.treatments, ctx["treatments"]):
        if t.start_date:
            end = (", still taken" if shown["end_date"] == "present" else f" to {shown['end_date']}") if shown["end_date"] else ""
            dates.append((t.start_date, f"{t.drug} started{end}"
                                        f"{' (' + shown['weeks'] + ' weeks)' if shown['weeks'] else ''}"
                                        f"{': ' + shown['outcome'].lower() if shown['outcome'] else ''}"))
    if denial and denial.get("date"):
        from datetime import date as Date

        dates.append((Date.fromisoformat(denial["date"]), f"Denial{' ' + denial['reference'] if denial.get('reference') else ''}"))
    if ref.request.start_date:
        dates.append((ref.request.start_date, f"Requested start of {ctx['request']['product']}"))
    dates.sort(key=lambda x: x[0])

    labs: dict[str, list] = {}
    for a in sorted(ref.assessments, key=lambda a: a.date):
        labs.setdefault(a.measure, []).append(a)
    lab_rows = []
    for key, points in list(labs.items())[:MAX_LABS]:
        unit = next((p.unit for p in reversed(points) if p.unit), "") or ""
        values = [f"{num(p.value) if p.value is not None else (p.result or '')} ({us_date(p.date)})" for p in points[-4:]]
        lab_rows.append({"label": measure_label(words or {}, key) + (f", {unit}" if unit else ""),
                         "values": " → ".join(values)})

    wording = [ctx["policy_name"][:1].upper() + ctx["policy_name"][1:]] if policy else ["No coverage policy applies."]
    for c in contested:
        if c["citation"] and c["citation"] not in wording:
            wording.append(c["citation"])
    literature = [{"citation": l["citation"], "pmid": l.get("pmid") or pmid(l["citation"], l.get("url"))}
                  for l in ctx["literature"]]
    for c in contested:
        found = c["basis"] and pmid(c["basis"], c["basis_url"])
        if found and all(l["pmid"] != found for l in literature):
            literature.append({"citation": c["basis"], "pmid": found})

    pres = ctx["prescriber"]
    ctx["kind"] = "p2p"
    ctx["p2p"] = {
        "header": [{"label": k, "value": v} for k, v in (
            ("Patient", f"{ctx['patient']['name']}, DOB {ctx['patient']['birth_date']}"),
            ("Member ID", ctx["payer"]["member_id"]), ("Plan", ctx["payer"]["name"]),
            ("Request", f"{ctx['request']['product']}{' (' + ctx['request']['hcpcs'] + ')' if ctx['request']['hcpcs'] else ''}"),
            ("Regimen", ctx["request"]["summary"]), ("Diagnosis", ctx["primary_diagnosis"]["text"]),
            ("Prescriber", f"{pres['name']}{', ' + pres['phone'] if pres['phone'] else ''}"),
            ("Denial", (f"{denial.get('reference') or ''} {ctx['appeal']['date'] or ''}".strip() if denial else "")),
            ("Course", "; ".join(x for x in (((ctx["history"] or {}).get("course") or "").replace("The disease is ", "")
                                             .rstrip("."), ", ".join((ctx["history"] or {}).get("organs") or [])) if x)),
            ("Appeal", (f"{ctx['appeal']['route']['level']}" + (f", due {ctx['appeal']['route']['deadline']}" if ctx['appeal']['route']['deadline'] else "")
                        + ("; expedited review requested" if ctx['appeal']['route']['expedited'] else "")) if ctx.get("appeal") else ""),
        ) if v],
        "contested": contested,
        "dates": [{"date": us_date(d), "event": e} for d, e in dates[-MAX_DATES:]],
        "labs": lab_rows,
        "policy": wording[:3],
        "literature": literature[:4],
        "ask": (f"Approve {ctx['request']['summary']} of {ctx['request']['product']}. "
                + (f"The denial states: \"{denial['reason']}\" The record answers it as above." if denial else
                   "Every criterion of the policy is documented in the enclosed records."
                   if det.determination == "meets_criteria" else
                   "What remains to be documented is listed above.")),
    }
    return ctx
