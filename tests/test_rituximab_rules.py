"""Issue 13, rituximab rules: HBV screening and severity prerequisites, continuation by response
and time since the last infusion, the L38920 contraindication route for myositis, the PV label
by product and date. Each rule has referrals in samples/rtx-*.yaml (met, not met, unknown)."""

from __future__ import annotations

import copy

import pytest
import yaml

from priorauth.engine.determination import determine
from priorauth.engine.leaves.prerequisites import LabScreening, ProductIn, Severity
from priorauth.engine.nodes import walk
from priorauth.model.referral import referral_from_data

from .conftest import SAMPLES, status_of


def sample(name: str) -> dict:
    return yaml.safe_load((SAMPLES / name).read_text())


def decide(criteria, data: dict):
    return determine(referral_from_data(copy.deepcopy(data), "test"), criteria)


# name -> (determination, pathways_met, {criterion id: status})
EXPECTED = {
    "pv-rituximab-first-line.yaml": ("meets_criteria", {"first_line_indication"},
                                     {"hbv_screening": "met", "severity": "met"}),
    # HBV screening
    "rtx-hbv-negative.yaml": ("meets_criteria", {"first_line_indication"}, {"hbv_screening": "met"}),
    "rtx-hbv-core-positive.yaml": ("meets_criteria", {"first_line_indication"}, {"hbv_screening": "met"}),
    "rtx-hbv-core-positive-on-entecavir.yaml": ("meets_criteria", {"first_line_indication"}, {"hbv_screening": "met"}),
    "rtx-hbv-core-missing.yaml": ("missing_documentation", {"first_line_indication"}, {"hbv_screening": "unknown"}),
    "rtx-hbv-stale.yaml": ("missing_documentation", {"first_line_indication"}, {"hbv_screening": "unknown"}),
    "rtx-hbv-in-finding-text.yaml": ("missing_documentation", {"first_line_indication"}, {"hbv_screening": "unknown"}),
    # severity
    "rtx-pv-severity-physician-grade.yaml": ("meets_criteria", {"first_line_indication"}, {"severity": "met"}),
    "rtx-pv-mild.yaml": ("not_eligible", {"first_line_indication"}, {"severity": "not_met"}),
    "rtx-pv-severity-missing.yaml": ("missing_documentation", {"first_line_indication"}, {"severity": "unknown"}),
    # PV label by product and date
    "rtx-pv-biosimilar-before-label.yaml": ("not_eligible", set(), {"first_line_indication": "not_met"}),
    # continuation
    "rtx-pv-continuation-response.yaml": ("meets_criteria", set(),
                                          {"prior_course": "met", "response_to_prior_course": "met"}),
    "rtx-pv-continuation-too-soon.yaml": ("not_eligible", set(), {"prior_course": "not_met"}),
    "rtx-pv-continuation-no-response.yaml": ("not_eligible", set(), {"response_to_prior_course": "not_met"}),
    "rtx-pv-continuation-response-undocumented.yaml": ("missing_documentation", set(),
                                                       {"response_to_prior_course": "unknown"}),
    "rtx-dm-continuation-improved.yaml": ("meets_criteria", set(), {"improvement": "met", "prior_course": "met"}),
    # myositis: L38920 contraindication route
    "rtx-dm-contraindication.yaml": ("meets_criteria", {"first_line_contraindication"},
                                     {"first_line_failure": "not_met", "first_line_contraindication": "met"}),
    "rtx-dm-medicare-contraindication.yaml": ("meets_criteria", {"first_line_contraindication"},
                                              {"first_line_contraindication": "met"}),
    "rtx-dm-steroid-intolerance-only.yaml": ("not_eligible", set(), {"first_line_contraindication": "not_met"}),
    "rtx-dm-contraindication-undated-steroid.yaml": ("missing_documentation", set(),
                                                     {"first_line_contraindication": "unknown"}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(criteria, name):
    determination, pathways, statuses = EXPECTED[name]
    det = decide(criteria, sample(name))
    assert det.determination == determination, det.missing or det.reasons()
    assert set(det.pathways_met) == pathways
    for node_id, status in statuses.items():
        assert status_of(det, node_id) == status, node_id


def test_every_rtx_sample_is_checked():
    assert {p.name for p in SAMPLES.glob("rtx-*.yaml")} <= set(EXPECTED)


def test_the_medicare_sample_uses_the_lcd_variant(criteria):
    det = decide(criteria, sample("rtx-dm-medicare-contraindication.yaml"))
    assert det.policy.id == "medicare-rituximab-myositis"


# ------------------------------------------------------------------ HBV screening

def hbv_warnings(det) -> list[str]:
    return [w for w in det.warnings if "hepatitis" in w.casefold() or "hbv" in w.casefold()]


def test_positive_screen_warns_once_and_names_the_plan(criteria):
    det = decide(criteria, sample("rtx-hbv-core-positive.yaml"))
    warnings = hbv_warnings(det)
    assert len(warnings) == 1 and "antiviral prophylaxis" in warnings[0] and "anti-HBc (total) positive" in warnings[0]
    reason = next(c["reason"] for c in det.criteria() if c["id"] == "hbv_screening")
    assert "hepatology" in reason


def test_positive_screen_with_an_antiviral_does_not_warn(criteria):
    det = decide(criteria, sample("rtx-hbv-core-positive-on-entecavir.yaml"))
    assert hbv_warnings(det) == []
    assert "entecavir" in next(c["reason"] for c in det.criteria() if c["id"] == "hbv_screening")


def test_missing_screen_is_said_once_by_the_criterion_not_again_by_the_safety_screen(criteria):
    det = decide(criteria, sample("rtx-hbv-core-missing.yaml"))
    assert det.missing == ["hepatitis B screening results (HBsAg and anti-HBc, each negative or positive) "
                           "dated within 365 days before the referral"]
    assert hbv_warnings(det) == []
    assert "hbv_screening" not in {s["rule"] for s in det.safety}


def test_finding_text_is_pointed_to_not_parsed(criteria):
    det = decide(criteria, sample("rtx-hbv-in-finding-text.yaml"))
    reason = next(c["reason"] for c in det.criteria() if c["id"] == "hbv_screening")
    assert "finding 3 mentions the screening" in reason


@pytest.mark.parametrize("hbsag, status", [
    ({"value": 0.2}, "met"), ({"value": 3.1}, "met"),  # numeric index: below / at or above 1.0
    ({"result": "Non-Reactive"}, "met"), ({"result": "NOT DETECTED"}, "met"),
    ({"result": "indeterminate"}, "unknown"),  # cannot be read: repeat the test
])
def test_results_are_read_as_negative_or_positive(criteria, hbsag, status):
    data = sample("rtx-hbv-negative.yaml")
    data["assessments"][1] = {"measure": "hbsag", "date": "2026-09-20", **hbsag}
    det = decide(criteria, data)
    assert status_of(det, "hbv_screening") == status
    positive = "value" in hbsag and hbsag["value"] >= 1
    assert bool(hbv_warnings(det)) == positive


def test_a_chronic_hepatitis_b_diagnosis_still_warns_through_the_safety_rule(criteria):
    data = sample("rtx-hbv-negative.yaml")
    data["diagnoses"].append({"code": "B18.1", "description": "Chronic viral hepatitis B without delta-agent"})
    det = decide(criteria, data)
    assert {s["rule"]: s["status"] for s in det.safety}["hbv_screening"] == "risk"


def test_every_rituximab_policy_requires_hbv_screening_in_each_tree(criteria):
    policies = [p for p in criteria.policies if p.therapy == "rituximab"]
    assert {p.payer for p in policies} >= {"baseline", "magellan", "medicare"}
    for p in policies:
        for tree in filter(None, (p.criteria, p.continuation)):
            screens = [n for n in walk(tree) if isinstance(n, LabScreening)]
            assert len(screens) == 1, (p.id, tree.id)
            assert {t.label.split()[0] for t in screens[0].tests.values()} == {"HBsAg", "anti-HBc"}
            assert screens[0].within_days == 365


# ------------------------------------------------------------------ severity, labels, sources

def test_pemphigus_policies_need_severity_initially_but_not_for_a_continuation(criteria):
    for p in criteria.policies:
        if p.therapy == "rituximab" and "L10.0" in p.covered_codes:
            (sev,) = [n for n in walk(p.criteria) if isinstance(n, Severity)]
            assert sev.scores["pdai"].min_value == 9
            assert p.continuation is not None
            ids = {n.id for n in walk(p.continuation)}
            assert "severity" not in ids and "indication" not in ids
            assert {"prior_course", "response_to_prior_course"} <= ids


def test_a_stale_or_mild_grading_does_not_count(criteria):
    data = sample("rtx-pv-severity-physician-grade.yaml")
    data["assessments"][-1] = {"measure": "severity", "result": "mild", "date": "2026-09-20"}
    assert status_of(decide(criteria, data), "severity") == "not_met"
    data["assessments"][-1] = {"measure": "severity", "result": "severe", "date": "2026-03-01"}
    assert status_of(decide(criteria, data), "severity") == "unknown"


def test_labelled_products_exist_and_none_is_claimed_before_its_label(criteria):
    for p in criteria.policies:
        for n in walk(p.criteria):
            if isinstance(n, ProductIn):
                for brand, since in n.products.items():
                    assert criteria.products.find(brand), brand
                    assert since is not None
    data = sample("rtx-pv-biosimilar-before-label.yaml")
    data["request"]["product"] = "Rituxan"  # labelled for PV since 2018
    assert decide(criteria, data).determination == "meets_criteria"


def test_rituximab_policies_cite_no_ivig_document(criteria):
    for p in criteria.policies:
        if p.therapy == "rituximab":
            text = " ".join(s.citation for s in p.sources.values()).casefold()
            assert "250.3" not in text, p.id
            assert "immune globulin" not in text, p.id
            used = {n.source for n in p.nodes() if n.source}
            assert used <= set(p.sources), p.id


def test_a_biosimilar_before_its_pv_label_is_told_which_product_fits(criteria):
    det = decide(criteria, sample("rtx-pv-biosimilar-before-label.yaml"))
    assert det.would_fit == [{"criterion": "first_line_indication", "change": {"product": ["Rituxan"]},
                              "text": "a product that counts on 2025-03-03 fits: Rituxan"}]
