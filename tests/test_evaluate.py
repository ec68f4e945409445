"""Evaluation semantics (spec section 2): Kleene logic and each pathway met / not met / unknown."""

from __future__ import annotations

import itertools

import pytest

from priorauth.engine.result import MET, NOT_MET, UNKNOWN, kleene_all, kleene_any, kleene_at_least

from .conftest import status_of

S = (MET, UNKNOWN, NOT_MET)


# ------------------------------------------------------------------ Kleene truth tables

ALL_OF = {(MET, MET): MET, (MET, UNKNOWN): UNKNOWN, (MET, NOT_MET): NOT_MET,
          (UNKNOWN, UNKNOWN): UNKNOWN, (UNKNOWN, NOT_MET): NOT_MET, (NOT_MET, NOT_MET): NOT_MET}
ANY_OF = {(MET, MET): MET, (MET, UNKNOWN): MET, (MET, NOT_MET): MET,
          (UNKNOWN, UNKNOWN): UNKNOWN, (UNKNOWN, NOT_MET): UNKNOWN, (NOT_MET, NOT_MET): NOT_MET}


@pytest.mark.parametrize("a,b", list(itertools.product(S, S)))
def test_kleene_and_or_truth_tables(a, b):
    key = tuple(sorted((a, b), key=S.index))
    assert kleene_all([a, b]) == ALL_OF[key]
    assert kleene_any([a, b]) == ANY_OF[key]


def test_kleene_at_least():
    assert kleene_at_least(2, [MET, MET, NOT_MET]) == MET
    assert kleene_at_least(2, [MET, UNKNOWN, NOT_MET]) == UNKNOWN
    assert kleene_at_least(2, [MET, NOT_MET, NOT_MET]) == NOT_MET
    assert kleene_at_least(1, [UNKNOWN]) == UNKNOWN


# ------------------------------------------------------------------ helpers

def steroid(outcome="inadequate_response", start="2026-01-01", end="2026-06-01", **kw):
    t = {"drug": "prednisone", "route": "oral", "dose": "60 mg daily", "start_date": start, "end_date": end, "outcome": outcome}
    t.update(kw)
    return {k: v for k, v in t.items() if v is not ...}


# ------------------------------------------------------------------ refractory_to_steroids

def test_refractory_met(decide):
    det = decide(treatments=[steroid()])
    assert det.determination == "meets_criteria"
    assert det.pathways_met == ["refractory_to_steroids"]


def test_refractory_not_met_without_any_trial(decide):
    det = decide(treatments=[])
    assert status_of(det, "refractory_to_steroids") == NOT_MET
    assert det.determination == "not_eligible"


def test_refractory_unknown_without_start_date(decide):
    det = decide(treatments=[steroid(start=...)])
    assert status_of(det, "refractory_to_steroids") == UNKNOWN
    assert det.determination == "missing_documentation"
    assert det.missing == ["start date of the prednisone trial"]


def test_trial_without_outcome_is_unknown(decide):
    det = decide(treatments=[steroid(outcome=...)])
    assert status_of(det, "refractory_to_steroids") == UNKNOWN
    assert any("outcome of the prednisone trial" in m for m in det.missing)


@pytest.mark.parametrize("end,status", [("2026-01-29", MET), ("2026-01-28", NOT_MET)])
def test_trial_length_boundary_exactly_four_weeks_counts(decide, end, status):
    # 2026-01-01 + 28 days = 2026-01-29: exactly the minimum counts; one day less does not.
    det = decide(treatments=[steroid(end=end)])
    assert status_of(det, "refractory_to_steroids") == status


@pytest.mark.parametrize("start,status", [("2026-10-23", MET), ("2026-10-24", NOT_MET)])
def test_ongoing_trial_measured_to_referral_date(decide, start, status):
    # Referral date 2026-11-20; end_date null means still taking it: 28 days from 10-23.
    det = decide(treatments=[steroid(start=start, end=None)])
    assert status_of(det, "refractory_to_steroids") == status


