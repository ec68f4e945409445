"""Referral parts from an indexed bundle, one function per part: patient, coverage,
prescriber, diagnoses, observations (findings, assessments, weight and height), reports
and procedures. Medications, contraindications and the request are in `medications`.

Each function takes the `Context` (bundle, maps, vocabulary, warnings) and returns plain
referral data; what it cannot map it reports through `ctx.notes`.
"""

from __future__ import annotations

import re
from datetime import date as Date
from typing import Any, Optional

from ...core.codes import normalize_icd10, npi_is_valid
from ...core.numbers import round1
from .bundle import (ICD10CM_SYSTEMS, LOINC_SYSTEM, NPI_SYSTEM, SNOMED_SYSTEM, code_word, codes, first_date, full_date,
                     human_name, period_end, period_start, rid, slug, texts)
from .context import Context
from .maps import AssessmentCode, PatientField, first_match

def patient(ctx: Context) -> dict:
    p = ctx.patient
    given, family, _ = human_name(p.get("name"))
    birth = full_date(p.get("birthDate"))
    if not given or not family:
        raise ctx.bundle.error(f"{rid(p)} name", "needs a given and a family name")
    if birth is None:
        raise ctx.bundle.error(f"{rid(p)} birthDate", "missing or not a full date (YYYY-MM-DD)")
    sex = p.get("gender") if p.get("gender") in ("female", "male", "other") else "unknown"
    return {"given_name": given, "family_name": family, "birth_date": birth.isoformat(), "sex": sex}


# ------------------------------------------------------------------ coverage and prescriber


def coverage(ctx: Context, supplement: dict, payer: Optional[str], member_id: Optional[str]) -> Optional[dict]:
    coverage = dict(supplement["coverage"]) if supplement.get("coverage") else _bundle_coverage(ctx)
    if coverage is None and not (payer and member_id):
        return None
    coverage = coverage or {}
    if payer:
        coverage["payer"] = payer
    if member_id:
        coverage["member_id"] = member_id
    return coverage


def _bundle_coverage(ctx: Context) -> Optional[dict]:
    candidates = []
    for cov in ctx.bundle.of_type("Coverage"):
        if cov.get("status") not in (None, "active"):
            ctx.notes.skip(cov, f"status {code_word(cov.get('status'))}")
            continue
        if not ctx.is_patient(cov, "beneficiary"):
            continue
        start, end = full_date(period_start(cov.get("period"))), full_date(period_end(cov.get("period")))
        in_force = (start is None or start <= ctx.date) and (end is None or end >= ctx.date)
        candidates.append((not in_force, cov.get("order") or 99, cov))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[:2])
    not_in_force, _, chosen = candidates[0]
    if not_in_force:
        ctx.notes.add(f"FHIR import: {rid(chosen)}: period does not cover the referral date; used all the same")
    for _, _, other in candidates[1:]:
        ctx.notes.skip(other, "another Coverage was chosen (in force on the referral date, lowest order)")
    ctx.bundle.used.add(id(chosen))
    return _coverage_fields(ctx, chosen)


def _coverage_fields(ctx: Context, cov: dict) -> dict:
    out: dict[str, Any] = {"payer": _payer_key(ctx, cov)}
    member = cov.get("subscriberId") or _member_identifier(cov)
    if member:
        out["member_id"] = member
    for cls in cov.get("class") or []:
        kind = set(codes(cls.get("type"), "http://terminology.hl7.org/CodeSystem/coverage-class"))
        if "plan" in kind:
            out["plan_name"] = cls.get("name") or cls.get("value")
        elif "group" in kind and cls.get("value"):
            out["group_number"] = cls["value"]
    return out


def _member_identifier(cov: dict) -> Optional[str]:
    idents = [i for i in cov.get("identifier") or [] if i.get("value")]
    member = [i for i in idents if "MB" in codes(i.get("type"), "http://terminology.hl7.org/CodeSystem/v2-0203")]
    return (member or idents or [{}])[0].get("value")


