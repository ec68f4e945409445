"""The library API of `priorauth/__init__.py`, the installed wheel, and check's two outputs agreeing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import priorauth
from priorauth import InputError, check, import_fhir, lint, load_referral, render_letter, run_batch
from priorauth.cli.main import cli

from .conftest import SAMPLES, SPEC_EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
DM = SAMPLES / "dm-steroid-intolerance.yaml"


def test_check_takes_a_path_text_mapping_or_referral():
    text = DM.read_text()
    by_path = check(DM)
    assert by_path.determination == "meets_criteria"
    for given in (str(DM), text, yaml.safe_load(text), load_referral(DM)):
        assert check(given).to_dict() == by_path.to_dict()


def test_check_to_dict_is_the_cli_json(runner):
    got = runner.invoke(cli, ["check", str(DM), "--json"])
    assert got.exit_code == 0
    assert json.loads(got.output) == check(DM).to_dict()


@pytest.mark.parametrize("name", sorted(p.name for p in SPEC_EXAMPLES.glob("*.yaml")))
def test_check_keeps_the_spec_examples(name):
    path = SPEC_EXAMPLES / name
    want = re.search(r"^# Must yield: determination ([a-z_]+);", path.read_text(), re.M).group(1)
    assert check(path).determination == want


def test_bad_input_is_an_input_error_naming_the_field_not_the_value():
    data = yaml.safe_load(DM.read_text())
    data["patient"]["sex"] = "Zanzibar-Quux"
    with pytest.raises(InputError) as err:
        load_referral(data)
    assert "patient.sex" in str(err.value) and "Zanzibar-Quux" not in str(err.value)


def test_render_letter_from_a_determination():
    det = check(DM)
    html = render_letter(det, "html").decode()
    assert det.referral.patient.family_name in html and "<html" in html.lower()
    docx = render_letter(det, "docx")
    assert zipfile.ZipFile(__import__("io").BytesIO(docx)).testzip() is None


def test_import_fhir_and_check_a_bundle():
    bundle = SAMPLES / "fhir" / "dm-bundle.json"
    ref = import_fhir(bundle)
    assert check(ref).determination == check(json.loads(bundle.read_text())).determination


def test_lint_is_clean_for_the_bundled_criteria_and_finds_a_broken_folder(tmp_path):
    assert lint() == []
    broken = tmp_path / "criteria"
    import shutil

    shutil.copytree(ROOT / "criteria", broken)
    policy = next((broken / "ivig").glob("myositis.yaml"))
    policy.write_text(policy.read_text().replace("source:", "sourcez:", 1))
    assert lint(broken)


def test_run_batch_writes_results(tmp_path):
    summary = run_batch(SAMPLES, tmp_path / "out", formats=(), jobs=1)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(list(SAMPLES.glob("*.yaml"))) and summary is not None


def test_public_names_are_typed_and_lazy():
    for name in priorauth.__all__:
        assert getattr(priorauth, name) is not None
    # `import priorauth` alone loads none of the engine (start-up of every command)
    code = "import sys, priorauth; print(any(m.startswith('priorauth.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_check_text_and_json_agree_on_every_node(runner, sample):
    text = runner.invoke(cli, ["check", str(SAMPLES / sample)]).output
    data = json.loads(runner.invoke(cli, ["check", str(SAMPLES / sample), "--json"]).output)
    shown = re.findall(r"^\s+\[(MET|NOT MET|UNKNOWN)\] (.*?)(  \(rule not confirmed in a published source\))?$",
                       text, re.M)
    assert len(shown) == len(data["criteria"])
    for (status, label, flag), node in zip(shown, data["criteria"]):
        assert (status.lower().replace(" ", "_"), label, not flag) == (node["status"], node["label"], node["verified"])


# ------------------------------------------------------------------ the installed wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, unpacked where only it (not the checkout) is found."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheels.glob("priorauth-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "priorauth/_data/criteria/ivig/myositis.yaml" in names
    assert "priorauth/_data/templates/letter.docx" in names
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIORAUTH_")}
    env["PYTHONPATH"] = str(target)
    return subprocess.run([sys.executable, "-m", "priorauth", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_runs_every_command_from_an_unrelated_folder(installed, tmp_path):
    where = run_installed(installed, tmp_path, "--version")
    assert where.returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import priorauth.core.resources as r; print(r.bundled('criteria'))"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(installed)), probe.stdout + probe.stderr
    ref = tmp_path / "r.yaml"
    ref.write_text(DM.read_text())
    got = run_installed(installed, tmp_path, "check", "r.yaml", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["determination"] == "meets_criteria"
    got = run_installed(installed, tmp_path, "letter", "r.yaml", "-o", "l.docx")
    assert got.returncode == 0, got.stderr
    assert zipfile.is_zipfile(tmp_path / "l.docx")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "r.yaml").write_text(DM.read_text())
    got = run_installed(installed, tmp_path, "batch", "in", "-o", "out")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "letters").is_dir() and (tmp_path / "out" / "worklist.csv").is_file()
    got = run_installed(installed, tmp_path, "lint")
    assert got.returncode == 0, got.stderr + got.stdout
