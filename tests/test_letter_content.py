"""What a letter says, per kind and per payer (issue 14, point 2), on referrals written for it.

The determination keys a letter reads and that other parts of the package are adding (`label`,
`policy.document`, `criteria[].citation`, `prior_authorization`, `billing`,
`authorization.cycles_approvable`) are given here by wrapping `to_dict` of a real determination,
in the shape the issue sets: a letter only reads them, never works them out.
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

from tests.test_letters import docx_text, flat, html_parse, pdf_text

render = pytest.importorskip("priorauth.letters.render")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DM_ILD = HERE / "data" / "letters" / "dm-dysphagia-ild.yaml"
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def criteria():
    return load_criteria()


def data_of(path: Path) -> dict:
    import json

    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8")), default=str))


def decide(data: dict, criteria, **extra):
    """A determination whose `to_dict` also carries `extra` keys (as the engine will)."""
    ref = referral_from_data(copy.deepcopy(data), "test")
    det = determine(ref, criteria)
    if extra:
        base = det.to_dict

        def to_dict():
            out = base()
            for k, v in extra.items():
                if k == "policy_document":
                    # a payer's own document (the baseline's is never called the payer's)
                    out["policy"] = {**(out["policy"] or {}), "document": v, "payer": "bluepeak-health"}
                elif k == "citations":
                    for c in out["criteria"]:
                        c["citation"] = v.get(c["id"])
                elif k == "authorization":
                    out["authorization"] = {**(out["authorization"] or {}), **v}
                else:
                    out[k] = v
            return out

        det.to_dict = to_dict
    return ref, det


def text_of(ref, det, fmt: str = "md", kind: str = "initial", denial=None, draft: bool = True) -> str:
    data = render.render_letter(ref, det, fmt, kind=kind, draft=draft, denial=denial)
    if fmt == "md":
        return flat(data.decode("utf-8").replace("\\", ""))
    if fmt == "html":
        return flat(" ".join(html_parse(data).text))
    if fmt == "docx":
        return flat(docx_text(data))
    return flat(pdf_text(data))


def pm_data() -> dict:
    data = data_of(DM_ILD)
    data["referral_id"] = "L-PM-1"
    data["diagnoses"] = [{"code": "M33.22", "description": "Polymyositis with myopathy", "onset_date": "2026-03-04"}]
    data["findings"] = [{"kind": "muscle_biopsy", "date": "2026-03-14", "result": "endomysial inflammation",
                         "supports_diagnosis": True}]
    return data


def denial_for(ref, **extra) -> dict:
    """A denial dated ten days before the referral's date (the day of the appeal)."""
    return {**DENIAL, "date": (ref.date - timedelta(days=10)).isoformat(), **extra}


DENIAL = {"reason": "Medical necessity not established: the corticosteroid trial is not documented.",
          "date": "2026-10-25", "reference": "UM-2026-55120", "criteria": ["steroid_intolerance"]}


# ------------------------------------------------------------------ history and current scores


def test_initial_letter_has_the_history_and_current_scores(criteria):
    ref, det = decide(data_of(DM_ILD), criteria)
    for fmt in ("md", "html", "docx", "pdf"):
        text = text_of(ref, det, fmt)
        assert "Clinical history" in text, fmt
        assert "choking on liquids" in text, fmt
        assert "Treatment goal: Restore swallowing" in text, fmt
        assert "Organ involvement: dysphagia and interstitial lung disease." in text, fmt
        assert "The disease is rapidly progressive." in text, fmt
        # current scores: the latest CK with the one before it, MMT-8, CDASI, a qualitative result
        assert "1,000 U/L" in text and "3,920 U/L on 03/10/2026" in text, fmt
        assert "112 points of 150" in text and "myopathic units with fibrillations" in text, fmt


def test_no_history_section_without_summary_or_scores(criteria):
    data = data_of(DM_ILD)
    del data["clinical_summary"]
    data.pop("clinical_course")
    data["assessments"] = [a for a in data["assessments"] if a["measure"] == "creatinine"]
    ref, det = decide(data, criteria)
    assert "Clinical history" not in text_of(ref, det)


# ------------------------------------------------------------------ FDA label


LABEL = {"product": "Octagam 10%", "on_label": True, "indication": "chronic immune dermatomyositis in adults",
         "label_date": "2021-07-15", "source": "Octagam 10% US prescribing information"}