def _payer_key(ctx: Context, cov: dict) -> Optional[str]:
    for ref in cov.get("payor") or []:
        org = ctx.bundle.resolve(ref, cov, "payor", ("Organization", "Patient", "RelatedPerson"))
        if org is not None:
            ctx.bundle.used.add(id(org))
        name = (org or {}).get("name") or ref.get("display") or (ref.get("identifier") or {}).get("value")
        if name:
            return ctx.maps.payers.aliases.get(name.casefold().strip(), slug(name))
    ctx.notes.add(f"FHIR import: {rid(cov)} payor names no payer; give --payer")
    return None


def prescriber(ctx: Context, request_mr: Optional[dict]) -> Optional[dict]:
    """The requester of the infusion request; else the bundle's only Practitioner with a valid NPI."""
    if request_mr is not None and request_mr.get("requester"):
        who = ctx.bundle.resolve(request_mr["requester"], request_mr, "requester", ("Practitioner", "PractitionerRole"))
        if who is not None:
            return _practitioner_fields(ctx, who)
    valid = [p for p in ctx.bundle.of_type("Practitioner") if _npi(p)]
    if len(valid) == 1:
        roles = [r for r in ctx.bundle.of_type("PractitionerRole")
                 if ctx.bundle.resolve(r.get("practitioner"), r, "practitioner") is valid[0]]
        return _practitioner_fields(ctx, roles[0] if roles else valid[0])
    if valid:
        ctx.notes.add(f"FHIR import: {len(valid)} Practitioners have a valid NPI and none requested the "
                      "infusion: give `prescriber:` in the request file")
    return None


def _npi(resource: dict) -> Optional[str]:
    return next((i["value"] for i in resource.get("identifier") or []
                 if i.get("system") == NPI_SYSTEM and npi_is_valid(str(i.get("value", "")))), None)


def _practitioner_fields(ctx: Context, who: dict) -> Optional[dict]:
    role = who if who.get("resourceType") == "PractitionerRole" else None
    person = ctx.bundle.resolve(role.get("practitioner"), role, "practitioner", ("Practitioner",)) if role else who
    npi = (person and _npi(person)) or (role and _npi(role))
    if not npi or person is None:
        ctx.notes.add(f"FHIR import: {rid(who)} (the requester) has no valid NPI "
                      f"(system {NPI_SYSTEM}): give `prescriber:` in the request file")
        return None
    for r in (person, role):
        if r is not None:
            ctx.bundle.used.add(id(r))
    given, family, suffix = human_name(person.get("name"))
    out: dict[str, Any] = {"name": " ".join(p for p in (given, family) if p) + (f", {suffix}" if suffix else ""),
                           "npi": npi}
    if role:
        specialty = texts(role.get("specialty"))
        if specialty:
            out["specialty"] = specialty[0]
        org = ctx.bundle.resolve(role.get("organization"), role, "organization", ("Organization",))
        name = (org or {}).get("name") or (role.get("organization") or {}).get("display")
        if org is not None:
            ctx.bundle.used.add(id(org))
        if name:
            out["organization"] = name
    for system in ("phone", "fax"):
        value = next((t.get("value") for r in (role or {}, person) for t in r.get("telecom") or []
                      if t.get("system") == system and t.get("value")), None)
        if value:
            out[system] = value
    return out


# ------------------------------------------------------------------ diagnoses


def diagnoses(ctx: Context, given: list[dict]) -> list[dict]:
    """Supplement diagnoses first (they state the indication), then the bundle's Conditions."""
    out = [dict(d) for d in given]
    seen = {_code_key(d.get("code")) for d in out}
    for cond in ctx.bundle.of_type("Condition"):
        if not ctx.is_patient(cond, "subject") or not _condition_current(ctx, cond):
            continue
        diagnosis = _condition_diagnosis(ctx, cond)
        if diagnosis and _code_key(diagnosis["code"]) not in seen:
            seen.add(_code_key(diagnosis["code"]))
            out.append(diagnosis)
    return out


