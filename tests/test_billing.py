"""Vials, dispensing, JW / JZ, administration codes, place of service and authorization cycles
(spec revision 2 rules "vials and NDCs" and "authorization")."""

from __future__ import annotations

import itertools
import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from priorauth.cli.main import cli
from priorauth.engine.billing import authorization_cycles, cycles_in_period
from priorauth.engine.dispense import least_waste
from priorauth.model.referral import referral_from_data

from .conftest import SPEC_EXAMPLES, referral_data

PRIVIGEN = [5, 10, 20, 40]
# A documented contraindication to steroids: a pathway that needs no trial (robust to trial rules).
CONTRAINDICATED = [{"drug_class": "systemic_corticosteroids", "reason": "steroid psychosis in 2024",
                    "documented_date": "2026-01-10"}]


# ------------------------------------------------------------------ least-waste vials


def test_123_g_of_privigen_is_three_40s_and_a_5():
    # 125 g is the least total >= 123 that 5/10/20/40 make; 3x40 + 1x5 is its fewest vials.
    got = least_waste(123, PRIVIGEN)
    assert got.total == 125 and got.counts == ((40, 3), (5, 1)) and got.vials == 4


def test_a_dose_the_vials_make_exactly_wastes_nothing():
    assert least_waste(140, PRIVIGEN).counts == ((40, 3), (20, 1))
    assert least_waste(1000, [100, 500]).counts == ((500, 2),)


def test_rituximab_750_mg_is_one_500_and_three_100():
    # 800 mg is the least reachable total >= 750; 500 + 3x100 (4 vials) beats 8x100.
    got = least_waste(750, [100, 500])
    assert got.total == 800 and got.counts == ((500, 1), (100, 3))


def test_fractional_vials_cutaquig():
    # 7.3 g = 4 + 3.3 exactly (Cutaquig's 1.65 g steps); no waste.
    assert least_waste(7.3, [1, 1.65, 2, 3.3, 4, 8]).total == pytest.approx(7.3)


def test_a_huge_dose_is_bounded_work():
    got = least_waste(1e6, PRIVIGEN)
    assert got.counts == ((40, 25000),) and got.exact
    odd = least_waste(1e6 + 0.3, [1, 1.65, 2, 3.3, 4, 8])
    assert odd.total == pytest.approx(1e6 + 0.3) and odd.exact