def test_label_section_from_the_determination_and_absent_without_it(criteria):
    ref, det = decide(data_of(DM_ILD), criteria, label=LABEL)
    for fmt in ("md", "docx", "pdf"):
        text = text_of(ref, det, fmt)
        assert "FDA-approved labeling" in text, fmt
        assert "approved by the US Food and Drug Administration for chronic immune dermatomyositis in adults" in text
        assert "07/15/2021" in text
    ref, det = decide(pm_data(), criteria, label={**LABEL, "on_label": False, "indication": None})
    text = text_of(ref, det)
    assert "is not approved by the US Food and Drug Administration for polymyositis" in text
    assert "off-label" in text
    ref, det = decide(data_of(DM_ILD), criteria, label=None)  # a product the labels table lacks: no section
    assert "FDA-approved labeling" not in text_of(ref, det)


# ------------------------------------------------------------------ the payer's own policy


DOC = {"number": "0206", "title": "Immune Globulins", "date": "2025-12-05", "section": "Criteria I.B",
       "url": "https://example.org/cpb/0206.html"}


def test_the_payers_policy_is_cited_when_the_determination_names_it(criteria):
    ref, det = decide(data_of(DM_ILD), criteria, policy_document=DOC,
                      citations={"steroid_intolerance": "CPB 0206, Criteria I.B.2: serious adverse effects of corticosteroids"})
    for fmt in ("md", "pdf"):
        text = text_of(ref, det, fmt)
        assert "BluePeak Choice PPO policy 0206, Immune Globulins (12/05/2025)" in text, fmt
        assert "CPB 0206, Criteria I.B.2: serious adverse effects of corticosteroids" in text, fmt
        assert ("Policy section" if fmt == "pdf" else "Policy: ") in text and "commonly used by US payers" not in text


def test_baseline_says_criteria_commonly_used_and_never_cites_non_us_guidelines(criteria):
    for path in [DM_ILD, *sorted(SAMPLES.glob("*.yaml"))]:
        ref, det = decide(data_of(path), criteria)
        if det.policy is None:
            continue
        kinds = [ref.request.request_type] + (["appeal"] if det.determination == "meets_criteria" else [])
        for kind in kinds:
            text = text_of(ref, det, "md", kind=kind, denial=denial_for(ref, criteria=[]) if kind == "appeal" else None)
            assert not re.search(r"\b(Ontario|Australian?)\b", text), (path.name, kind)
            if det.policy.payer == "baseline":
                assert "the criteria commonly used by US payers for" in text, path.name


# ------------------------------------------------------------------ literature per disease


def cited(ref, det) -> str:
    ctx = render.letters_for().context(ref, det, kind=ref.request.request_type, draft=True)
    return " ".join(l["citation"] for l in ctx["literature"])


def test_literature_is_chosen_per_disease_and_therapy(criteria):
    ref, det = decide(data_of(DM_ILD), criteria)
    text = text_of(ref, det, "md")
    assert "ProDERM" in text and "PMID 36198179" in text and "Dalakas" in text
    ref, det = decide(pm_data(), criteria)
    lit = cited(ref, det)
    assert "ProDERM" not in lit and "Dalakas" not in lit and "polymyositis" in lit
    assert "ProDERM" not in text_of(ref, det, "md")
    by_sample = {p.stem: cited(*decide(data_of(p), criteria)) for p in SAMPLES.glob("*.yaml")}
    assert "Amagai" in by_sample["pf-flare-on-taper"] and "ProDERM" not in by_sample["pf-flare-on-taper"]
    assert "Joly" in by_sample["pv-rituximab-first-line"] and "Amagai" not in by_sample["pv-rituximab-first-line"]
    assert "epidermolysis bullosa acquisita" in by_sample["eba-rapidly-progressive"]
    assert "Scleromyxedema" in by_sample["scleromyxedema-first-line"]
    assert "ProDERM" not in by_sample["jdm-steroid-contraindication"]  # ProDERM enrolled adults only
    dm = {p.stem for p in SAMPLES.glob("*.yaml")
          if any(d.code.startswith(("M33.0", "M33.1", "M33.9")) for d in decide(data_of(p), criteria)[0].diagnoses)}
    for name, lit in by_sample.items():
        if name not in dm:
            assert "ProDERM" not in lit and "dermatomyositis" not in lit.lower() or name.startswith("jdm"), name


def test_every_literature_entry_names_its_disease_and_therapy():
    from priorauth.letters import content

    table = content.literature_table()
    assert table["entries"]
    for key, e in table["entries"].items():
        assert e["codes"] and e["therapies"] and e["citation"], key
        assert e.get("pmid") is None or re.fullmatch(r"\d{7,8}", e["pmid"]), key
        assert isinstance(e["verified"], bool) and isinstance(e["pmid_verified"], bool), key