def _code_key(code: Any) -> str:
    return str(code or "").replace(".", "").upper()


def _condition_current(ctx: Context, cond: dict) -> bool:
    verification = codes(cond.get("verificationStatus"),
                         "http://terminology.hl7.org/CodeSystem/condition-ver-status")
    if set(verification) & {"refuted", "entered-in-error"}:
        ctx.notes.skip(cond, "verificationStatus refuted or entered-in-error")
        return False
    clinical = codes(cond.get("clinicalStatus"), "http://terminology.hl7.org/CodeSystem/condition-clinical")
    if "resolved" in clinical:
        ctx.notes.skip(cond, "clinicalStatus resolved: not a current diagnosis")
        return False
    return True


def _condition_diagnosis(ctx: Context, cond: dict) -> Optional[dict]:
    concept = cond.get("code") or {}
    onset = first_date(cond.get("onsetDateTime"), period_start(cond.get("onsetPeriod")))
    icd = _icd10_coding(ctx, cond, concept) or _snomed_coding(ctx, cond, concept)
    if icd is None:
        ctx.notes.skip(cond, "no ICD-10-CM coding, and no SNOMED CT code or name in criteria/fhir/snomed-icd10.yaml")
        return None
    ctx.bundle.used.add(id(cond))
    out = {"code": icd[0], "description": icd[1]}
    if onset:
        out["onset_date"] = onset.isoformat()
    return out


def _icd10_coding(ctx: Context, cond: dict, concept: dict) -> Optional[tuple[str, str]]:
    for coding in concept.get("coding") or []:
        if coding.get("system") in ICD10CM_SYSTEMS and coding.get("code"):
            try:
                code = normalize_icd10(coding["code"])
            except ValueError:
                ctx.notes.add(f"FHIR import: {rid(cond)} code: an ICD-10-CM coding is not a valid code; ignored")
                continue
            return code, coding.get("display") or concept.get("text") or code
    return None


def _snomed_coding(ctx: Context, cond: dict, concept: dict) -> Optional[tuple[str, str]]:
    words = " ".join(texts(concept)).casefold()
    for code in codes(concept, SNOMED_SYSTEM):
        target = ctx.maps.snomed.codes.get(code)
        if target and (target.verified or any(n.casefold() in words for n in target.names)):
            return normalize_icd10(target.icd10), target.description
    if not codes(concept, SNOMED_SYSTEM) and concept.get("coding"):
        return None  # coded in some other system only: names are not enough to guess from
    for name in sorted(ctx.maps.snomed.names, key=len, reverse=True):
        if re.search(rf"(?<![a-z]){re.escape(name.casefold())}(?![a-z])", words):
            target = ctx.maps.snomed.names[name]
            ctx.notes.add(f"FHIR import: {rid(cond)} mapped to {target.icd10} by its name, not its code: "
                          "check the diagnosis code")
            return normalize_icd10(target.icd10), target.description
    return None


# ------------------------------------------------------------------ observations


def observations(ctx: Context) -> tuple[list[dict], list[dict], dict]:
    findings: list[dict] = []
    assessments: list[dict] = []
    latest: dict[str, tuple[Date, float]] = {}
    for obs in ctx.bundle.of_type("Observation"):
        if not ctx.is_patient(obs, "subject"):
            continue
        if obs.get("status") not in ("final", "amended", "corrected"):
            ctx.notes.skip(obs, f"status {code_word(obs.get('status'))}: not a final result")
            continue
        loinc = codes(obs.get("code"), LOINC_SYSTEM)
        day = first_date(obs.get("effectiveDateTime"), period_start(obs.get("effectivePeriod")),
                         obs.get("effectiveInstant"), obs.get("issued"))
        patient_code = next((c for c in loinc if c in ctx.maps.loinc.patient), None)
        assess_code = next((c for c in loinc if c in ctx.maps.loinc.assessments), None)
        if patient_code:
            _body_measure(ctx, obs, ctx.maps.loinc.patient[patient_code], day, latest)
        elif assess_code:
            _assessment(ctx, obs, ctx.maps.loinc.assessments[assess_code], day, assessments, findings)
        else:
            _observation_finding(ctx, obs, day, findings)
    return findings, _latest_only(ctx, assessments), {name: round1(value) for name, (_, value) in latest.items()}


