"""Dosing weight, grams and HCPCS units (spec section 2, "Dosing weight")."""

from __future__ import annotations

import pytest

from priorauth.engine.dosing import ideal_body_weight, round1

from .conftest import status_of

REFRACTORY = [{"drug": "prednisone", "start_date": "2026-01-01", "end_date": "2026-06-01",
               "outcome": "inadequate_response"}]


def test_devine_ideal_body_weight():
    # 60 inches = 152.4 cm: the base weights exactly.
    assert ideal_body_weight("male", 152.4) == pytest.approx(50.0)
    assert ideal_body_weight("female", 152.4) == pytest.approx(45.5)
    assert ideal_body_weight("female", 152.4 + 2.54 * 10) == pytest.approx(68.5)
    assert ideal_body_weight("other", 170) is None


def test_round_half_up():
    assert round1(136.45) == 136.5
    assert round1(0.05) == 0.1


def test_non_obese_uses_actual_weight(decide):
    det = decide(treatments=REFRACTORY, patient={"weight_kg": 70.0, "height_cm": 170})  # BMI 24.2
    d = det.dosing
    assert (d["weight_basis"], d["dosing_weight_kg"], d["grams_per_cycle"]) == ("actual", 70.0, 140.0)
    assert (d["hcpcs"], d["billing_units_per_cycle"]) == ("J1459", 280)
    assert det.determination == "meets_criteria"


def test_obese_male_uses_adjusted_weight(decide):
    # 180 cm = 70.866 in; IBW = 50 + 2.3 * 10.866 = 74.99; AdjBW = 74.99 + 0.4 * (120 - 74.99) = 92.99
    det = decide(treatments=REFRACTORY, patient={"sex": "male", "weight_kg": 120.0, "height_cm": 180})
    d = det.dosing
    assert d["weight_basis"] == "adjusted"
    assert d["dosing_weight_kg"] == 93.0
    assert d["grams_per_cycle"] == 186.0
    assert d["billing_units_per_cycle"] == 372
    assert d["ideal_body_weight_kg"] == 75.0


def test_bmi_at_threshold_is_adjusted(decide):
    # 100 kg at 182.5 cm is BMI 30.02: the spec says BMI >= 30 uses adjusted weight.
    det = decide(treatments=REFRACTORY, patient={"weight_kg": 100.0, "height_cm": 182.5})
    assert det.dosing["weight_basis"] == "adjusted"


def test_units_round_up(decide):
    # 61.3 kg x 1 g/kg = 61.3 g -> 122.6 units of 0.5 g -> 123
    det = decide(treatments=REFRACTORY, patient={"weight_kg": 61.3, "height_cm": 170},
                 request={"dose_g_per_kg": 1.0})
    assert det.dosing["grams_per_cycle"] == 61.3
    assert det.dosing["billing_units_per_cycle"] == 123


def test_missing_weight_makes_dosing_unknown(decide):
    det = decide(treatments=REFRACTORY, patient={"weight_kg": None})
    assert status_of(det, "dosing") == "unknown"
    assert det.dosing is None
    assert det.determination == "missing_documentation"
    assert det.missing == ["patient's current weight in kg"]


def test_missing_height_makes_dosing_unknown(decide):
    det = decide(treatments=REFRACTORY, patient={"height_cm": None})
    assert status_of(det, "dosing") == "unknown"
    assert det.dosing is None
    assert "height" in det.missing[0]


def test_obese_patient_of_unknown_sex_needs_sex_for_ideal_weight(decide):
    det = decide(treatments=REFRACTORY, patient={"sex": "unknown", "weight_kg": 110.0, "height_cm": 165})
    assert status_of(det, "dosing") == "unknown"
    assert "sex" in det.missing[0]


def test_non_obese_patient_of_unknown_sex_is_fine(decide):
    det = decide(treatments=REFRACTORY, patient={"sex": "unknown", "weight_kg": 60.0, "height_cm": 165})
    assert det.dosing["weight_basis"] == "actual"
    assert det.determination == "meets_criteria"


@pytest.mark.parametrize("request_change,limit", [
    ({"dose_g_per_kg": 2.1}, "2 g/kg"),
    ({"interval_weeks": 3}, "4 weeks"),
    ({"days_per_cycle": 1}, "2-5 days"),
    ({"days_per_cycle": 6}, "2-5 days"),
])
def test_dose_limits_not_met(decide, request_change, limit):
    det = decide(treatments=REFRACTORY, request=request_change)
    assert status_of(det, "dosing") == "not_met"
    assert det.determination == "not_eligible"
    assert any(limit in r for r in det.reasons())


def test_missing_dose_is_unknown(decide):
    det = decide(treatments=REFRACTORY, request={"dose_g_per_kg": None})
    assert status_of(det, "dosing") == "unknown"
    assert "requested dose in g/kg per cycle" in det.missing


def test_unknown_product_warns_but_still_computes_grams(decide):
    det = decide(treatments=REFRACTORY, request={"product": "Imaginaglobulin"})
    assert det.dosing["grams_per_cycle"] == 120.0
    assert det.dosing["hcpcs"] is None and det.dosing["billing_units_per_cycle"] is None
    assert any("unknown product 'Imaginaglobulin'" in w for w in det.warnings)


def test_unverified_product_code_warns(decide):
    det = decide(treatments=REFRACTORY, request={"product": "Panzyga"})
    assert det.dosing["hcpcs"] == "J1599"
    assert any("not verified" in w for w in det.warnings)


def test_the_therapy_table_is_the_referral_formats_therapies(criteria):
    from typing import get_args

    from priorauth.model.referral import Therapy

    assert set(criteria.therapies) == set(get_args(Therapy))
    assert criteria.therapies["rituximab"].fixed_dose and not criteria.therapies["ivig"].fixed_dose


def test_request_evidence_writes_numbers_as_a_person_does(decide):
    # the referral says 2.0 and 4.0 (floats): the evidence says "2 g/kg ... every 4 weeks"
    det = decide(treatments=REFRACTORY, patient={"weight_kg": 70.0, "height_cm": 170},
                 request={"dose_g_per_kg": 2.0, "interval_weeks": 4.0})
    summary = next(e["summary"] for c in det.criteria() if c["id"] == "dosing" for e in c["evidence"])
    assert " 2 g/kg over " in summary and "every 4 weeks = 140 g per cycle" in summary
    assert ".0 " not in summary


def test_billing_line_says_where_package_codes_come_from_once() -> None:
    from priorauth.engine.summary import billing_lines

    billing = {"per": "cycle", "hcpcs": "J1568", "dispensed_units": 196, "prescribed_units": 196, "waste_units": 0,
               "modifier": "JZ", "administration": [], "place_of_service": None,
               "lines": [{"ndc": None, "ndc_product": "68982-0850", "vial": "30 g", "count": 3},
                         {"ndc": "68982-0850-04", "vial": "5 g", "count": 1},
                         {"ndc": None, "ndc_product": "68982-0850", "vial": "2 g", "count": 4}]}
    line = billing_lines(billing, None)[0]
    assert "3 x 30 g (NDC 68982-0850), 1 x 5 g (NDC 68982-0850-04), 4 x 2 g (NDC 68982-0850)" in line
    assert line.endswith("wasted 0 (JZ); package codes to be added from the cartons") and line.count("carton") == 1
    billing["lines"] = billing["lines"][:2]
    assert billing_lines(billing, None)[0].endswith("; package code to be added from the carton")
    billing["lines"] = billing["lines"][1:]
    assert "carton" not in billing_lines(billing, None)[0]