@pytest.mark.parametrize("treatment", [
    {"drug": "prednisone", "route": "topical", "start_date": "2026-01-01", "end_date": "2026-06-01",
     "outcome": "inadequate_response"},
    {"drug": "clobetasol", "start_date": "2026-01-01", "end_date": "2026-06-01", "outcome": "inadequate_response"},
    {"drug": "hydrocortisone", "route": "topical", "start_date": "2026-01-01", "end_date": "2026-06-01",
     "outcome": "intolerance"},
])
def test_topical_steroids_do_not_count_as_systemic(decide, treatment):
    det = decide(treatments=[treatment])
    assert status_of(det, "refractory_to_steroids") == NOT_MET
    assert status_of(det, "steroid_intolerance") == NOT_MET
    assert det.pathways_met == []


def test_missing_route_on_prednisone_means_oral(decide):
    det = decide(treatments=[steroid(route=...)])
    assert status_of(det, "refractory_to_steroids") == MET


@pytest.mark.parametrize("brand", ["Deltasone", "MEDROL", "solu-medrol", "Decadron", "Orapred"])
def test_steroid_brand_names_match(decide, brand):
    det = decide(treatments=[steroid(drug=brand, route=...)])
    assert status_of(det, "refractory_to_steroids") == MET
    assert det.warnings == []


def test_unknown_drug_name_warns_and_counts_for_nothing(decide):
    det = decide(treatments=[steroid(drug="predisone")])
    assert status_of(det, "refractory_to_steroids") == NOT_MET
    assert det.warnings == ["unknown drug name 'predisone' (treatments[0]): not counted"]


# ------------------------------------------------------------------ other steroid pathways

def test_steroid_intolerance_any_length(decide):
    det = decide(treatments=[steroid(outcome="intolerance", start="2026-01-01", end="2026-01-05")])
    assert det.pathways_met == ["steroid_intolerance"]


def test_flare_on_taper_any_length(decide):
    det = decide(treatments=[steroid(outcome="flare_on_taper", start="2026-11-10", end=None)])
    assert det.pathways_met == ["flare_on_taper"]


def test_response_is_not_a_failure(decide):
    det = decide(treatments=[steroid(outcome="response")])
    assert det.pathways_met == [] and det.determination == "not_eligible"


@pytest.mark.parametrize("contra,status", [
    ({"drug_class": "systemic_corticosteroids", "reason": "avascular necrosis"}, MET),
    ({"drug": "prednisone", "reason": "steroid psychosis"}, MET),
    ({"drug": "Medrol", "reason": "uncontrolled diabetes"}, MET),
    ({"drug": "methotrexate", "reason": "cirrhosis"}, NOT_MET),
])
def test_steroid_contraindication(decide, contra, status):
    det = decide(contraindications=[contra])
    assert status_of(det, "steroid_contraindication") == status


# ------------------------------------------------------------------ first_line_failure

def agent(drug, outcome, start="2026-01-01", end="2026-06-01", **kw):
    t = {"drug": drug, "start_date": start, "end_date": end, "outcome": outcome, **kw}
    return {k: v for k, v in t.items() if v is not ...}


@pytest.mark.parametrize("treatment,status", [
    (agent("methotrexate", "inadequate_response", end="2026-03-26"), MET),     # exactly 12 weeks
    (agent("methotrexate", "inadequate_response", end="2026-03-25"), NOT_MET),  # a day short
    (agent("Imuran", "intolerance", end="2026-01-10"), MET),                    # intolerance: any length
    (agent("CellCept", "inadequate_response"), MET),
    (agent("Rituxan", "inadequate_response"), MET),
    (agent("tacrolimus", "inadequate_response", route="topical"), NOT_MET),    # topical tacrolimus
    (agent("dapsone", "inadequate_response"), NOT_MET),                        # not steroid-sparing per spec
    (agent("azathioprine", "inadequate_response", start=...), UNKNOWN),
    (agent("azathioprine", "ongoing", end=None), NOT_MET),
])
def test_first_line_failure(decide, treatment, status):
    det = decide(treatments=[treatment])
    assert status_of(det, "first_line_failure") == status


def test_first_line_failure_unknown_names_what_to_document(decide):
    det = decide(treatments=[agent("methotrexate", "inadequate_response", start=...)])
    assert det.determination == "missing_documentation"
    assert det.missing == ["start date of the methotrexate trial"]


def test_met_pathway_makes_other_unknowns_irrelevant(decide):
    det = decide(treatments=[steroid(), agent("methotrexate", "inadequate_response", start=...)])
    assert det.determination == "meets_criteria"
    assert det.missing == []


