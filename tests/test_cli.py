"""The command line: exit codes, clear errors naming file and field, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from priorauth.cli.main import cli

from .conftest import BASE, ROOT, SAMPLES, referral_data

GOOD = SAMPLES / "dm-steroid-intolerance.yaml"


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def as_yaml(data):
    return yaml.safe_dump(data, sort_keys=False)


def test_check_text_explains(runner):
    result = runner.invoke(cli, ["check", str(GOOD)])
    assert result.exit_code == 0
    out = result.output
    assert "S-DM-001: MEETS CRITERIA" in out
    assert "[MET] Serious complications of systemic corticosteroids" in out
    assert "treatments[0]: Prednisone, oral, 60 mg daily" in out
    assert "Pathways met: steroid_intolerance" in out
    assert "123 units" not in out and "J1568" in out


def test_check_reads_stdin(runner):
    result = runner.invoke(cli, ["check", "-", "--json"], input=GOOD.read_text())
    assert result.exit_code == 0
    assert json.loads(result.output)["referral_id"] == "S-DM-001"


def test_json_and_yaml_referrals_agree(runner, tmp_path):
    data = yaml.safe_load(GOOD.read_text())
    as_json = write(tmp_path, "r.json", json.dumps(data, default=str))
    a = json.loads(runner.invoke(cli, ["check", str(GOOD), "--json"]).output)
    b = json.loads(runner.invoke(cli, ["check", str(as_json), "--json"]).output)
    assert a == b


BAD_INPUTS = {
    # name: (file content, text the error must contain)
    "malformed.yaml": ("referral_id: X\npatient: [unclosed\n", "not valid YAML or JSON"),
    "unknown-field.yaml": (as_yaml(referral_data(patient={"weight_lbs": 150})), "patient.weight_lbs: Extra inputs are not permitted"),
    "bad-npi.yaml": (as_yaml(referral_data(prescriber={"npi": "1234567890"})), "prescriber.npi: NPI check digit is wrong"),
    "short-npi.yaml": (as_yaml(referral_data(prescriber={"npi": "12345"})), "prescriber.npi: NPI must be exactly 10 digits"),
    "end-before-start.yaml": (as_yaml(referral_data(treatments=[{"drug": "prednisone", "start_date": "2026-05-01",
                                                                 "end_date": "2026-04-01"}])),
                              "treatments.0: end_date is before start_date"),
    "birth-after-date.yaml": (as_yaml(referral_data(patient={"birth_date": "2027-01-01"})),
                              "patient.birth_date is after the referral date"),
    "impossible-date.yaml": (as_yaml(referral_data(date="2026-02-30")), "date: not a real calendar date"),
    "wrong-type.yaml": (as_yaml(referral_data(patient={"weight_kg": "heavy"})), "patient.weight_kg: Input should be a valid number"),
    "wrong-enum.yaml": (as_yaml(referral_data(treatments=[{"drug": "prednisone", "outcome": "failed"}])),
                        "treatments.0.outcome: Input should be"),
    "bad-icd.yaml": (as_yaml(referral_data(diagnoses=[{"code": "dermatomyositis"}])), "diagnoses.0.code:"),
    "missing-required.yaml": (as_yaml({k: v for k, v in BASE.items() if k != "coverage"}), "coverage: Field required"),
    "bad-id.yaml": (as_yaml(referral_data(referral_id="../../etc/passwd")), "referral_id: String should match pattern"),
    "python-tag.yaml": ("referral_id: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML or JSON"),
    "not-a-mapping.yaml": ("- just\n- a list\n", "expected a mapping of referral fields"),
    "empty.yaml": ("", "the file is empty"),
    "latin1.yaml": (b"referral_id: X\npatient: {given_name: Ren\xe9e}\n", "not UTF-8 text"),
    "timestamp-as-date.yaml": (as_yaml(referral_data(date=1763596800)), "date: expected a date as YYYY-MM-DD"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exit_2_names_file_and_field(runner, tmp_path, name):
    content, expected = BAD_INPUTS[name]
    path = write(tmp_path, name, content)
    result = runner.invoke(cli, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert str(path) in result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_python_tag_is_never_executed(runner, tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, "evil.yaml", f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    runner.invoke(cli, ["check", str(path)])
    assert not marker.exists()


def test_errors_do_not_echo_patient_data(runner, tmp_path):
    path = write(tmp_path, "phi.yaml", as_yaml(referral_data(patient={"given_name": "Zelda", "birth_date": "Zelda-01"})))
    result = runner.invoke(cli, ["check", str(path)])
    assert result.exit_code == 2
    assert "patient.birth_date" in result.output
    assert "Zelda" not in result.output


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_no_error_message_echoes_field_values(runner, tmp_path, name):
    content, _ = BAD_INPUTS[name]
    result = runner.invoke(cli, ["check", str(write(tmp_path, name, content))])
    for value in ("2026-04-01", "2027-01-01", "2026-02-30", "heavy", "dermatomyositis", "1234567890", "weight_lbs: 150"):
        if value != "weight_lbs: 150":
            assert value not in result.output


def test_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(cli, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def test_schema_referral_is_the_model_schema(runner):
    result = runner.invoke(cli, ["schema", "referral"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "Referral"
    assert set(schema["required"]) >= {"referral_id", "date", "patient", "coverage", "prescriber", "diagnoses", "request"}
    assert schema["additionalProperties"] is False
    assert "supports_diagnosis" in schema["$defs"]["Finding"]["required"]


def test_policies_lists_the_baseline_table(runner):
    result = runner.invoke(cli, ["policies", "--json"])
    assert result.exit_code == 0
    rows = {(r["id"], r["payer"]) for r in json.loads(result.output)}
    assert {("ivig-myositis", "baseline"), ("ivig-blistering", "baseline"), ("ivig-scleromyxedema", "baseline"),
            ("rituximab-pemphigus-vulgaris", "baseline"), ("rituximab-myositis", "baseline")} <= rows


def test_lint_passes_on_shipped_criteria(runner):
    result = runner.invoke(cli, ["lint"])
    assert result.exit_code == 0, result.output
    assert "0 problem(s)" in result.output


def test_help_has_examples(runner):
    for command in ["check", "policies", "lint", "schema"]:
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, command


def run_module(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "priorauth", *args], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, timeout=60)


def test_python_dash_m_and_exit_code_2_in_a_real_process(tmp_path):
    ok = run_module("check", str(GOOD), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["determination"] == "meets_criteria"
    bad = write(tmp_path, "bad.yaml", "referral_id: [\n")
    result = run_module("check", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(bad) in result.stderr


def test_check_does_not_import_docx_machinery():
    code = ("import sys, runpy; sys.argv=['priorauth','check',%r,'--json'];\n"
            "try:\n    runpy.run_module('priorauth', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "bad=[m for m in ('docxtpl','lxml','docx','fhir','jinja2') if m in sys.modules]\n"
            "sys.stderr.write('LOADED:'+','.join(bad))") % str(GOOD)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stderr.strip().endswith("LOADED:"), result.stderr
