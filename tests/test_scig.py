"""SCIG policies (spec revision 2): maintenance after IVIG at an IVIG-equivalent weekly dose;
Medicare does not cover SCIG for these diseases."""

from __future__ import annotations

from .conftest import status_of

SCIG = {"therapy": "scig", "product": "Hizentra", "dose_g_per_kg": 0.5, "days_per_cycle": 1,
        "interval_weeks": 1, "cycles": 26}
ON_IVIG = [{"drug": "prednisone", "dose": "60 mg daily", "start_date": "2026-01-01", "end_date": "2026-03-01",
            "outcome": "inadequate_response"},
           {"drug": "Privigen", "route": "iv", "start_date": "2026-03-10", "end_date": None, "outcome": "response"}]


def test_scig_policy_applies_to_scig_requests(decide):
    det = decide(request=SCIG, treatments=ON_IVIG)
    assert det.policy.id == "scig-myositis"
    assert det.determination == "meets_criteria"
    assert status_of(det, "established_on_ivig") == "met"


def test_scig_without_ivig_is_not_eligible(decide):
    det = decide(request=SCIG, treatments=ON_IVIG[:1])
    assert status_of(det, "established_on_ivig") == "not_met"
    assert det.determination == "not_eligible"


def test_scig_weekly_dose_cap_and_what_fits(decide):
    det = decide(request={**SCIG, "dose_g_per_kg": 1.0}, treatments=ON_IVIG)
    assert status_of(det, "dosing") == "not_met"
    assert det.would_fit and det.would_fit[0]["change"] == {"dose_g_per_kg": 0.7}


def test_scig_blistering_policy(decide):
    det = decide(request=SCIG, treatments=ON_IVIG, diagnoses=[{"code": "L10.0"}],
                 findings=[{"kind": "direct_immunofluorescence", "supports_diagnosis": True}])
    assert det.policy.id == "scig-blistering" and det.determination == "meets_criteria"


def test_medicare_does_not_cover_scig_here(decide):
    det = decide(request=SCIG, treatments=ON_IVIG, coverage={"payer": "medicare"})
    assert det.policy.id == "medicare-scig-myositis"
    assert status_of(det, "scig_not_covered") == "not_met"
    assert det.determination == "not_eligible" and det.would_fit == []
