"""Payer variants change outcomes the way their sources say (issue: payer variants)."""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

from .conftest import ROOT, SAMPLES, status_of


def sample(name: str, **changes) -> dict:
    data = yaml.safe_load((SAMPLES / name).read_text())
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for key in path:
            target = target[key]
        target[last] = value
    return data


def decide(criteria, data):
    return determine(referral_from_data(data, "test"), criteria)


def test_medicare_lcd_does_not_accept_a_contraindication_alone(criteria):
    # Issue 13: L35093 covers FDA-labelled use, and Octagam 10% is labelled for adult DM, so the
    # sample now meets through on_label; with an off-label product the contraindication alone fails.
    medicare = decide(criteria, sample("dm-medicare-contraindication.yaml"))
    assert medicare.policy.id == "medicare-ivig-myositis"
    assert medicare.determination == "meets_criteria" and medicare.pathways_met == ["on_label"]
    assert "steroid_contraindication" not in [c["id"] for c in medicare.criteria()]
    off_label = decide(criteria, sample("dm-medicare-contraindication.yaml", request__product="Privigen"))
    assert off_label.determination == "not_eligible"
    baseline = decide(criteria, sample("dm-medicare-contraindication.yaml", coverage__payer="bluepeak-health"))
    assert baseline.policy.id == "ivig-myositis"
    assert baseline.determination == "meets_criteria"
    assert baseline.pathways_met == ["steroid_contraindication"]


def test_medicare_ncd_keeps_the_spec_examples(criteria):
    bp = decide(criteria, yaml.safe_load((ROOT / "tests/data/spec-examples/bp-rapidly-progressive.yaml").read_text()))
    assert bp.policy.id == "medicare-ivig-blistering" and bp.policy.version == "ncd-250.3"
    assert bp.determination == "meets_criteria"


def test_medicare_eba_is_covered_but_flagged_unconfirmed(criteria):
    det = decide(criteria, sample("eba-rapidly-progressive.yaml", coverage__payer="medicare"))
    assert det.policy.id == "medicare-ivig-eba"
    assert det.determination == "meets_criteria"
    assert any("diagnosis_covered" in w and "not confirmed" in w for w in det.warnings)
    baseline = decide(criteria, sample("eba-rapidly-progressive.yaml"))
    assert not any("not confirmed" in w for w in baseline.warnings)


def test_magellan_unit_cap(criteria):
    det = decide(criteria, sample("pv-magellan-unit-cap.yaml"))
    assert det.policy.payer == "magellan"
    assert det.determination == "not_eligible"
    assert status_of(det, "unit_cap") == "not_met"
    assert det.dosing["billing_units_per_cycle"] == 480
    baseline = decide(criteria, sample("pv-magellan-unit-cap.yaml", coverage__payer="lakeshore-mutual"))
    assert baseline.determination == "meets_criteria"
    # Lower dose: 1.9 g/kg x 119.9 kg = 227.8 g = 456 units, under the cap.
    lower = decide(criteria, sample("pv-magellan-unit-cap.yaml", request__dose_g_per_kg=1.9))
    assert status_of(lower, "unit_cap") == "met" and lower.determination == "meets_criteria"


def test_magellan_cap_counts_cycles_in_the_window(criteria):
    # Every 2 weeks, 2 cycles fall in 28 days: 2 x 280 units = 560 > 460.
    det = decide(criteria, sample("pv-magellan-unit-cap.yaml", patient__weight_kg=70.0, patient__height_cm=175,
                                  request__interval_weeks=2))
    assert status_of(det, "unit_cap") == "not_met"
    assert "560 billing units" in next(c["reason"] for c in det.criteria() if c["id"] == "unit_cap")


def test_magellan_rituximab_pv_authorizes_12_months(criteria):
    base = decide(criteria, sample("pv-rituximab-first-line.yaml"))
    magellan = decide(criteria, sample("pv-rituximab-first-line.yaml", coverage__payer="magellan"))
    assert base.authorization()["months"] == 6 and base.authorization()["end"] == "2027-04-13"
    # the period (the cycles that fit in it: test_billing)
    assert magellan.authorization().items() >= {"start": "2026-10-14", "end": "2027-10-13", "months": 12,
                                                "reauthorization_due": "2027-09-13"}.items()


def test_bcbs_nc_preferred_products(criteria):
    det = decide(criteria, sample("bp-bcbs-nc-nonpreferred.yaml"))
    assert det.determination == "not_eligible" and status_of(det, "preferred_product") == "not_met"
    preferred = decide(criteria, sample("bp-bcbs-nc-nonpreferred.yaml", request__product="privigen"))
    assert preferred.determination == "meets_criteria"
    data = sample("bp-bcbs-nc-nonpreferred.yaml")
    data["treatments"].append({"drug": "Privigen", "route": "iv", "start_date": "2026-09-05",
                               "end_date": "2026-09-08", "outcome": "intolerance", "details": "aseptic meningitis"})
    tried = decide(criteria, data)
    assert status_of(tried, "preferred_product") == "met" and tried.determination == "meets_criteria"