# ------------------------------------------------------------------ diagnosis

def test_diagnosis_confirmation_unknown_without_supporting_finding(decide):
    det = decide(treatments=[steroid()], findings=[{"kind": "muscle_biopsy", "supports_diagnosis": False}])
    assert status_of(det, "diagnosis_confirmed") == UNKNOWN
    assert det.determination == "missing_documentation"


def test_diagnosis_code_without_dot_is_normalised(decide):
    det = decide(treatments=[steroid()], diagnoses=[{"code": "m3312"}])
    assert det.referral.diagnoses[0].code == "M33.12"
    assert det.policy.id == "ivig-myositis"


def test_inclusion_body_myositis_not_covered(decide):
    det = decide(treatments=[steroid()], diagnoses=[{"code": "G72.41"}])
    assert det.policy is None and det.determination == "not_eligible"


# ------------------------------------------------------------------ blistering: rapidly progressive

BP = dict(diagnoses=[{"code": "L12.0"}], findings=[{"kind": "skin_biopsy", "supports_diagnosis": True}])


def test_rapidly_progressive_needs_ongoing_conventional_therapy(decide):
    on = decide(**BP, clinical_course="rapidly_progressive",
                treatments=[steroid(outcome="ongoing", start="2026-11-10", end=None)])
    assert on.pathways_met == ["rapidly_progressive"]
    stopped = decide(**BP, clinical_course="rapidly_progressive",
                     treatments=[steroid(outcome="ongoing", start="2026-10-01", end="2026-11-01")])
    assert status_of(stopped, "rapidly_progressive") == NOT_MET
    not_stated = decide(**BP, treatments=[steroid(outcome="ongoing", start="2026-11-10", end=None)])
    assert status_of(not_stated, "rapidly_progressive") == NOT_MET


def test_rapidly_progressive_is_not_a_myositis_pathway(decide):
    det = decide(clinical_course="rapidly_progressive",
                 treatments=[steroid(outcome="ongoing", start="2026-11-10", end=None)])
    assert "rapidly_progressive" not in [c["id"] for c in det.criteria()]


def test_blistering_needs_biopsy_not_serology(decide):
    det = decide(diagnoses=[{"code": "L10.0"}], findings=[{"kind": "serology", "supports_diagnosis": True}],
                 treatments=[steroid()])
    assert status_of(det, "diagnosis_confirmed") == UNKNOWN
    assert "biopsy" in det.missing[0]


# ------------------------------------------------------------------ rituximab

RTX = dict(diagnoses=[{"code": "L10.0"}], findings=[{"kind": "direct_immunofluorescence", "supports_diagnosis": True}],
           request={"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000, "doses": 2})


def test_rituximab_pemphigus_first_line(decide):
    det = decide(**RTX)
    assert det.determination == "meets_criteria"
    assert det.pathways_met == ["first_line_indication"]
    assert det.dosing == {"hcpcs": "J9312", "product": "Rituxan", "dose_mg": 1000, "doses": 2,
                          "billing_units_per_dose": 100, "billing_unit": "10 mg"}


def test_rituximab_dose_above_label(decide):
    det = decide(**{**RTX, "request": {**RTX["request"], "dose_mg": 1500}})
    assert det.determination == "not_eligible"
    assert status_of(det, "dosing") == NOT_MET


def test_rituximab_myositis_needs_steroid_sparing_failure(decide):
    req = {"therapy": "rituximab", "product": "Truxima", "dose_mg": 1000, "doses": 2}
    assert decide(request=req, treatments=[steroid()]).determination == "not_eligible"
    det = decide(request=req, treatments=[agent("methotrexate", "inadequate_response")])
    assert det.determination == "meets_criteria" and det.pathways_met == ["first_line_failure"]
    assert det.dosing["hcpcs"] == "Q5115"


def test_as_of_is_the_referral_date_not_the_clock(decide):
    # Same chart, earlier referral date: the ongoing trial is too short then.
    early = decide(date="2026-10-30", treatments=[steroid(start="2026-10-10", end=None)])
    late = decide(date="2026-11-20", treatments=[steroid(start="2026-10-10", end=None)])
    assert status_of(early, "refractory_to_steroids") == NOT_MET
    assert status_of(late, "refractory_to_steroids") == MET
