"""Safety screening: warnings from criteria/safety.yaml, and a safety rule used as a criterion."""

from __future__ import annotations

import shutil

import yaml

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

from .conftest import ROOT, referral_data, status_of

REFRACTORY = [{"drug": "prednisone", "dose": "60 mg daily", "start_date": "2026-01-01", "end_date": "2026-06-01",
               "outcome": "inadequate_response"}]


def rules(det):
    return {s["rule"]: s for s in det.safety}


def test_clean_chart_has_no_safety_warnings(decide):
    det = decide(treatments=REFRACTORY)
    assert det.safety == [] and det.warnings == []


def test_renal_function_must_be_recent(decide):
    det = decide(treatments=REFRACTORY, assessments=[{"measure": "creatinine", "value": 0.8, "date": "2026-10-20"}])
    assert rules(det)["renal_function_recent"]["status"] == "missing"   # 31 days before 2026-11-20
    assert any(w.startswith("safety: no renal function test") for w in det.warnings)
    det = decide(treatments=REFRACTORY, assessments=[{"measure": "egfr", "value": 85, "date": "2026-10-21"}])
    assert "renal_function_recent" not in rules(det)


def test_iga_deficiency(decide):
    det = decide(treatments=REFRACTORY, diagnoses=[{"code": "M33.12"}, {"code": "D80.2"}])
    assert rules(det)["iga_deficiency"]["status"] == "risk"
    assert det.determination == "meets_criteria"  # a warning, not a criterion, in the baseline


def test_thrombosis_risk_factors_are_named(decide):
    det = decide(treatments=REFRACTORY + [{"drug": "Premarin", "start_date": "2025-01-01"}],
                 patient={"birth_date": "1950-01-01"})
    message = rules(det)["thrombosis_risk"]["message"]
    assert "age 76" in message and "Premarin being taken" in message


def test_product_specific_contraindications(decide):
    det = decide(treatments=REFRACTORY, contraindications=[{"drug_class": "ivig", "reason": "type II hyperprolinemia"}])
    assert "Privigen is stabilised with L-proline" in rules(det)["hyperprolinemia"]["message"]
    other = decide(treatments=REFRACTORY, request={"product": "Gamunex-C"},
                   contraindications=[{"drug_class": "ivig", "reason": "type II hyperprolinemia"}])
    assert "hyperprolinemia" not in rules(other)
    fructose = decide(treatments=REFRACTORY, request={"product": "Gammaplex"}, diagnoses=[{"code": "M33.12"}, {"code": "E74.12"}])
    assert rules(fructose)["fructose_intolerance"]["status"] == "risk"


def test_hepatitis_b_screening_before_rituximab(decide):
    rtx = dict(diagnoses=[{"code": "L10.0"}], findings=[{"kind": "skin_biopsy", "supports_diagnosis": True}],
               request={"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000, "doses": 2})
    assert rules(decide(**rtx))["hbv_screening"]["status"] == "missing"
    screened = decide(**rtx, assessments=[{"measure": "hbsag", "value": 0, "date": "2026-09-01"}])
    assert "hbv_screening" not in rules(screened)
    by_finding = decide(**{**rtx, "findings": rtx["findings"] + [
        {"kind": "serology", "date": "2026-10-01", "result": "HBsAg negative, anti-HBc negative", "supports_diagnosis": False}]})
    assert "hbv_screening" not in rules(by_finding)


def test_a_policy_can_make_a_safety_rule_a_criterion(tmp_path):
    root = tmp_path / "criteria"
    shutil.copytree(ROOT / "criteria", root)
    path = root / "rituximab/pemphigus-vulgaris.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["criteria"]["all_of"].append({"id": "hbv_screened", "label": "Hepatitis B screening documented",
                                         "source": "rituxan-pi", "type": "safety", "rule": "hbv_screening"})
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    crit = load_criteria(root)
    data = referral_data(diagnoses=[{"code": "L10.0"}], findings=[{"kind": "skin_biopsy", "supports_diagnosis": True}],
                         request={"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000, "doses": 2,
                                  "dose_g_per_kg": None, "days_per_cycle": None, "interval_weeks": None, "cycles": None})
    det = determine(referral_from_data(data, "t"), crit)
    assert status_of(det, "hbv_screened") == "unknown"
    assert det.determination == "missing_documentation"
    assert det.missing == ["hepatitis B screening results (HBsAg and anti-HBc) from the last 12 months"]


def test_age_matches_relativedelta_on_edge_days():
    from datetime import date

    from dateutil.relativedelta import relativedelta

    from priorauth.engine.safety import age_years

    for birth, on in [(date(1960, 2, 29), date(2025, 2, 28)), (date(1960, 2, 29), date(2025, 3, 1)),
                      (date(1944, 5, 30), date(2026, 5, 29)), (date(1944, 5, 30), date(2026, 5, 30)),
                      (date(2000, 12, 31), date(2001, 1, 1))]:
        assert age_years(birth, on) == relativedelta(on, birth).years
