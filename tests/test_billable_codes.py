"""Billable ICD-10-CM codes (spec revision 2): a non-billable category header makes coverage
unknown with the billable codes to choose from; a valid code beside a covered one is accepted."""

from __future__ import annotations

import pytest

from priorauth.core.yamlio import read_yaml
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

from .conftest import SAMPLES, referral_data


def covered(det):
    return next(c for c in det.criteria() if c["id"] == "diagnosis_covered")


@pytest.mark.parametrize("code, choice", [("M33.1", "M33.12"), ("M33.9", "M33.99"), ("M331", "M33.10"),
                                          ("M33.0", "M33.02"), ("M33.2", "M33.22"), ("M33", "M33.22")])
def test_a_myositis_header_is_unknown_with_the_billable_codes(criteria, code, choice):
    det = determine(referral_from_data(referral_data(diagnoses=[{"code": code}]), "test"), criteria)
    c = covered(det)
    assert c["status"] == "unknown" and "not a billable" in c["reason"] and choice in c["reason"]
    assert any(choice in m for m in det.missing)
    assert det.determination != "meets_criteria"


def test_a_pemphigus_header_under_medicare_lists_the_ncd_codes(criteria):
    det = determine(referral_from_data(read_yaml(SAMPLES / "medicare-pv-header-code.yaml"), "test"), criteria)
    assert det.policy.id == "medicare-ivig-blistering"
    assert det.determination == "missing_documentation"
    assert "L10.81" in covered(det)["reason"] and "L10.8," not in covered(det)["reason"]


def test_the_sample_with_a_header_code(criteria):
    det = determine(referral_from_data(read_yaml(SAMPLES / "payer-dm-header-code.yaml"), "test"), criteria)
    assert det.determination == "missing_documentation"
    assert det.missing == ["a billable ICD-10-CM code instead of the header M33.1 "
                           "(one of M33.10, M33.11, M33.12, M33.13, M33.19)"]


def test_a_billable_code_beside_the_header_decides(criteria):
    det = determine(referral_from_data(referral_data(diagnoses=[{"code": "M33.1"}, {"code": "M33.12"}]), "test"), criteria)
    assert covered(det)["status"] == "met"


@pytest.mark.parametrize("extra", ["U09.9", "U07.1", "E11.9"])
def test_a_valid_code_beside_a_covered_one_stays_accepted(criteria, extra):
    det = determine(referral_from_data(referral_data(diagnoses=[{"code": "M33.12"}, {"code": extra}]), "test"), criteria)
    assert covered(det)["status"] == "met"
    det = determine(referral_from_data(referral_data(diagnoses=[{"code": extra}, {"code": "M33.12"}]), "test"), criteria)
    assert covered(det)["status"] == "met"


def test_the_post_covid_sample_meets(criteria):
    det = determine(referral_from_data(read_yaml(SAMPLES / "payer-dm-post-covid-secondary.yaml"), "test"), criteria)
    assert det.determination == "meets_criteria"


def test_a_header_outside_any_policy_is_not_covered(criteria):
    det = determine(referral_from_data(referral_data(diagnoses=[{"code": "U09"}]), "test"), criteria)
    assert det.policy is None and det.determination == "not_eligible"


def test_every_header_lists_only_codes_below_it(criteria):
    for code, header in criteria.headers.headers.items():
        assert all(c.startswith(code) and c != code for c in header.billable), code
        assert header.source in criteria.headers.sources
