"""Safety-relevant data in a Synthea-like bundle (issue 13, FHIR part): serum creatinine and
eGFR become assessments (the most recent on or before the referral date; a later value is
not yet known on it), heart failure and obesity Conditions become ICD-10-CM diagnoses, and the
safety rules of criteria/safety.yaml warn from them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.io.readers import read_referral

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = json.loads((ROOT / "samples" / "fhir" / "dm-bundle.json").read_text(encoding="utf-8"))
PATIENT = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}  # the bundle is dated 2026-11-20


@pytest.fixture(scope="module")
def criteria():
    return load_criteria(None)


def _without_renal(bundle: dict) -> dict:
    bundle["entry"] = [e for e in bundle["entry"]
                       if "2160-0" not in json.dumps(e["resource"].get("code") or {})]
    return bundle


def _lab(n: int, loinc: str, display: str, value: float, unit: str, day: str) -> dict:
    return {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-0000000009{n:02d}",
            "resource": {"resourceType": "Observation", "id": f"00000000-0000-4000-8000-0000000009{n:02d}",
                         "status": "final", "subject": PATIENT, "effectiveDateTime": day,
                         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                   "code": "laboratory"}]}],
                         "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}],
                                  "text": display},
                         "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                           "code": unit}}}


def _condition(n: int, snomed: str, display: str) -> dict:
    return {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-0000000008{n:02d}",
            "resource": {"resourceType": "Condition", "id": f"00000000-0000-4000-8000-0000000008{n:02d}",
                         "subject": PATIENT, "onsetDateTime": "2020-01-01",
                         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                        "code": "active"}]},
                         "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": display}],
                                  "text": display}}}


def _read(tmp_path: Path, bundle: dict, criteria):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    ref, warnings = read_referral(str(path), None, criteria=criteria)
    return ref, determine(ref, criteria, warnings)


def _renal_warning(det) -> bool:
    return any("renal function" in w for w in det.warnings)


@pytest.mark.parametrize("loinc,display,measure,value,unit", [
    ("38483-4", "Creatinine [Mass/volume] in Blood", "creatinine", 1.1, "mg/dL"),
    ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood "
                "by Creatinine-based formula (MDRD)", "egfr", 72.0, "mL/min/{1.73_m2}"),
    ("62238-1", "Glomerular filtration rate/1.73 sq M.predicted (CKD-EPI)", "egfr", 64.0, "mL/min/{1.73_m2}"),
    ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted (CKD-EPI 2021)", "egfr", 81.0, "mL/min/{1.73_m2}"),
])
def test_renal_function_becomes_an_assessment_and_satisfies_the_rule(tmp_path, criteria, loinc, display, measure,
                                                                    value, unit):
    bundle = _without_renal(copy.deepcopy(BUNDLE))
    _, det = _read(tmp_path, bundle, criteria)
    assert _renal_warning(det)  # without it: warned
    bundle["entry"] += [_lab(1, loinc, display, value * 2, unit, "2026-01-05"),   # older
                        _lab(2, loinc, display, value, unit, "2026-11-12"),       # the most recent on the date
                        _lab(3, loinc, display, value * 3, unit, "2026-11-25")]   # after the referral date
    ref, det = _read(tmp_path, bundle, criteria)
    found = [(a.measure, a.value, a.date.isoformat()) for a in ref.assessments if a.measure == measure]
    assert found == [(measure, value, "2026-11-12")]
    assert not _renal_warning(det)


def test_a_renal_value_after_the_referral_date_is_ignored(tmp_path, criteria):
    bundle = _without_renal(copy.deepcopy(BUNDLE))
    bundle["entry"].append(_lab(4, "38483-4", "Creatinine [Mass/volume] in Blood", 1.0, "mg/dL", "2026-11-21"))
    ref, det = _read(tmp_path, bundle, criteria)
    assert not [a for a in ref.assessments if a.measure == "creatinine"]
    assert _renal_warning(det)


@pytest.mark.parametrize("snomed,display,code,warning", [
    ("88805009", "Chronic congestive heart failure (disorder)", "I50.9", "heart failure documented"),
    ("42343007", "Congestive heart failure (disorder)", "I50.9", "heart failure documented"),
    ("84114007", "Heart failure (disorder)", "I50.9", "heart failure documented"),
    ("162864005", "Body mass index 30+ - obesity (finding)", "E66.9", "thrombosis risk"),
    ("414916001", "Obesity (disorder)", "E66.9", "thrombosis risk"),
    ("408512008", "Body mass index 40+ - severely obese (finding)", "E66.01", "thrombosis risk"),
])
def test_heart_failure_and_obesity_are_diagnoses_and_safety_warnings(tmp_path, criteria, snomed, display, code,
                                                                     warning):
    bundle = copy.deepcopy(BUNDLE)
    _, before = _read(tmp_path, bundle, criteria)
    assert not any(warning in w and code in w for w in before.warnings)
    bundle["entry"].append(_condition(1, snomed, display))
    ref, det = _read(tmp_path, bundle, criteria)
    assert code in [d.code for d in ref.diagnoses]
    assert det.determination == before.determination  # not the disease: the determination is unchanged
    assert any(warning in w and code in w for w in det.warnings), det.warnings


def test_an_unconfirmed_snomed_id_with_another_text_maps_to_nothing(tmp_path, criteria):
    """The new concept ids are verified: false: the Condition's text must name the condition."""
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"].append(_condition(3, "88805009", "Seasonal allergic rhinitis"))
    ref, _ = _read(tmp_path, bundle, criteria)
    assert "I50.9" not in [d.code for d in ref.diagnoses]
