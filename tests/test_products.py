"""The product table (criteria/products.yaml) and the product-specific safety rules."""

from __future__ import annotations

import re

import pytest
import yaml

from priorauth.batch.generate import IVIG_PRODUCTS
from priorauth.criteria.lint import lint_criteria

from .conftest import ROOT, SAMPLES

CONTRAINDICATED = [{"drug_class": "systemic_corticosteroids", "reason": "steroid psychosis in 2024"}]


def test_every_product_has_vials_and_a_source(criteria):
    for brand, product in criteria.products.products.items():
        assert product.vials, brand
        assert product.source, brand
        for vial in product.vials:
            assert vial.ndc is None or re.fullmatch(r"\d{5}-\d{4}-\d{2}", vial.ndc), (brand, vial.ndc)


@pytest.mark.parametrize("brand, therapy, hcpcs, unit", [
    ("Hizentra", "scig", "J1559", (0.1, "g")), ("HyQvia", "scig", "J1575", (0.1, "g")),
    ("Cuvitru", "scig", "J1555", (0.1, "g")), ("Xembify", "scig", "J1558", (0.1, "g")),
    ("Cutaquig", "scig", "J1551", (0.1, "g")), ("Yimmugo", "ivig", "J1553", (0.1, "g")),
    ("Asceniv", "ivig", "J1554", (0.5, "g")), ("Panzyga", "ivig", "J1599", (0.5, "g")),
    ("Flebogamma 5% DIF", "ivig", "J1572", (0.5, "g")), ("Flebogamma 10% DIF", "ivig", "J1572", (0.5, "g")),
    ("Rituxan", "rituximab", "J9312", (10, "mg")),
])
def test_codes_and_units_per_the_research_note(criteria, brand, therapy, hcpcs, unit):
    _, p = criteria.products.find(brand)
    assert (p.therapy, p.hcpcs, (p.unit.amount, p.unit.of)) == (therapy, hcpcs, unit)


def test_unverified_codes_stay_flagged(criteria):
    for brand in ("Panzyga", "Alyglo", "Riabni"):
        assert criteria.products.find(brand)[1].verified is False, brand
    assert criteria.products.find("Panzyga")[1].hcpcs_candidate == "J1576"


def test_new_vial_sizes(criteria):
    sizes = lambda b: [v.size for v in criteria.products.find(b)[1].vials]  # noqa: E731
    assert 2.5 in sizes("Gammaplex") and 10 in sizes("Asceniv")
    assert sizes("Flebogamma 5% DIF") == [0.5, 2.5, 5, 10, 20] and sizes("Flebogamma 10% DIF") == [5, 10, 20]
    assert sizes("Rituxan") == [100, 500]


def test_iv_products_given_sc_keep_their_code(criteria):
    for brand in ("Gamunex-C", "Gammagard Liquid"):
        p = criteria.products.find(brand)[1]
        assert p.usable_for("scig") and p.usable_for("ivig") and p.unit.amount == 0.5
    assert not criteria.products.find("Privigen")[1].usable_for("scig")


def test_excipients(criteria):
    ex = lambda b: criteria.products.find(b)[1].excipients  # noqa: E731
    assert "sorbitol" in ex("Gammaplex") and "sorbitol" in ex("Flebogamma 5% DIF")
    assert "maltose" in ex("Octagam 10%") and "maltose" in ex("Cutaquig")
    assert "L-proline" in ex("Privigen") and "L-proline" in ex("Hizentra")


def test_every_name_in_use_still_resolves(criteria):
    names = set(IVIG_PRODUCTS) | {"Octagam", "Flebogamma DIF", "Flebogamma"}
    for path in SAMPLES.glob("*.yaml"):
        product = (yaml.safe_load(path.read_text()).get("request") or {}).get("product")
        if product:
            names.add(product)
    for rule in yaml.safe_load((ROOT / "criteria" / "safety.yaml").read_text())["rules"].values():
        names.update(rule.get("products", []))
    for name in names:
        assert criteria.products.find(name) is not None, name


def test_flebogamma_dif_is_ambiguous_with_a_warning(criteria):
    assert criteria.products.find("Flebogamma DIF")[0] == "Flebogamma 10% DIF"
    assert "two products" in criteria.products.ambiguity("flebogamma dif")
    assert criteria.products.ambiguity("Privigen") is None


def test_lint_names_a_product_without_source_or_vials(tmp_path):
    import shutil

    shutil.copytree(ROOT / "criteria", tmp_path / "criteria")
    path = tmp_path / "criteria" / "products.yaml"
    data = yaml.safe_load(path.read_text())
    del data["products"]["Bivigam"]["source"]
    data["products"]["Bivigam"]["vials"] = []
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    problems, _ = lint_criteria(tmp_path / "criteria")
    assert any("products.Bivigam.source" in p for p in problems)
    assert any("products.Bivigam.vials" in p for p in problems)


# ------------------------------------------------------------------ product safety rules


def rules_of(det):
    return {s["rule"]: s for s in det.safety}


def test_fructose_intolerance_covers_flebogamma(decide):
    for product in ("Flebogamma DIF", "Flebogamma 5% DIF", "Gammaplex"):
        det = decide(request={"product": product}, diagnoses=[{"code": "M33.12"}, {"code": "E74.12"}])
        assert "fructose_intolerance" in rules_of(det), product
    assert "fructose_intolerance" not in rules_of(decide(request={"product": "Privigen"},
                                                         diagnoses=[{"code": "M33.12"}, {"code": "E74.12"}]))


def test_maltose_warns_a_diabetic_on_octagam(decide):
    det = decide(request={"product": "Octagam 10%"}, diagnoses=[{"code": "M33.12"}, {"code": "E11.9"}])
    msg = rules_of(det)["maltose_glucose_meter"]["message"]
    assert "GDH-PQQ" in msg and "glucose-specific" in msg
    insulin = decide(request={"product": "Octagam 5%"},
                     treatments=[{"drug": "insulin glargine", "start_date": "2020-01-01", "end_date": None}])
    assert "maltose_glucose_meter" in rules_of(insulin)
    assert "maltose_glucose_meter" not in rules_of(decide(request={"product": "Privigen"},
                                                          diagnoses=[{"code": "M33.12"}, {"code": "E11.9"}]))
    assert "maltose_glucose_meter" not in rules_of(decide(request={"product": "Octagam 10%"}))


@pytest.mark.parametrize("change, factor", [
    ({"diagnoses": [{"code": "M33.12"}, {"code": "E11.9"}]}, "E11.9"),
    ({"patient": {"birth_date": "1955-01-01"}}, "age 71"),
    ({"diagnoses": [{"code": "M33.12"}, {"code": "D47.2"}]}, "D47.2"),
    ({"diagnoses": [{"code": "M33.12"}, {"code": "A41.9"}]}, "A41.9"),
    ({"treatments": [{"drug": "vancomycin", "start_date": "2026-11-01", "end_date": None}]}, "vancomycin being taken"),
    ({"treatments": [{"drug": "Prograf", "start_date": "2026-01-01", "end_date": None}]}, "Prograf being taken"),
])
def test_renal_risk_factors(decide, change, factor):
    rule = rules_of(decide(**change)).get("renal_risk_factors")
    assert rule is not None and factor in rule["message"]


def test_no_renal_risk_factor_no_warning(decide):
    assert "renal_risk_factors" not in rules_of(decide())
    ended = decide(treatments=[{"drug": "ibuprofen", "start_date": "2026-01-01", "end_date": "2026-02-01"}])
    assert "renal_risk_factors" not in rules_of(ended)  # not taken on the referral date