def test_bcbs_nc_rule_applies_from_october_2022(criteria):
    before = decide(criteria, sample("bp-bcbs-nc-nonpreferred.yaml", date="2022-09-30",
                                     treatments=[{"drug": "prednisone", "start_date": "2022-06-01",
                                                  "end_date": "2022-09-01", "outcome": "inadequate_response"}],
                                     findings=[{"kind": "skin_biopsy", "supports_diagnosis": True}],
                                     assessments=[], patient__birth_date="1948-07-19"))
    assert before.policy.id == "ivig-blistering"  # the payer's policy was not yet in effect
    assert before.determination == "meets_criteria"


def test_health_net_requires_a_dermatologist(criteria):
    det = decide(criteria, sample("pv-health-net-rheumatology.yaml"))
    assert det.determination == "not_eligible"
    assert status_of(det, "prescriber_dermatologist") == "not_met"
    derm = decide(criteria, sample("pv-health-net-rheumatology.yaml", prescriber__specialty="Dermatology"))
    assert derm.determination == "meets_criteria"
    unstated = decide(criteria, sample("pv-health-net-rheumatology.yaml", prescriber__specialty=None))
    assert unstated.determination == "missing_documentation"
    assert unstated.missing == ["the prescriber's specialty (dermatology or dermatologist)"]


def test_health_net_covers_only_pv_other_blistering_falls_back(criteria):
    det = decide(criteria, sample("pv-health-net-rheumatology.yaml", diagnoses=[{"code": "L10.2"}]))
    assert det.policy.id == "ivig-blistering"


def test_determination_names_the_policy_version(criteria):
    det = decide(criteria, sample("pv-magellan-unit-cap.yaml"))
    ref = det.to_dict()["policy"]
    assert (ref["id"], ref["payer"], ref["version"]) == ("magellan-ivig-blistering", "magellan", "EH-0071-2018")
    assert any("EH-0071" in s for s in ref["sources"])


def test_versions_coexist_and_the_one_in_effect_applies(tmp_path):
    root = tmp_path / "criteria"
    shutil.copytree(ROOT / "criteria", root)
    newer = yaml.safe_load((root / "payers/magellan/blistering.yaml").read_text())
    newer.update(version="EH-0071-2027", effective=date(2027, 1, 1))
    newer["add"]["eligibility"][0]["max_units"] = 500
    (root / "payers/magellan/blistering-2027.yaml").write_text(yaml.safe_dump(newer, sort_keys=False))
    crit = load_criteria(root)
    old = decide(crit, sample("pv-magellan-unit-cap.yaml"))
    new = decide(crit, sample("pv-magellan-unit-cap.yaml", date="2027-01-15"))
    assert old.policy.version == "EH-0071-2018" and old.determination == "not_eligible"
    assert new.policy.version == "EH-0071-2027" and new.determination == "meets_criteria"


def test_authorization_period_only_when_met(criteria):
    met = decide(criteria, sample("dm-steroid-intolerance.yaml"))
    assert met.to_dict()["authorization"].items() >= {"start": "2026-11-16", "end": "2027-05-15", "months": 6,
                                                      "reauthorization_due": "2027-04-15"}.items()
    missing = decide(criteria, sample("pm-undated-steroid-trial.yaml"))
    assert missing.to_dict()["authorization"] is None


def test_medicare_off_label_rituximab_requires_hbv_screening(criteria):
    data = sample("dm-steroid-intolerance.yaml", coverage__payer="medicare",
                  request={"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000, "doses": 2})
    data["treatments"][1].update(end_date="2026-08-01", outcome="inadequate_response")  # methotrexate 17 weeks
    det = decide(criteria, data)
    assert det.policy.id == "medicare-rituximab-myositis"
    assert det.determination == "missing_documentation"
    assert det.missing == ["hepatitis B screening results (HBsAg and anti-HBc, each negative or positive) "
                           "dated within 365 days before the referral"]
    data["assessments"].append({"measure": "anti_hbc", "value": 0, "date": "2026-10-01"})
    assert decide(criteria, data).determination == "missing_documentation"  # HBsAg still missing
    data["assessments"].append({"measure": "hbsag", "result": "nonreactive", "date": "2026-10-01"})
    assert decide(criteria, data).determination == "meets_criteria"
    data["coverage"]["payer"] = "bluepeak-health"  # issue 13: the baseline requires it too, no longer only warns
    del data["assessments"][-2:]
    base = decide(criteria, data)
    assert base.policy.id == "rituximab-myositis" and base.determination == "missing_documentation"
    assert status_of(base, "hbv_screening") == "unknown"
