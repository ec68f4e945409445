"""Lines of business (issue 13): Original Medicare vs Medicare Advantage, prior authorization,
Part B home infusion, NCD 250.3 short-term therapy, and the on-label pathway."""

from __future__ import annotations

import json

from priorauth.cli.main import cli
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data
from priorauth.core.yamlio import read_yaml

from .conftest import SAMPLES, SPEC_EXAMPLES


def decide(criteria, name, **coverage):
    data = read_yaml(SAMPLES / name)
    data["coverage"].update(coverage)
    return determine(referral_from_data(data, "test"), criteria)


def status(det, node_id):
    return next(c["status"] for c in det.criteria() if c["id"] == node_id)


def test_payer_medicare_without_plan_type_is_original_medicare(criteria):
    det = decide(criteria, "medicare-pm-infusion-center.yaml")
    assert det.policy.id == "medicare-ivig-myositis"
    assert det.prior_authorization["required"] is False
    assert det.prior_authorization["line_of_business"] == "original_medicare"
    assert "documentation of medical necessity" in det.prior_authorization["note"]
    assert det.determination == "meets_criteria"


def test_medicare_advantage_is_a_distinct_variant_with_prior_authorization(criteria):
    det = decide(criteria, "medicare-advantage-dm-octagam.yaml")
    assert det.policy.id == "medicare-advantage-ivig-myositis"
    assert det.policy.plan_types == ["medicare_advantage"]
    assert det.prior_authorization == {**det.prior_authorization, "required": True,
                                       "line_of_business": "medicare_advantage"}
    assert det.determination == "meets_criteria" and det.pathways_met == ["on_label"]


def test_a_commercial_payers_medicare_advantage_plan_follows_medicare_rules(criteria):
    det = decide(criteria, "bp-bcbs-nc-nonpreferred.yaml", plan_type="medicare_advantage")
    assert det.policy.id == "medicare-advantage-ivig-blistering"  # not the BCBS NC commercial variant
    assert det.baseline_for_payer is None
    assert any("medicare coverage rules apply" in w for w in det.warnings)
    commercial = decide(criteria, "bp-bcbs-nc-nonpreferred.yaml")
    assert commercial.policy.id == "bcbs-nc-ivig-blistering"
    assert commercial.prior_authorization["line_of_business"] == "commercial"


def test_select_policy_keeps_its_old_callers(criteria):
    from datetime import date
    old = criteria.select_policy("ivig", ["M33.12"], "medicare", date(2026, 11, 1))
    assert old.id == "medicare-ivig-myositis"
    ma = criteria.select_policy("ivig", ["M33.12"], "medicare", date(2026, 11, 1), "medicare_advantage")
    assert ma.id == "medicare-advantage-ivig-myositis"


def test_home_infusion_under_part_b(criteria):
    home = decide(criteria, "medicare-pm-home-infusion.yaml")
    assert home.determination == "not_eligible"
    assert status(home, "site_of_care") == "not_met"
    assert "primary immunodeficiency" in next(c["reason"] for c in home.criteria() if c["id"] == "site_of_care")
    assert "first_line_failure" in home.pathways_met
    conflict = decide(criteria, "medicare-pm-site-conflict.yaml")
    assert conflict.determination == "missing_documentation"
    assert status(conflict, "site_of_care") == "unknown"
    assert any("site of care" in m for m in conflict.missing)
    # place of service alone: 12 is home
    data = read_yaml(SAMPLES / "medicare-pm-home-infusion.yaml")
    data["request"].pop("site_of_care")
    data["request"]["place_of_service"] = "12"
    assert status(determine(referral_from_data(data, "test"), criteria), "site_of_care") == "not_met"
    # neither stated: met, with a warning to document it
    data["request"].pop("place_of_service")
    unstated = determine(referral_from_data(data, "test"), criteria)
    assert status(unstated, "site_of_care") == "met"
    assert any(w.startswith("site of care not stated") for w in unstated.warnings)
    # the same chart under Medicare Advantage: the Part B rule carries over
    ma = decide(criteria, "medicare-pm-home-infusion.yaml", plan_type="medicare_advantage")
    assert ma.determination == "not_eligible" and status(ma, "site_of_care") == "not_met"
    # a commercial plan without the rule is not affected
    assert decide(criteria, "pm-first-line-failure.yaml").determination == "meets_criteria"


