"""The payer policy library (issue 13): each variant names the payer's own document, each
criterion cites it, the baseline names the US payer criteria it applies, a payer with no
variant gets the baseline with a warning and a field; explain and lint follow."""

from __future__ import annotations

import json
import re
import shutil

from priorauth.cli.main import cli
from priorauth.core.yamlio import read_yaml
from priorauth.criteria.lint import lint_criteria
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

from .conftest import ROOT, SAMPLES


def check(runner, name):
    result = runner.invoke(cli, ["check", str(SAMPLES / name), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_every_payer_variant_names_its_document(criteria):
    for p in criteria.policies:
        if p.payer != "baseline":
            assert p.document is not None and p.document.title, p.id
            assert not p.document.basis, p.id


def test_a_variant_cites_its_document_per_criterion(runner):
    got = check(runner, "payer-aetna-pf-cpb0206.yaml")
    assert got["policy"]["document"]["number"] == "CPB 0206"
    assert got["policy"]["baseline_for_payer"] is None
    for c in got["criteria"]:
        assert c["citation"] and c["citation"].startswith("Aetna CPB 0206, Parenteral Immunoglobulins"), c["id"]
    covered = next(c for c in got["criteria"] if c["id"] == "diagnosis_covered")
    assert "Autoimmune mucocutaneous blistering diseases: pemphigus vulgaris" in covered["citation"]


def test_medicare_cites_the_ncd_section(runner):
    got = check(runner, "medicare-pv-maintenance.yaml")
    short = next(c for c in got["criteria"] if c["id"] == "short_term_only")
    assert short["citation"].startswith("CMS NCD 250.3, Intravenous Immune Globulin")
    assert "Indications and Limitations of Coverage" in short["citation"]


def test_the_baseline_names_the_payer_criteria_it_applies(runner):
    got = check(runner, "payer-aetna-dm-baseline.yaml")
    assert got["policy"]["id"] == "ivig-myositis"
    assert got["policy"]["baseline_for_payer"] == "aetna"
    assert any("no policy variant" in w and "aetna" in w for w in got["warnings"])
    doc = got["policy"]["document"]
    assert doc["title"] == "Criteria commonly used by US payers"
    for c in got["criteria"]:
        assert c["citation"].startswith("Criteria commonly used by US payers (CMS NCD 250.3"), c["id"]
        assert "Ontario" not in c["citation"].split("background")[0], c["id"]


def test_baseline_for_payer_is_null_for_the_payers_own_variant(criteria):
    det = determine(referral_from_data(read_yaml(SAMPLES / "pv-magellan-unit-cap.yaml"), "test"), criteria)
    assert det.policy.payer == "magellan" and det.to_dict()["policy"]["baseline_for_payer"] is None
    assert det.to_dict()["policy"]["document"]["number"] == "EH-0071"


def test_uhc_excludes_its_not_medically_necessary_products(runner, criteria):
    got = check(runner, "payer-uhc-bp-panzyga.yaml")
    assert got["policy"]["id"] == "uhc-ivig-blistering" and got["determination"] == "not_eligible"
    assert any("Panzyga" in r for r in got["reasons"])
    data = read_yaml(SAMPLES / "payer-uhc-bp-panzyga.yaml")
    data["request"]["product"] = "Privigen"
    assert determine(referral_from_data(data, "test"), criteria).determination == "meets_criteria"


def test_explain_cites_the_payers_document(runner):
    out = runner.invoke(cli, ["explain", "aetna-ivig-blistering"]).output
    assert "Payer's policy: Aetna CPB 0206, Parenteral Immunoglobulins" in out
    base = runner.invoke(cli, ["explain", "ivig-myositis"]).output
    assert "Applies: Criteria commonly used by US payers" in base and "(literature)" in base
    ma = runner.invoke(cli, ["explain", "medicare-advantage-ivig-myositis"]).output
    assert "for medicare advantage" in ma and "LCD L35093" in ma


def test_lint_flags_a_node_without_a_named_source(tmp_path):
    root = tmp_path / "criteria"
    shutil.copytree(ROOT / "criteria", root)
    path = root / "payers" / "uhc" / "blistering.yaml"
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'(  uhc-products:\n    citation: )"[^"\n]*"', r'\1"TBD"', text)
    text = re.sub(r"document:\n(  .*\n)+", "", text)  # the variant no longer names UHC's document
    path.write_text(text, encoding="utf-8")
    problems, _ = lint_criteria(root)
    joined = "\n".join(problems)
    assert "node product_not_excluded: source: 'uhc-products' has no citation naming a document" in joined
    assert "policy uhc-ivig-blistering: document: a payer variant must name the payer's own policy" in joined
    assert lint_criteria(ROOT / "criteria")[0] == []