def _latest_only(ctx: Context, assessments: list[dict]) -> list[dict]:
    """A measure marked `latest_only` in loinc.yaml (creatinine, eGFR: safety screening reads
    the current value) keeps only its most recent value on or before the referral date; one
    measured after that date is not yet known on it, and is dropped."""
    only = {spec.measure for spec in ctx.maps.loinc.assessments.values() if spec.latest_only}
    if not only:
        return assessments
    newest: dict[str, dict] = {}
    for a in assessments:
        if a["measure"] in only and a["date"] <= ctx.date.isoformat():
            if a["measure"] not in newest or a["date"] >= newest[a["measure"]]["date"]:
                newest[a["measure"]] = a
    return [a for a in assessments if a["measure"] not in only or newest.get(a["measure"]) is a]


def _quantity(obs: dict) -> tuple[Optional[float], str]:
    q = obs.get("valueQuantity") or {}
    value = q.get("value")
    return (float(value) if isinstance(value, (int, float)) else None), str(q.get("code") or q.get("unit") or "")


def _body_measure(ctx: Context, obs: dict, spec: PatientField, day: Optional[Date],
                  latest: dict[str, tuple[Date, float]]) -> None:
    value, unit = _quantity(obs)
    if value is None or day is None:
        ctx.notes.skip(obs, "body measure without a numeric value or a full effective date")
        return
    if unit not in spec.units:
        ctx.notes.skip(obs, f"{spec.field}: unit not in criteria/fhir/loinc.yaml")
        return
    ctx.bundle.used.add(id(obs))
    if day > ctx.date:
        return  # measured after the referral's 'as of' date
    if spec.field not in latest or day >= latest[spec.field][0]:
        latest[spec.field] = (day, value * spec.units[unit])


def _assessment(ctx: Context, obs: dict, spec: AssessmentCode, day: Optional[Date],
                assessments: list[dict], findings: list[dict]) -> None:
    value, unit = _quantity(obs)
    if value is None or day is None:
        ctx.notes.skip(obs, "assessment without a numeric value or a full effective date")
        return
    ctx.bundle.used.add(id(obs))
    entry: dict[str, Any] = {"measure": spec.measure, "value": value}
    unit = (obs.get("valueQuantity") or {}).get("unit") or unit
    if unit:
        entry["unit"] = unit
    entry["date"] = day.isoformat()
    assessments.append(entry)
    if spec.elevated_finding and _interpretation(ctx, obs) is True:
        label = (texts(obs.get("code")) or [spec.measure])[0]
        findings.append({"kind": spec.elevated_finding, "date": day.isoformat(),
                         "result": " ".join(p for p in (label, f"{value:g}", unit, "(high)") if p),
                         "supports_diagnosis": True})


def _interpretation(ctx: Context, obs: dict) -> Optional[bool]:
    found = set(codes(obs.get("interpretation"),
                      "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"))
    if found & set(ctx.maps.findings.interpretation.positive):
        return True
    if found & set(ctx.maps.findings.interpretation.negative):
        return False
    return None


def _observation_finding(ctx: Context, obs: dict, day: Optional[Date], findings: list[dict]) -> None:
    """An Observation outside loinc.yaml is a finding only when its name gives a kind (serology)."""
    name = " ".join(texts(obs.get("code")))
    kind = first_match(ctx.maps.kind_matchers, name)
    if kind is None:
        ctx.notes.skip(obs, "code not in criteria/fhir/loinc.yaml and names no finding kind")
        return
    value, unit = _quantity(obs)
    value_text = " ".join([obs.get("valueString") or ""] + texts(obs.get("valueCodeableConcept"))
                          + ([f"{value:g} {unit}".strip()] if value is not None else []))
    supports = _interpretation(ctx, obs)
    if supports is None:
        supports = _supports(ctx, value_text)
    if supports is None:
        ctx.notes.add(f"FHIR import: {rid(obs)}: its interpretation or value does not say whether it supports "
                      "the diagnosis: supports_diagnosis set to false")
    ctx.bundle.used.add(id(obs))
    findings.append(_finding(kind, day, " ".join(p for p in (name, value_text.strip()) if p), bool(supports)))


