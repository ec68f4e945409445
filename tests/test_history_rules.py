"""Revision 2 history rules: dose adequacy, conventional agents by disease, rituximab courses,
and what would fit (spec section 2, "Revision 2: rules that published payer text adds")."""

from __future__ import annotations

import pytest

from priorauth.engine.doses import mg_per_kg_day

from .conftest import status_of

MET, NOT_MET, UNKNOWN = "met", "not_met", "unknown"


def trial(drug, outcome="inadequate_response", start="2026-01-01", end="2026-06-01", **kw):
    return {"drug": drug, "start_date": start, "end_date": end, "outcome": outcome, **kw}


# ------------------------------------------------------------------ reading a daily dose

@pytest.mark.parametrize("text, weight, expected", [
    ("60 mg daily", 60.0, 1.0),
    ("60 mg daily, tapered to 15 mg", 60.0, 1.0),
    ("1 mg/kg daily", 80.0, 1.0),
    ("0.75 mg/kg a day", None, 0.75),
    ("20 mg twice daily", 80.0, 0.5),
    ("40 mg every other day", 40.0, 0.5),
    ("5 mg daily", 70.0, 5 / 70),
    ("30 mg/kg pulses x 3", 60.0, None),   # a pulse is not a daily dose
    ("1000 mg IV monthly", 60.0, None),
    ("60 mg daily", None, None),            # no weight: mg/kg unknown
    ("as directed", 60.0, None),
    (None, 60.0, None),
    ("9" * 500 + " mg daily", 60.0, None),  # bounded: long text is not read
])
def test_daily_dose_reading(text, weight, expected):
    got = mg_per_kg_day(text, weight)
    assert (got is None and expected is None) or got == pytest.approx(expected)


# ------------------------------------------------------------------ dose adequacy

def test_low_dose_steroid_does_not_count(decide):
    """Prednisone 5 mg a day for 20 weeks is no steroid failure (0.08 mg/kg at 60 kg)."""
    det = decide(treatments=[trial("prednisone", dose="5 mg daily")])
    assert status_of(det, "refractory_to_steroids") == NOT_MET
    reason = next(c["reason"] for c in det.criteria() if c["id"] == "refractory_to_steroids")
    assert "0.083 mg/kg/day" in reason and "below the 0.5 mg/kg/day" in reason
    assert det.determination == "not_eligible"


def test_adequate_dose_counts_in_prednisone_equivalents(decide):
    # methylprednisolone 24 mg = prednisone 30 mg = 0.5 mg/kg at 60 kg: exactly adequate
    det = decide(treatments=[trial("Medrol", dose="24 mg daily")])
    assert status_of(det, "refractory_to_steroids") == MET
    # dexamethasone 3 mg = prednisone 20 mg = 0.33 mg/kg: not adequate
    det = decide(treatments=[trial("dexamethasone", dose="3 mg daily")])
    assert status_of(det, "refractory_to_steroids") == NOT_MET


def test_unreadable_dose_is_judged_as_before_with_a_warning(decide):
    det = decide(treatments=[trial("prednisone", dose="per protocol")])
    assert status_of(det, "refractory_to_steroids") == MET
    assert any("dose of the prednisone trial (treatments[0])" in w and "document it" in w for w in det.warnings)
    det = decide(treatments=[trial("prednisone")])  # no dose at all
    assert status_of(det, "refractory_to_steroids") == MET
    assert any("not readable as a daily amount" in w for w in det.warnings)


def test_dose_adequacy_does_not_touch_other_pathways(decide):
    det = decide(treatments=[trial("prednisone", outcome="intolerance", dose="5 mg daily")])
    assert status_of(det, "steroid_intolerance") == MET


# ------------------------------------------------------------------ conventional agents by disease

BP = {"diagnoses": [{"code": "L12.0"}], "findings": [{"kind": "direct_immunofluorescence", "supports_diagnosis": True}]}
PF = {"diagnoses": [{"code": "L10.2"}], "findings": [{"kind": "skin_biopsy", "supports_diagnosis": True}]}


@pytest.mark.parametrize("drug", ["dapsone", "doxycycline", "tetracycline", "minocycline"])
def test_blistering_first_line_agents_count(decide, drug):
    det = decide(**PF, treatments=[trial(drug, dose="100 mg daily")])
    assert status_of(det, "first_line_failure") == MET
    assert status_of(det, "conventional_agent_failure") == MET


def test_dapsone_counts_for_nothing_in_myositis(decide):
    det = decide(treatments=[trial("dapsone")])
    assert status_of(det, "first_line_failure") == NOT_MET


def test_conventional_agent_short_trial_not_met_and_undated_unknown(decide):
    det = decide(**PF, treatments=[trial("doxycycline", start="2026-10-01", end=None)])
    assert status_of(det, "conventional_agent_failure") == NOT_MET
    det = decide(**PF, treatments=[trial("dapsone", start=None, end=None)])
    assert status_of(det, "first_line_failure") == UNKNOWN
    assert "start date of the dapsone trial" in det.missing