# ------------------------------------------------------------------ plain words and numbers


SOFTWARE = [r"finding\(s\)", r"do\(es\)", r"\(\d+ of \d+ needed\)", r"\b\d+\.0\b(?= ?(?:weeks|mg|g|kg|U/L)\b)",
            r"\b(?:emg|mri|ivig|cdasi|pdai|hcpcs)\b", r"\b[a-z]+_[a-z_]+\b", r"\bwithin at (?:most|least)\b",
            r"\bor \w+ or \w+ or\b", r"\b\d{4}-\d{2}-\d{2}\b"]


@pytest.mark.parametrize("path", [DM_ILD, *sorted(SAMPLES.glob("*.yaml"))], ids=lambda p: p.stem)
def test_plain_words_and_numbers(criteria, path):
    ref, det = decide(data_of(path), criteria)
    kinds = [ref.request.request_type] + (["appeal"] if det.policy is not None else [])
    for kind in kinds:
        text = text_of(ref, det, "md", kind=kind, denial=denial_for(ref, criteria=[]) if kind == "appeal" else None)
        text = text.replace(ref.referral_id, "")
        for pattern in SOFTWARE:
            m = re.search(pattern, text)
            assert m is None, f"{path.stem} {kind}: {m.group(0)!r} in ...{text[max(0, m.start() - 60):m.end() + 40]}..."


def test_plain_runs_a_pattern_only_where_it_can_match(criteria, tmp_path):
    """plain() skips each pattern on text without the words every match holds: the same
    sentences as every pattern run on every text, on what the engine says about many referrals."""
    from priorauth.batch.generate import write_samples
    from priorauth.core.errors import InputError
    from priorauth.io.readers import read_referral
    from priorauth.letters import context

    def every_pattern(text: str) -> str:
        for pattern, repl, _ in context._PLAIN:
            text = pattern.sub(repl, text)
        text = context._OR_LIST.sub(context._or_list, text.replace("do(es)", "does"))
        text = context._LIMIT.sub(context._limit, text)
        return context._ACRONYMS.sub(lambda m: m.group(1).upper(), text)

    write_samples(150, tmp_path, seed=4, invalid_share=0)
    sentences = {"dose (mg) 1000 within at most 1000 mg", "2 of 3 needed) -> emg finding(s)", "a (b or c or d)"}
    for path in sorted(tmp_path.iterdir()):
        try:
            ref, warnings = read_referral(path, criteria=criteria)
        except InputError:
            continue
        for c in determine(ref, criteria, warnings).criteria():
            sentences.add(c["reason"])
            sentences.update(e["summary"] for e in c["evidence"])
    changed = 0
    for text in sentences:
        assert context.plain(text) == every_pattern(text), text
        changed += context.plain(text) != text
    assert len(sentences) > 300 and changed > 100


# ------------------------------------------------------------------ Original Medicare


MEDICARE = SAMPLES / "dm-medicare-contraindication.yaml"


def medicare_ready() -> dict:
    """Original Medicare dermatomyositis that meets the LCD pattern (an intolerance documented)."""
    data = data_of(DM_ILD)
    data["referral_id"] = "L-MCR-1"
    data["coverage"] = {"payer": "medicare", "plan_name": "Medicare Part B", "member_id": "1EG4-TE5-MK72"}
    return data


def test_original_medicare_gets_a_record_letter_with_no_prior_authorization(criteria):
    ref, det = decide(medicare_ready(), criteria)
    assert det.determination == "meets_criteria"
    for fmt in ("md", "html", "docx", "pdf"):
        text = text_of(ref, det, fmt, draft=False)
        assert "Medical necessity of Octagam 10% (J1568), for the medical record and the claim" in text, fmt
        assert "To the medical reviewer:" in text, fmt
        assert "prior authorization" not in text.lower().replace("does not require prior authorization", ""), fmt
        assert "request for prior authorization" not in text.lower(), fmt
        assert "Authorization period" not in text, fmt
    packet = render.letters_for().packet(det)
    cover = flat(pdf_text(packet))
    assert "Prior Authorization" not in cover and "Medical Review" in cover


def test_medicare_advantage_and_the_determinations_own_key(criteria):
    data = medicare_ready()
    data["coverage"]["plan_type"] = "medicare_advantage"
    ref, det = decide(data, criteria)
    assert "Request for prior authorization" in text_of(ref, det)
    # The determination's prior_authorization key decides, whatever the payer.
    ref, det = decide(data_of(DM_ILD), criteria,
                      prior_authorization={"required": False, "line_of_business": "original_medicare"})
    assert "for the medical record and the claim" in text_of(ref, det)
    ref, det = decide(medicare_ready(), criteria,
                      prior_authorization={"required": True, "line_of_business": "medicare_advantage"})
    assert "Request for prior authorization" in text_of(ref, det)