def _finding(kind: str, day: Optional[Date], result: str, supports: bool) -> dict:
    out: dict[str, Any] = {"kind": kind}
    if day:
        out["date"] = day.isoformat()
    if result:
        out["result"] = result[:300]
    out["supports_diagnosis"] = supports
    return out


def _supports(ctx: Context, text: str) -> Optional[bool]:
    """Does a conclusion support the diagnosis? Negative phrases win; None: it does not say."""
    if not text.strip():
        return None
    if ctx.maps.negative.matches(text):
        return False
    return True if ctx.maps.positive.matches(text) else None


# ------------------------------------------------------------------ reports and procedures


FINAL_REPORT = {"final", "amended", "corrected", "appended"}


def reports_and_procedures(ctx: Context) -> list[dict]:
    out: list[dict] = []
    reported: set[int] = set()  # DiagnosticReports already made into findings
    for report in ctx.bundle.of_type("DiagnosticReport"):
        finding = _report_finding(ctx, report)
        if finding:
            reported.add(id(report))
            out.append(finding)
    for proc in ctx.bundle.of_type("Procedure"):
        finding = _procedure_finding(ctx, proc, reported)
        if finding:
            out.append(finding)
    return out


def _report_finding(ctx: Context, report: dict) -> Optional[dict]:
    if not ctx.is_patient(report, "subject"):
        return None
    kind = first_match(ctx.maps.kind_matchers, " ".join(texts(report.get("code"))))
    if kind is None:
        ctx.notes.skip(report, "its code names no finding kind in criteria/fhir/findings.yaml")
        return None
    if report.get("status") not in FINAL_REPORT:
        ctx.notes.skip(report, f"status {code_word(report.get('status'))}: not a final report")
        return None
    conclusion = " ".join([report.get("conclusion") or ""] + texts(report.get("conclusionCode"))).strip()
    day = first_date(report.get("effectiveDateTime"), period_start(report.get("effectivePeriod")), report.get("issued"))
    ctx.bundle.used.add(id(report))
    return _finding(kind, day, conclusion, _judged(ctx, report, conclusion))


def _judged(ctx: Context, resource: dict, conclusion: str) -> bool:
    supports = _supports(ctx, conclusion)
    if supports is None:
        ctx.notes.add(f"FHIR import: {rid(resource)}: no conclusion saying whether it supports the diagnosis: "
                      "supports_diagnosis set to false")
    return bool(supports)


def _procedure_finding(ctx: Context, proc: dict, reported: set[int]) -> Optional[dict]:
    if not ctx.is_patient(proc, "subject"):
        return None
    kind = first_match(ctx.maps.kind_matchers, " ".join(texts(proc.get("code"))))
    if kind is None:
        ctx.notes.skip(proc, "its code names no finding kind in criteria/fhir/findings.yaml")
        return None
    reports = [ctx.bundle.resolve(r, proc, "report", ("DiagnosticReport",)) for r in proc.get("report") or []]
    if any(id(r) in reported for r in reports if r is not None):
        ctx.bundle.used.add(id(proc))
        return None  # its DiagnosticReport already says what it found
    if proc.get("status") != "completed":
        ctx.notes.skip(proc, f"status {code_word(proc.get('status'))}: not completed")
        return None
    outcome = " ".join(texts(proc.get("outcome")) + [n.get("text") or "" for n in proc.get("note") or []]).strip()
    day = first_date(proc.get("performedDateTime"), period_start(proc.get("performedPeriod")))
    ctx.bundle.used.add(id(proc))
    return _finding(kind, day, outcome, _judged(ctx, proc, outcome))