def test_dupilumab_counts_in_bp_only_and_from_its_approval(decide):
    dupi = [trial("Dupixent", start="2026-03-01", end="2026-09-01")]
    assert status_of(decide(**BP, treatments=dupi), "first_line_failure") == MET
    assert status_of(decide(**PF, treatments=dupi), "first_line_failure") == NOT_MET
    before = decide(**BP, date="2025-05-01", treatments=[trial("dupilumab", start="2024-06-01", end="2025-01-01")])
    assert status_of(before, "dupilumab_trial") == NOT_MET
    assert "from 2025-06-20" in next(c["reason"] for c in before.criteria() if c["id"] == "dupilumab_trial")


def test_whole_body_topical_counts_in_bp_lesional_does_not(decide):
    whole = [trial("clobetasol", route="topical", dose="30 g daily to the whole body")]
    assert status_of(decide(**BP, treatments=whole), "bp_topical_failure") == MET
    lesional = [trial("clobetasol", route="topical", dose="0.05% cream twice daily")]
    det = decide(**BP, treatments=lesional)
    assert status_of(det, "bp_topical_failure") == NOT_MET
    assert "not documented as whole body" in next(c["reason"] for c in det.criteria() if c["id"] == "whole_body_topical_trial")


# ------------------------------------------------------------------ rituximab courses

def test_rituximab_course_judged_from_first_infusion(decide):
    """1000 mg twice two weeks apart: the course lasts two weeks, but its failure counts once
    16 weeks have passed since the first infusion."""
    course = [trial("Rituxan", start="2026-05-01", end="2026-05-15", route="iv", dose="1000 mg x 2")]
    det = decide(**PF, treatments=course)
    assert status_of(det, "first_line_failure") == MET
    soon = decide(**PF, date="2026-07-01", treatments=course)  # 8.7 weeks after the first infusion
    assert status_of(soon, "first_line_failure") == NOT_MET
    reason = next(c["reason"] for c in soon.criteria() if c["id"] == "conventional_agent_failure")
    assert "since the first infusion of its course" in reason and "16 required" in reason


def test_rituximab_course_of_two_entries_starts_at_the_first(decide):
    """Infusions within 4 weeks are one course: the second infusion's outcome is judged from
    the first infusion; an infusion 8 weeks later starts a course of its own."""
    def entries(second):
        return [trial("rituximab", start="2026-06-01", end="2026-06-01", outcome=None, route="iv"),
                trial("rituximab", start=second, end=second, route="iv")]
    # 17 weeks after the first infusion, 15 after the second
    det = decide(**PF, date="2026-09-28", treatments=entries("2026-06-15"))
    assert status_of(det, "first_line_failure") == MET
    det = decide(**PF, date="2026-11-09", treatments=entries("2026-07-27"))  # 8 weeks apart: 15 weeks
    assert status_of(det, "conventional_agent_failure") != MET


def test_rituximab_course_in_myositis(decide):
    course = [trial("Truxima", start="2026-05-01", end="2026-05-15", route="iv")]
    assert status_of(decide(treatments=course), "first_line_failure") == MET


# ------------------------------------------------------------------ what would fit

REFRACTORY = [trial("prednisone", dose="60 mg daily")]


def test_dose_above_the_cap_says_what_fits(decide):
    det = decide(treatments=REFRACTORY, request={"dose_g_per_kg": 2.5})
    assert det.determination == "not_eligible"
    assert det.would_fit == [{"criterion": "dosing", "change": {"dose_g_per_kg": 2.0},
                              "text": "240 units fit: 2.0 g/kg (120 g per cycle)"}]
    assert det.to_dict()["would_fit"] == det.would_fit


def test_interval_too_short_says_what_fits(decide):
    det = decide(treatments=REFRACTORY, request={"interval_weeks": 2})
    assert det.would_fit[0]["change"] == {"interval_weeks": 4}


def test_nothing_fits_when_a_pathway_fails(decide):
    det = decide(treatments=[], request={"dose_g_per_kg": 2.5})
    assert det.determination == "not_eligible" and det.would_fit == []


def test_met_or_unknown_has_no_fit(decide):
    assert decide(treatments=REFRACTORY).would_fit == []
    assert decide(treatments=[trial("prednisone", start=None)]).would_fit == []


def test_unit_cap_says_the_dose_that_fits(runner):
    from .conftest import SAMPLES
    from priorauth.cli.main import cli
    import json
    got = json.loads(runner.invoke(cli, ["check", str(SAMPLES / "pv-magellan-unit-cap.yaml"), "--json"]).output)
    assert got["would_fit"][0]["criterion"] == "unit_cap"
    assert got["would_fit"][0]["text"].endswith("1.9 g/kg (227.8 g per cycle)")
    text = runner.invoke(cli, ["check", str(SAMPLES / "pv-magellan-unit-cap.yaml")]).output
    assert "What would fit the policy:" in text and "456 units fit: 1.9 g/kg" in text