# ------------------------------------------------------------------ appeals


def test_appeal_goes_to_appeals_names_level_deadline_reviewer_and_expedited(criteria):
    ref, det = decide(data_of(DM_ILD), criteria)
    due = (date(2026, 10, 25) + timedelta(days=180)).strftime("%m/%d/%Y")
    for fmt in ("md", "docx", "pdf"):
        text = text_of(ref, det, fmt, kind="appeal", denial=DENIAL)
        assert "Appeals Department" in text and "Prior Authorization / Utilization Management" not in text, fmt
        assert "First-level internal appeal" in text and "first-level internal appeal" in text, fmt
        assert f"180 days allowed (29 CFR 2560.503-1(h)(3)(i), applied by 45 CFR 147.136(b)), which end on {due}" in text
        assert "a physician in rheumatology, the same specialty as mine, who took no part in the denial" in text, fmt
        assert "EXPEDITED REVIEW REQUESTED" in text and "I request expedited review" in text, fmt
        assert "rapidly progressive disease, dysphagia and interstitial lung disease" in text, fmt
        assert "Dear Appeals Reviewer:" in text, fmt


def test_appeal_answers_the_denied_criterion_and_summarises_the_rest(criteria):
    ref, det = decide(data_of(DM_ILD), criteria)
    ctx = render.letters_for().context(ref, det, kind="appeal", denial=DENIAL)
    points = ctx["appeal"]["points"]
    assert [p["id"] for p in points] == ["steroid_intolerance"]
    assert "Diagnosis confirmed by an accepted finding" in ctx["appeal"]["also_met"]
    text = text_of(ref, det, "md", kind="appeal", denial=DENIAL)
    assert "The denied criterion is answered below" in text
    assert "The denial does not dispute the other criteria, and the record meets each of them: diagnosis" in text
    assert text.count("1. Serious complications of systemic corticosteroids") == 1


def test_stable_course_asks_no_expedited_review(criteria):
    data = data_of(DM_ILD)
    data["clinical_course"] = "stable"
    data["clinical_summary"]["organ_involvement"] = ["skin"]
    ref, det = decide(data, criteria)
    text = text_of(ref, det, "md", kind="appeal", denial=DENIAL)
    assert "expedited" not in text.lower()


def test_appeal_levels_by_line_of_business_and_the_denials_address(criteria):
    data = medicare_ready()
    ref, det = decide(data, criteria)
    text = text_of(ref, det, "md", kind="appeal", denial=DENIAL)
    assert "Request for redetermination" in text and "120 days allowed (42 CFR 405.942(a))" in text
    assert "Redeterminations, Medicare Administrative Contractor" in text
    assert "EXPEDITED" not in text  # no expedited redetermination of a claim
    data["coverage"]["plan_type"] = "medicare_advantage"
    ref, det = decide(data, criteria)
    text = text_of(ref, det, "md", kind="appeal", denial=DENIAL)
    due = (date(2026, 10, 25) + timedelta(days=65)).strftime("%m/%d/%Y")
    assert "Request for reconsideration" in text and f"65 days allowed (42 CFR 422.582(b)), which end on {due}" in text
    ref, det = decide(data_of(DM_ILD), criteria)
    denial = {**DENIAL, "level": "external", "appeal_to": {"department": "Clinical Appeals Unit",
                                                             "address": "PO Box 1400, Lansing, MI 48901",
                                                             "fax": "1-800-555-0199"}}
    text = text_of(ref, det, "md", kind="appeal", denial=denial)
    assert "External review" in text and "Clinical Appeals Unit" in text and "Fax 1-800-555-0199" in text
    assert "PO Box 1400, Lansing, MI 48901" in text


def test_a_denial_file_with_a_bad_level_or_address_is_refused():
    from priorauth.core.errors import InputError
    from priorauth.letters.denial import parse_denial

    with pytest.raises(InputError, match="level"):
        parse_denial({"reason": "x", "level": "third"})
    with pytest.raises(InputError, match="appeal_to"):
        parse_denial({"reason": "x", "appeal_to": {"street": "1 Main"}})


# ------------------------------------------------------------------ the request table


