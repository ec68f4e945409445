"""The contract's examples give exactly the results their comments state."""

from __future__ import annotations

import json
import re

import pytest

from priorauth.cli.main import cli

from .conftest import SAMPLES, SPEC_EXAMPLES


EXPECTED = {
    "dm-refractory.yaml": dict(determination="meets_criteria",
                               pathways={"refractory_to_steroids", "first_line_failure"},
                               dosing=dict(weight_basis="actual", dosing_weight_kg=68.0, grams_per_cycle=136.0,
                                           hcpcs="J1459", billing_units_per_cycle=272)),
    "bp-rapidly-progressive.yaml": dict(determination="meets_criteria", pathways={"rapidly_progressive"},
                                        dosing=dict(weight_basis="adjusted", dosing_weight_kg=68.2,
                                                    grams_per_cycle=136.5, hcpcs="J1568",
                                                    billing_units_per_cycle=273)),
    "pv-missing-biopsy.yaml": dict(determination="missing_documentation", pathways={"flare_on_taper"}),
}


def run_check(runner, path):
    result = runner.invoke(cli, ["check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_yields_what_its_comment_states(runner, name):
    path = SPEC_EXAMPLES / name
    stated = re.search(r"# Must yield: determination (\w+)", path.read_text()).group(1)
    want = EXPECTED[name]
    assert stated == want["determination"]  # our table agrees with the file's own comment
    got = run_check(runner, path)
    assert got["determination"] == want["determination"]
    assert set(got["pathways_met"]) == want["pathways"]
    for key, value in want.get("dosing", {}).items():
        assert got["dosing"][key] == value, key


def test_missing_biopsy_is_named(runner):
    got = run_check(runner, SPEC_EXAMPLES / "pv-missing-biopsy.yaml")
    assert len(got["missing"]) == 1
    assert "biopsy" in got["missing"][0]
    confirmed = next(c for c in got["criteria"] if c["id"] == "diagnosis_confirmed")
    assert confirmed["status"] == "unknown"


def test_determination_json_has_the_contract_fields(runner):
    got = run_check(runner, SPEC_EXAMPLES / "dm-refractory.yaml")
    for key in ("referral_id", "determination", "policy", "pathways_met", "criteria", "missing", "dosing", "warnings"):
        assert key in got
    assert {"id", "payer", "version", "sources"} <= set(got["policy"])
    assert got["policy"]["sources"] and all(isinstance(s, str) for s in got["policy"]["sources"])
    crit = {c["id"]: c for c in got["criteria"]}
    assert crit["refractory_to_steroids"]["evidence"][0] == {
        "kind": "treatment", "index": 0, "summary": crit["refractory_to_steroids"]["evidence"][0]["summary"]}
    assert "prednisone" in crit["refractory_to_steroids"]["evidence"][0]["summary"]
    assert crit["first_line_failure"]["evidence"][0]["index"] == 1  # methotrexate, the intolerance


# The bundled samples: what each file's header comment promises.
SAMPLE_EXPECTED = {
    "dm-steroid-intolerance.yaml": ("meets_criteria", {"steroid_intolerance"}),
    "pm-first-line-failure.yaml": ("meets_criteria", {"first_line_failure"}),
    "jdm-steroid-contraindication.yaml": ("meets_criteria", {"steroid_contraindication"}),
    "pm-undated-steroid-trial.yaml": ("missing_documentation", set()),
    "pv-rituximab-first-line.yaml": ("meets_criteria", {"first_line_indication"}),
    "bp-short-steroid-trial.yaml": ("not_eligible", set()),
    "scleromyxedema-first-line.yaml": ("meets_criteria", {"first_line_indication"}),
    "eba-rapidly-progressive.yaml": ("meets_criteria", {"rapidly_progressive"}),
    "mmp-dose-above-limit.yaml": ("not_eligible", {"refractory_to_steroids", "first_line_failure"}),
    "ibm-not-covered.yaml": ("not_eligible", set()),
    "pf-flare-on-taper.yaml": ("meets_criteria", {"flare_on_taper"}),
    # revision 2: conventional agents by disease, dose adequacy, rituximab courses
    "bp-doxycycline-failure.yaml": ("meets_criteria", {"first_line_failure"}),
    "bp-dupilumab-failure.yaml": ("meets_criteria", {"first_line_failure"}),
    "bp-low-dose-prednisone.yaml": ("not_eligible", set()),
    "pf-rituximab-course-failure.yaml": ("meets_criteria", {"first_line_failure"}),
    "pf-dapsone-undated.yaml": ("missing_documentation", set()),
    # SCIG: maintenance after IVIG (baseline), not covered by Medicare
    "scig-dm-maintenance.yaml": ("meets_criteria", {"refractory_to_steroids"}),
    "scig-dm-medicare.yaml": ("not_eligible", {"refractory_to_steroids"}),
    "scig-dm-undated-ivig.yaml": ("missing_documentation", {"refractory_to_steroids"}),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECTED))
def test_sample(runner, name):
    determination, pathways = SAMPLE_EXPECTED[name]
    got = run_check(runner, SAMPLES / name)
    assert got["determination"] == determination
    assert set(got["pathways_met"]) == pathways


def test_samples_cover_every_pathway_and_determination():
    pathways = set().union(*(p for _, p in SAMPLE_EXPECTED.values()))
    assert pathways >= {"refractory_to_steroids", "steroid_intolerance", "steroid_contraindication",
                        "flare_on_taper", "first_line_failure", "rapidly_progressive", "first_line_indication"}
    assert {d for d, _ in SAMPLE_EXPECTED.values()} == {"meets_criteria", "missing_documentation", "not_eligible"}
    assert {p.name for p in SAMPLES.glob("*.yaml")} >= set(SAMPLE_EXPECTED)


def test_undated_trial_and_missing_weight_are_named(runner):
    got = run_check(runner, SAMPLES / "pm-undated-steroid-trial.yaml")
    assert got["missing"] == ["start date of the prednisone trial", "patient's current weight in kg"]
    assert got["dosing"] is None


def test_uncovered_diagnosis_has_no_policy(runner):
    got = run_check(runner, SAMPLES / "ibm-not-covered.yaml")
    assert got["policy"] is None and got["pathways_met"] == [] and got["criteria"] == []
    assert got["reasons"] == ["no ivig policy covers G72.41"]
