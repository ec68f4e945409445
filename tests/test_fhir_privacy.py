"""FHIR import messages name only what priorauth defines (issue 16): a resource's position
(`entry[12]`), a FHIR resource type, a FHIR status code, our field names and counts; never an
id, a reference, a code, a display text or an unknown type string taken from the input (they
may carry patient data). A bundle whose ids, references and texts carry a canary still reads
correctly, and the canary is on no output stream, in no warning and in no worklist."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

from click.testing import CliRunner

from priorauth.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "samples" / "fhir" / "dm-bundle.json"
CANARY = "SECRET"  # in every id and reference ("OBrien-SECRET-07") and in texts ("O'Brien-SECRET")
TEXT = "O'Brien-SECRET"


def _res(rtype: str, rid: str, **fields) -> dict:
    return {"fullUrl": f"urn:uuid:OBrien-SECRET-{rid}",
            "resource": {"resourceType": rtype, "id": f"OBrien-SECRET-{rid}", **fields}}


def canary_bundle() -> dict:
    text = BUNDLE.read_text(encoding="utf-8").replace("00000000-0000-4000-8000-0000000000", "OBrien-SECRET-")
    bundle = json.loads(text)
    for e in bundle["entry"]:
        r = e["resource"]
        for key in ("code", "medicationCodeableConcept", "type", "category"):
            concepts = r.get(key) if isinstance(r.get(key), list) else [r.get(key)]
            for c in concepts:
                if isinstance(c, dict):
                    for coding in c.get("coding") or []:
                        if coding.get("display"):
                            coding["display"] += f" ({TEXT})"
    patient = {"reference": "urn:uuid:OBrien-SECRET-01"}
    amb = {"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    extra = [
        _res("Encounter", "e1", status="finished", subject=patient, **amb),
        _res("Encounter", "e2", status="finished", subject=patient, **amb),
        _res("Observation", "o1", status="final", subject=patient, effectiveDateTime="2026-10-01",
             code={"coding": [{"system": "http://loinc.org", "code": "99999-9", "display": TEXT}], "text": TEXT},
             valueString=TEXT),
        _res("Observation", "o2", status="preliminary", subject=patient, effectiveDateTime="2026-10-01",
             code={"coding": [{"system": "http://loinc.org", "code": "2157-6", "display": TEXT}]},
             valueQuantity={"value": 900, "unit": "U/L"}),
        _res("Observation", "o3", status="final", subject={"reference": "Patient/OBrien-SECRET-01"},
             effectiveDateTime="2026-10-01",
             code={"coding": [{"system": "http://loinc.org", "code": "2157-6", "display": TEXT}]},
             valueQuantity={"value": 900, "unit": f"furlongs {TEXT}"}),
        _res("MedicationStatement", "m1", status="active", subject=patient, effectiveDateTime="2026-01-01",
             medicationCodeableConcept={"text": f"Loratadine {TEXT}"}),
        _res("Condition", "c1", subject=patient, code={"coding": [{"system": "http://example.org/x", "code": TEXT}],
                                                       "text": TEXT}),
        _res("Practitioner", "p9", name=[{"family": TEXT}]),
    ]
    bundle["entry"] += copy.deepcopy(extra)
    return bundle


def _write(folder: Path, bundle: dict, name: str = "bundle.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def _clean(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text, text
        assert "Traceback" not in text


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click 8.2: stderr is kept apart already
        return CliRunner()


def test_the_canary_bundle_reads_correctly_and_no_message_repeats_it(tmp_path):
    path = _write(tmp_path, canary_bundle())
    runner = _runner()
    result = runner.invoke(cli, ["check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    det = json.loads(result.stdout)
    assert det["determination"] == "meets_criteria"
    warnings = det["warnings"]
    assert len(warnings) >= 4  # there is much to say: said without the canary
    _clean("\n".join(warnings), result.stderr)
    assert any("Encounter" in w for w in warnings)  # a FHIR type is named: it is ours
    assert any("entry[" in w for w in warnings)  # resources are named by their position
    assert any("preliminary" in w for w in warnings)  # a FHIR status code is named

    plain = runner.invoke(cli, ["check", str(path)])
    assert plain.exit_code == 0, plain.output
    # The report shows the referral (a diagnosis' description is the Condition's own text, as
    # it should be); its warnings and stderr repeat nothing of the input.
    assert "Warnings:" in plain.stdout
    _clean(plain.stdout.split("Warnings:", 1)[1], plain.stderr)

    out = tmp_path / "referral.yaml"
    imported = runner.invoke(cli, ["import-fhir", str(path), "-o", str(out)])
    assert imported.exit_code == 0, imported.output
    _clean(imported.stdout, imported.stderr)
    import yaml

    ref = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert ref["diagnoses"][0]["code"].startswith("M33")
    assert any(t["drug"] == "prednisone" for t in ref["treatments"])


def test_a_batch_of_canary_bundles_keeps_it_off_the_worklist(tmp_path):
    from priorauth.batch.run import run_batch

    src = tmp_path / "in"
    src.mkdir()
    _write(src, canary_bundle(), "a.json")
    out = tmp_path / "out"
    run_batch(src, out, jobs=1, formats=())
    text = (out / "worklist.csv").read_text(encoding="utf-8-sig")
    _clean(text)
    rows = list(csv.DictReader(text.splitlines()))
    assert rows and rows[0]["status"] == "done", rows


def test_errors_about_a_bundle_never_repeat_its_ids_references_or_types(tmp_path):
    runner = _runner()
    cases = {}
    b = canary_bundle()
    b["entry"][6]["resource"]["subject"] = {"reference": "Patient/OBrien-SECRET-nobody"}
    cases["broken reference"] = b
    b = canary_bundle()
    b["entry"][6]["resource"]["subject"] = {"reference": "urn:uuid:OBrien-SECRET-04"}  # the Practitioner
    cases["reference to the wrong type"] = b
    b = canary_bundle()
    b["entry"].append({"resource": {"resourceType": "OBrienSECRET", "id": "x"}})
    cases["unknown type"] = b
    b = canary_bundle()
    b["entry"][7]["resource"]["status"] = TEXT  # FHIR bindings are not validated: read, and skipped
    cases["bad status"] = b
    b = canary_bundle()
    b["entry"][0]["resource"]["birthDate"] = TEXT
    cases["bad date"] = b
    b = canary_bundle()
    b["type"] = TEXT
    cases["bad bundle type"] = b
    b = canary_bundle()
    b["entry"][5]["resource"][f"x{CANARY}"] = 1
    cases["unknown key"] = b
    cases["not a bundle"] = {"resourceType": f"Patient{CANARY}"}
    for name, bundle in cases.items():
        path = _write(tmp_path, bundle, name.replace(" ", "-") + ".json")
        result = runner.invoke(cli, ["check", str(path), "--json"])
        if name == "bad status":
            assert result.exit_code == 0, result.output
            warnings = json.loads(result.stdout)["warnings"]
            assert any("status (unrecognised)" in w for w in warnings)
            _clean("\n".join(warnings), result.stderr)
            continue
        assert result.exit_code == 2, (name, result.output)
        assert str(path) in result.stderr
        _clean(result.stdout, result.stderr)