BILLING = {"hcpcs": "J1568", "unit": "500 mg", "prescribed_units": 246, "dispensed_units": 260,
           "waste_units": 14, "modifier": "JW",
           "lines": [{"ndc": "68982-0850-05", "vial": "10 g", "count": 12, "units": 240},
                     {"ndc": "68982-0850-03", "vial": "5 g", "count": 2, "units": 20}],
           "administration": [{"cpt": "96365", "description": "IV infusion, first hour", "units": 1},
                              {"cpt": "96366", "description": "each additional hour", "units": 3}],
           "place_of_service": {"code": "19", "name": "Off campus outpatient hospital"}}


def test_request_table_carries_ndc_units_administration_place_and_facility(criteria):
    ref, det = decide(data_of(DM_ILD), criteria, billing=BILLING, authorization={"cycles_approvable": 6})
    for fmt in ("md", "html", "docx", "pdf"):
        text = text_of(ref, det, fmt)
        assert "NDC 68982-0850-05 (10 g vial) × 12; NDC 68982-0850-03 (5 g vial) × 2" in text, fmt
        assert ("260 units of 500 mg per cycle dispensed in whole vials (246 units prescribed; "
                "14 units discarded, billed with modifier JW)") in text
        assert "CPT 96365 IV infusion, first hour; CPT 96366 each additional hour × 3" in text, fmt
        assert "19 (Off campus outpatient hospital)" in text, fmt
        assert "Lakeside Infusion Center, NPI 1245319599, TIN 38-1234567, 410 Harbor Way" in text, fmt


def test_a_missing_package_code_is_said_once(criteria):
    lines = [{"ndc": None, "ndc_product": "68982-0850", "vial": 30.0, "count": 5, "units": 300},
             {"ndc": None, "ndc_product": "68982-0850", "vial": 2.0, "count": 2, "units": 8}]
    ref, det = decide(data_of(DM_ILD), criteria, billing=dict(BILLING, lines=lines))
    text = text_of(ref, det, "md")
    assert ("NDC 68982-0850 (30 g vial) × 5; NDC 68982-0850 (2 g vial) × 2; "
            "package codes to be added from the cartons") in text
    assert text.count("to be added from the carton") == 1


def test_cycles_requested_are_those_the_authorization_holds(criteria):
    ref, det = decide(data_of(DM_ILD), criteria, authorization={"cycles_approvable": 3})
    ctx = render.letters_for().context(ref, det)
    assert ctx["request"]["cycles"] == "3" and ctx["request"]["cycles_ordered"] == "6"
    text = text_of(ref, det)
    assert "3 cycles of" in text and "6 cycles of" not in text
    assert "the order is for 6" in text


def test_place_of_service_from_the_referral_until_billing_names_it(criteria):
    ref, det = decide(data_of(DM_ILD), criteria)
    assert "19 (Off Campus-Outpatient Hospital)" in text_of(ref, det)  # the CMS name, from billing


# ------------------------------------------------------------------ layout rules


def test_docx_table_rows_cannot_split_across_pages(criteria):
    ref, det = decide(data_of(DM_ILD), criteria, billing=BILLING)
    data = render.render_letter(ref, det, "docx", draft=True)
    xml = zipfile.ZipFile(io.BytesIO(data)).read("word/document.xml").decode("utf-8")
    rows = re.findall(r"<w:tr[ >].*?</w:tr>", xml, flags=re.S)
    assert rows and all("<w:cantSplit" in r for r in rows)


def test_trend_chart_only_with_three_points(criteria):
    data = data_of(DM_ILD)
    data["request"]["request_type"] = "continuation"
    data["treatments"].append({"drug": "Octagam 10%", "route": "iv", "start_date": "2026-06-01", "end_date": None,
                               "outcome": "response"})
    ref, det = decide(data, criteria)
    ctx = render.letters_for().context(ref, det, kind="continuation", draft=True)
    series = {s["key"] for s in ctx["continuation"]["series"]}
    assert "ck" not in series  # two CK values: a change in the table, not a trend


def test_criteria_rows_cite_the_section_under_the_policy_named_once(criteria):
    ref, det = decide(medicare_ready(), criteria)
    named = det.to_dict()["policy"]["document"]["citation"]
    rows = [c["citation"] for c in det.to_dict()["criteria"] if c.get("citation", "").startswith(named + ", ")]
    assert len(rows) >= 3  # the policy's sections, each behind the document's name
    for fmt in ("md", "pdf"):
        text = " ".join(text_of(ref, det, fmt, draft=False).split())
        assert "LCD L35093, Immune Globulin (rev. 02/05/2023)" in text, fmt  # named above the criteria
        assert "Coverage Indications, Limitations, and/or Medical Necessity" in text, fmt
        assert "(rev. 02/05/2023), Coverage Indications" not in text, fmt  # not again in every row