def test_blistering_ivig_is_short_term_under_ncd_250_3(criteria):
    late = decide(criteria, "medicare-pv-maintenance.yaml")
    assert late.determination == "not_eligible"
    assert status(late, "short_term_only") == "not_met"
    assert "maintenance" in " ".join(late.reasons())
    early = decide(criteria, "medicare-pv-short-term-continuation.yaml")
    assert early.determination == "meets_criteria" and status(early, "short_term_only") == "met"
    assert "fit" in next(c["reason"] for c in early.criteria() if c["id"] == "short_term_only")
    undated = decide(criteria, "medicare-pv-undated-course.yaml")
    assert undated.determination == "missing_documentation" and status(undated, "short_term_only") == "unknown"
    # the baseline (commercial) keeps its open continuation
    assert decide(criteria, "medicare-pv-maintenance.yaml", payer="bluepeak-health").determination == "meets_criteria"


def test_on_label_pathway_and_label_block(criteria):
    det = decide(criteria, "dm-medicare-contraindication.yaml")
    assert det.determination == "meets_criteria" and det.pathways_met == ["on_label"]
    assert det.label["on_label"] is True and det.label["product"] == "Octagam 10%"
    assert det.label["indication"] == "dermatomyositis" and det.label["age_group"] == "adults" and det.label["label_date"] == "2021-07-15"
    assert det.label["source"]
    jdm = decide(criteria, "medicare-jdm-octagam-off-label.yaml")
    assert jdm.determination == "not_eligible" and jdm.label["on_label"] is False
    assert "adults" in jdm.label["reason"]
    privigen = decide(criteria, "medicare-pm-infusion-center.yaml")  # Gamunex-C: no label on file
    assert privigen.label["on_label"] is None


def test_rituximab_pv_labels_by_date(criteria):
    data = read_yaml(SAMPLES / "pv-rituximab-first-line.yaml")
    det = determine(referral_from_data(data, "test"), criteria)
    assert det.label["product"] == "Truxima" and det.label["on_label"] is True
    data["date"] = "2025-01-10"
    for key in ("start_date",):
        data["request"].pop(key, None)
    early = determine(referral_from_data({**data, "treatments": [], "assessments": [],
                                          "findings": [f for f in data["findings"] if f.get("date", "") <= "2025-01-10"]},
                                         "test"), criteria)
    assert early.label["on_label"] is False  # Truxima's PV indication dates from June 2025


def test_medicare_rituximab_myositis_takes_the_l38920_contraindication_route(criteria):
    data = read_yaml(SAMPLES / "dm-medicare-contraindication.yaml")
    data["request"] = {"therapy": "rituximab", "product": "Rituxan", "request_type": "initial",
                       "dose_mg": 1000, "doses": 2, "start_date": "2026-12-01", "site_of_care": "infusion_center"}
    data["contraindications"].append({"drug_class": "conventional_immunosuppressants", "reason": "cirrhosis",
                                      "documented_date": "2026-09-10"})  # and steroid psychosis (the sample's)
    data["treatments"] = []
    data["assessments"] += [{"measure": "hbsag", "result": "negative", "date": "2026-10-01"},
                            {"measure": "anti_hbc", "result": "negative", "date": "2026-10-01"}]
    det = determine(referral_from_data(data, "test"), criteria)
    assert det.policy.id == "medicare-rituximab-myositis"
    assert status(det, "first_line_contraindication") == "met"
    assert "first_line_contraindication" in det.pathways_met


def test_spec_examples_state_their_line_of_business(runner):
    for name in ("dm-refractory.yaml", "bp-rapidly-progressive.yaml"):
        got = json.loads(runner.invoke(cli, ["check", str(SPEC_EXAMPLES / name), "--json"]).output)
        assert got["prior_authorization"]["required"] is False
        assert got["determination"] == "meets_criteria"


def test_a_medicare_variant_naming_no_line_of_business_serves_both(criteria):
    from datetime import date
    for plan in (None, "original_medicare", "medicare_advantage"):
        p = criteria.select_policy("scig", ["M33.12"], "medicare", date(2026, 11, 1), plan)
        assert p.id == "medicare-scig-myositis", plan
