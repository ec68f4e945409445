"""`priorauth lint` catches seeded defects of each kind, and passes on the shipped criteria."""

from __future__ import annotations

import shutil

import pytest
import yaml

from priorauth.cli.main import cli
from priorauth.criteria.lint import lint_criteria

from .conftest import ROOT


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "criteria"
    shutil.copytree(ROOT / "criteria", root)
    return root


def edit(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def nodes(tree_node):
    yield tree_node
    for key in ("all_of", "any_of", "of"):
        for child in tree_node.get(key, []):
            yield from nodes(child)


def node(data, node_id):
    return next(n for n in nodes(data["criteria"]) if n.get("id") == node_id)


def test_shipped_criteria_are_clean():
    problems, count = lint_criteria(ROOT / "criteria")
    assert problems == [] and count >= 10


SEEDED = {
    "unknown drug class": ("rituximab/myositis.yaml",
                           lambda d: node(d, "first_line_failure").update(drug_class="steroid_sparring"),
                           "drug class 'steroid_sparring' is not defined"),
    "unknown finding kind": ("rituximab/myositis.yaml",
                             lambda d: d["parameters"].update(confirming_findings=["muscle_biopsy", "biopsy"]),
                             "unknown finding kind 'biopsy'"),
    "malformed ICD-10 code": ("ivig/scleromyxedema.yaml", lambda d: d.update(covered_codes=["L98-5"]),
                              "covered_codes.0: not an ICD-10-CM code"),
    "two policies claim the same payer": ("ivig/scleromyxedema.yaml",
                                          lambda d: d.update(covered_codes=["L98.5", "M33.1"]),
                                          "claims payer 'baseline', therapy ivig and code(s) M33.1"),
    "node without a source": ("rituximab/myositis.yaml", lambda d: node(d, "diagnosis_covered").pop("source"),
                              "node diagnosis_covered: source: every rule must cite a source"),
    "source not defined": ("rituximab/myositis.yaml", lambda d: node(d, "diagnosis_covered").update(source="nowhere"),
                           "source: 'nowhere' is not among the policy's sources"),
    "pathway that can never be met": ("rituximab/myositis.yaml",
                                      lambda d: d["parameters"].update(min_steroid_sparing_failures=12),
                                      "can never be met: needs 12 different drugs"),
    "at_least more than its children": ("rituximab/myositis.yaml",
                                        lambda d: d["criteria"]["all_of"].append(
                                            {"id": "two_of_one", "label": "x", "source": "spec", "at_least": 2,
                                             "of": [{"id": "fl", "label": "y", "source": "spec", "type": "first_line"}]}),
                                        "can never be met: at_least 2 of 1 children"),
    "unknown parameter": ("rituximab/myositis.yaml", lambda d: node(d, "dosing").update(max_doses="$max_dosez"),
                          "unknown parameter '$max_dosez'"),
    "typo in a field": ("rituximab/myositis.yaml", lambda d: node(d, "dosing").update(max_dose=2),
                        "max_dose"),
    "duplicate node id": ("rituximab/myositis.yaml",
                          lambda d: d["criteria"]["all_of"].append(
                              {"id": "dosing", "label": "again", "source": "spec", "type": "first_line"}),
                          "node dosing: id used twice"),
}


@pytest.mark.parametrize("defect", sorted(SEEDED))
def test_lint_catches_seeded_defect(tree, runner, defect):
    rel, change, expected = SEEDED[defect]
    edit(tree / rel, change)
    result = runner.invoke(cli, ["lint", str(tree)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert rel.split("/")[-1] in result.output  # names the file
    assert "Traceback" not in result.output


def test_lint_catches_vocabulary_defects(tree):
    edit(tree / "drugs.yaml", lambda d: d["drugs"]["azathioprine"].update(classes=["immunosupressants"]))
    problems, _ = lint_criteria(tree)
    assert any("drugs.azathioprine.classes: unknown class 'immunosupressants'" in p for p in problems)


def test_lint_catches_brand_claimed_by_two_drugs(tree):
    edit(tree / "drugs.yaml", lambda d: d["drugs"]["azathioprine"]["brands"].append("CellCept"))
    problems, _ = lint_criteria(tree)
    assert any("'CellCept'" in p for p in problems)


def test_check_reports_a_broken_criteria_file_clearly(tree, runner):
    edit(tree / "ivig/myositis.yaml", lambda d: d.update(covered_codes="M33"))
    result = runner.invoke(cli, ["check", str(ROOT / "samples/dm-steroid-intolerance.yaml"), "--criteria", str(tree)])
    assert result.exit_code == 2
    assert "myositis.yaml" in result.output and "covered_codes" in result.output
    assert "Traceback" not in result.output


def test_explain_prints_a_readable_policy(runner):
    result = runner.invoke(cli, ["explain", "medicare-ivig-blistering"])
    assert result.exit_code == 0
    out = result.output
    assert "Medicare NCD 250.3" in out
    assert "Refractory to systemic corticosteroids: a systemic corticosteroid ended in inadequate response after at least 4 weeks" in out
    assert "(unconfirmed)" in out          # the MAC-discretion interpretation is flagged
    assert "Continuation request" in out
    bad = runner.invoke(cli, ["explain", "no-such-policy"])
    assert bad.exit_code == 2 and "known:" in bad.output


def test_lint_takes_criteria_from_the_option_and_the_environment(runner, tmp_path, monkeypatch):

    broken = tmp_path / "crit"
    shutil.copytree(ROOT / "criteria", broken)
    (broken / "drugs.yaml").write_text("classes: {}\ndrugs: {x: {classes: [nope]}}\n")
    by_option = runner.invoke(cli, ["lint", "--criteria", str(broken)])
    assert by_option.exit_code == 2 and "drugs.yaml" in by_option.output
    monkeypatch.setenv("PRIORAUTH_CRITERIA", str(broken))
    by_env = runner.invoke(cli, ["lint"])
    assert by_env.exit_code == 2 and "drugs.yaml" in by_env.output