def _brute(dose, sizes):
    best = None
    ranges = [range(int(dose // s) + 2) for s in sizes]  # more of one size than this only adds waste
    for counts in itertools.product(*ranges):
        total = sum(c * s for c, s in zip(counts, sizes))
        if total + 1e-9 >= dose:
            key = (round(total, 6), sum(counts))
            best = key if best is None or key < best else best
    return best


@settings(max_examples=150, deadline=None)
@given(dose=st.integers(min_value=1, max_value=60).map(lambda n: n / 4),
       sizes=st.lists(st.sampled_from([0.5, 1, 2, 2.5, 5, 10, 20]), min_size=1, max_size=3, unique=True))
def test_least_waste_is_minimal_against_brute_force(dose, sizes):
    got = least_waste(dose, sizes)
    assert got.total + 1e-9 >= dose  # dispensed >= prescribed
    brute = _brute(dose, sorted(sizes))
    assert brute is not None
    assert (round(got.total, 6), got.vials) == brute


# ------------------------------------------------------------------ dosing and billing block


def _det(decide, **request):
    return decide(contraindications=CONTRAINDICATED, request=request)


def test_ivig_dosing_keeps_prescribed_units_and_adds_dispensed(decide):
    # 61.5 kg x 2 g/kg = 123 g -> 246 units prescribed; 125 g dispensed = 250 units, 4 wasted: JW.
    det = decide(contraindications=CONTRAINDICATED, patient={"weight_kg": 61.5})
    d = det.dosing
    assert d["grams_per_cycle"] == 123.0 and d["billing_units_per_cycle"] == 246
    assert [(v["size_g"], v["count"]) for v in d["vials"]] == [(40, 3), (5, 1)]
    assert d["vials"][0]["ndc"] == "44206-0439-40"
    assert d["dispensed_grams"] == 125.0 and d["dispensed_units"] == 250
    assert d["waste_units"] == 4 and d["waste_modifier"] == "JW"
    b = det.billing
    assert b["hcpcs"] == "J1459" and b["unit"] == "0.5 g" and b["prescribed_units"] == 246
    assert [(l["vial"], l["count"], l["units"]) for l in b["lines"]] == [("40 g", 3, 240), ("5 g", 1, 10)]
    assert b["dispensed_units"] == 250 and b["waste_units"] == 4 and b["modifier"] == "JW"
    assert b["claim_lines"] == [{"hcpcs": "J1459", "modifier": None, "units": 246, "kind": "administered"},
                                {"hcpcs": "J1459", "modifier": "JW", "units": 4, "kind": "discarded"}]


def test_no_waste_is_jz(decide):
    det = decide(contraindications=CONTRAINDICATED, patient={"weight_kg": 60.0})  # 120 g = 3 x 40
    assert det.dosing["waste_units"] == 0 and det.dosing["waste_modifier"] == "JZ"
    assert det.billing["claim_lines"] == [{"hcpcs": "J1459", "modifier": "JZ", "units": 240, "kind": "administered"}]


def test_scig_hizentra_100_mg_units(decide):
    # 60 kg x 0.4 g/kg = 24 g a week: 240 units of J1559 (100 mg); 2 x 10 g + 1 x 4 g = 24 g, no waste.
    det = decide(contraindications=CONTRAINDICATED,
                 request={"therapy": "scig", "product": "Hizentra", "dose_g_per_kg": 0.4, "days_per_cycle": 1,
                          "interval_weeks": 1, "cycles": 26})
    d, b = det.dosing, det.billing
    assert d["hcpcs"] == "J1559" and d["billing_units_per_cycle"] == 240
    assert [(v["size_g"], v["count"]) for v in d["vials"]] == [(10, 2), (4, 1)]
    assert d["waste_units"] == 0 and d["waste_modifier"] == "JZ"
    assert [a["cpt"] for a in b["administration"]] == ["96369", "96370", "96371"]
    assert b["administration"][0]["units"] == 1 and b["administration"][1]["units"] is None
    assert not any("request is for scig" in w for w in det.warnings)


def test_gamunex_given_sc_keeps_its_iv_code_and_warns_nothing(decide):
    det = decide(request={"therapy": "scig", "product": "Gamunex-C", "dose_g_per_kg": 0.4, "days_per_cycle": 1,
                          "interval_weeks": 1})
    assert det.dosing["hcpcs"] == "J1561" and det.dosing["billing_units_per_cycle"] == 48
    assert not any("request is for scig" in w for w in det.warnings)


def test_a_product_of_another_therapy_still_warns(decide):
    det = decide(request={"therapy": "scig", "product": "Privigen"})
    assert any("product Privigen is ivig, but the request is for scig" in w for w in det.warnings)


def test_yimmugo_is_billed_per_100_mg(decide):
    det = decide(request={"product": "Yimmugo"})  # 60 kg x 2 = 120 g
    assert det.dosing["hcpcs"] == "J1553" and det.dosing["billing_units_per_cycle"] == 1200
    assert [(v["size_g"], v["count"]) for v in det.dosing["vials"]] == [(20, 6)]


def test_rituximab_per_dose(decide):
    det = decide(diagnoses=[{"code": "L10.0"}], findings=[{"kind": "skin_biopsy", "supports_diagnosis": True}],
                 request={"therapy": "rituximab", "product": "Truxima", "dose_mg": 750, "doses": 2,
                          "dose_g_per_kg": None, "days_per_cycle": None, "interval_weeks": None, "cycles": None})
    d, b = det.dosing, det.billing
    assert d["billing_units_per_dose"] == 75
    assert [(v["size_mg"], v["count"]) for v in d["vials"]] == [(500, 1), (100, 3)]
    assert d["vials"][1]["ndc"] == "63459-0103-10"
    assert d["dispensed_mg"] == 800 and d["dispensed_units"] == 80 and d["waste_units"] == 5
    assert d["waste_modifier"] == "JW"
    assert b["per"] == "dose" and b["hcpcs"] == "Q5115"
    assert [a["cpt"] for a in b["administration"]] == ["96413", "96415"]
    assert b["administration"][0]["units"] == 1


def test_administration_ivig(decide):
    b = decide().billing
    assert [(a["cpt"], a["units"]) for a in b["administration"]] == [("96365", 5), ("96366", None)]
    assert "30 minutes" in b["administration"][1]["rule"]


def test_place_of_service_from_the_field_wins(decide):
    b = decide(request={"site_of_care": "hospital_outpatient", "place_of_service": "19"}).billing
    assert b["place_of_service"]["code"] == "19" and b["place_of_service"]["basis"] == "request"
    assert b["place_of_service"]["name"] == "Off Campus-Outpatient Hospital"


@pytest.mark.parametrize("site, code", [("home", "12"), ("physician_office", "11"), ("hospital_outpatient", "22"),
                                        ("infusion_center", "11")])
def test_place_of_service_from_site_of_care(decide, site, code):
    pos = decide(request={"site_of_care": site}).billing["place_of_service"]
    assert pos["code"] == code and pos["basis"] == "site_of_care"


def test_no_site_no_place_of_service(decide):
    assert decide().billing["place_of_service"] is None


def test_home_infusion_uses_the_per_diem(decide):
    b = decide(request={"site_of_care": "home"}).billing
    assert [(a["cpt"], a["units"]) for a in b["administration"]] == [("S9338", 5)]


def test_unknown_product_has_no_billing_block(decide):
    assert decide(request={"product": "Imaginaglobulin"}).billing is None


def test_flebogamma_dif_resolves_with_a_warning(decide):
    det = decide(request={"product": "Flebogamma DIF"})
    assert det.dosing["product"] == "Flebogamma 10% DIF" and det.dosing["hcpcs"] == "J1572"
    assert any("two products" in w for w in det.warnings)
    assert not any("two products" in w for w in decide(request={"product": "Flebogamma 5% DIF"}).warnings)


# ------------------------------------------------------------------ authorization cycles


def test_cycles_starting_within_six_months():
    # 2026-12-01 .. 2027-05-31 (181 days): starts on days 0, 28, ..., 168 -> 7 cycles.
    assert cycles_in_period(date(2026, 12, 1), date(2027, 5, 31), 4) == 7
    assert cycles_in_period(date(2026, 12, 1), date(2027, 5, 31), 1) == 26
    assert cycles_in_period(date(2026, 12, 1), date(2027, 5, 31), None) is None


def test_26_cycles_every_4_weeks_in_6_months_approve_7(decide):
    det = decide(contraindications=CONTRAINDICATED, patient={"weight_kg": 61.5},
                 request={"cycles": 26, "start_date": "2026-12-01"})
    assert det.determination == "meets_criteria"
    auth = det.to_dict()["authorization"]
    assert auth["months"] == 6 and auth["end"] == "2027-05-31"
    assert auth["cycles_requested"] == 26 and auth["cycles_fit"] == 7 and auth["cycles_approvable"] == 7
    assert auth["units_per_cycle"] == 246 and auth["units_approvable"] == 7 * 246
    assert auth["dispensed_units_approvable"] == 7 * 250


def test_fewer_requested_than_fit_are_all_approvable(decide):
    auth = decide(contraindications=CONTRAINDICATED, request={"cycles": 3}).authorization()
    assert auth["cycles_requested"] == 3 and auth["cycles_approvable"] == 3


def test_rituximab_authorization_counts_doses():
    ref = referral_from_data(referral_data(request={"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000,
                                                    "doses": 2, "dose_g_per_kg": None, "days_per_cycle": None,
                                                    "interval_weeks": None, "cycles": None}), "t")
    dosing = {"billing_units_per_dose": 100, "dispensed_units": 100}
    auth = authorization_cycles(ref, dosing, date(2026, 12, 1), date(2027, 5, 31))
    assert auth["per"] == "dose" and auth["doses_requested"] == 2 and auth["doses_approvable"] == 2
    assert auth["cycles_approvable"] == 2 and auth["units_approvable"] == 200


# ------------------------------------------------------------------ the contract stays


def test_spec_example_keeps_its_dosing_and_gains_billing(runner):
    got = json.loads(runner.invoke(cli, ["check", str(SPEC_EXAMPLES / "dm-refractory.yaml"), "--json"]).output)
    assert got["dosing"]["billing_units_per_cycle"] == 272  # prescribed, unchanged
    assert got["dosing"]["dispensed_units"] == 280 and got["dosing"]["waste_modifier"] == "JW"
    assert set(got["billing"]) >= {"hcpcs", "unit", "prescribed_units", "lines", "dispensed_units", "waste_units",
                                   "modifier", "administration", "place_of_service"}


def test_check_prints_the_billing_block(runner):
    out = runner.invoke(cli, ["check", str(SPEC_EXAMPLES / "dm-refractory.yaml")]).output
    assert "Billing:" in out and "3 x 40 g (NDC 44206-0439-40)" in out and "wasted 8 (JW)" in out
    assert "administration 96365" in out and "place of service: 11 Office" in out
