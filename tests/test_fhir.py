"""FHIR R4 import (issue 6): Synthea exports, our own bundles, malformed input, the CLI."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.cli.main import cli
from priorauth.engine.dosing import round1
from priorauth.io import fhir
from priorauth.io.readers import read_referral
from priorauth.model.referral import referral_from_data

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "fhir"
SYNTHEA = Path(__file__).resolve().parent / "data" / "synthea"
ADULT = SYNTHEA / "Asa_Hermiston_4384bf23-1dc3-48ca-8c84-89fbaff201ae.json"  # RA: methotrexate, cyclosporine, topical HC
CHILD = SYNTHEA / "Alexis_Toy_68cd1181-6359-4047-a77f-a165d7912480.json"  # a short oral prednisone course

# What a Synthea export lacks: no infusion order, no Coverage, NPIs that fail the check digit,
# and no condition the policies cover.
SUPPLEMENT = {
    "request": {"therapy": "ivig", "product": "Privigen", "dose_g_per_kg": 2.0, "days_per_cycle": 5,
                "interval_weeks": 4, "cycles": 6},
    "coverage": {"payer": "acme-health", "member_id": "A123"},
    "prescriber": {"name": "Anita Rao, MD", "npi": "1234567893"},
    "diagnoses": [{"code": "M33.12", "description": "Dermatomyositis with myopathy"}],
}


CRIT = load_criteria()  # the bundled criteria, loaded once: the importer is handed what it needs


@pytest.fixture(scope="module")
def crit():
    return CRIT


def referral_data_from_bundle(data, source, *, criteria=CRIT, **kw):
    """The importer with the bundled criteria's maps, vocabulary and product table."""
    return fhir.referral_data_from_bundle(data, source, maps=fhir.load_maps(criteria.root / "fhir"),
                                          vocabulary=criteria.vocabulary, products=criteria.products, **kw)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def imported(path: Path, **kw) -> tuple[dict, list[str]]:
    return referral_data_from_bundle(load_json(path), str(path), supplement=copy.deepcopy(SUPPLEMENT), **kw)


def by_drug(data: dict, drug: str) -> dict:
    matches = [t for t in data["treatments"] if t["drug"] == drug]
    assert len(matches) == 1, f"expected one {drug} treatment, got {len(matches)}"
    return matches[0]


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def med_text(resource: dict) -> str:
    return resource["medicationCodeableConcept"]["text"]


def latest_observation(bundle: dict, loinc: str) -> float:
    obs = [o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == loinc]
    return max(obs, key=lambda o: o["effectiveDateTime"])["valueQuantity"]["value"]


# ------------------------------------------------------------------ Synthea exports


def test_adult_medication_history_keeps_drugs_routes_and_dates():
    bundle = load_json(ADULT)
    data, _ = imported(ADULT)
    order = {med_text(r): r for r in resources(bundle, "MedicationRequest")}
    mtx = by_drug(data, "methotrexate")
    # The start date is the order's authoredOn, exactly as written in the bundle.
    assert mtx["start_date"] == order["Methotrexate 10 MG Oral Tablet"]["authoredOn"][:10] == "2019-02-19"
    assert (mtx["route"], mtx["end_date"], mtx["outcome"]) == ("oral", None, "ongoing")
    cyclo = by_drug(data, "cyclosporine")
    assert (cyclo["route"], cyclo["start_date"]) == ("oral", "2017-07-06")
    assert cyclo["end_date"] is not None, "a stopped order must not read as still being taken"
    hc = by_drug(data, "hydrocortisone")
    assert (hc["route"], hc["start_date"]) == ("topical", "2017-07-06")
    assert {t["drug"] for t in data["treatments"]} == {"methotrexate", "cyclosporine", "hydrocortisone"}


def test_weight_and_height_come_from_the_latest_observations():
    for path in (ADULT, CHILD):
        bundle = load_json(path)
        data, _ = imported(path)
        assert data["patient"]["weight_kg"] == round1(latest_observation(bundle, "29463-7"))
        assert data["patient"]["height_cm"] == round1(latest_observation(bundle, "8302-2"))
    child, _ = imported(CHILD)
    assert child["patient"]["weight_kg"] == 12.5  # not the newborn's 3.6 kg
    assert child["patient"]["height_cm"] == 87.2


def test_referral_date_is_the_newest_resource_date_never_the_clock():
    assert imported(ADULT)[0]["date"] == "2020-06-10"
    assert imported(CHILD)[0]["date"] == "2021-03-14"
    bundle = load_json(CHILD)
    bundle["timestamp"] = "2020-09-01T08:00:00Z"
    data, _ = referral_data_from_bundle(bundle, "child", supplement=copy.deepcopy(SUPPLEMENT))
    assert data["date"] == "2020-09-01"
    assert data["patient"]["weight_kg"] == round1(11.82157809999909)  # the latest weight on or before that date


def test_topical_hydrocortisone_is_not_a_systemic_steroid_trial(crit):
    data, warnings = imported(ADULT)
    data["findings"] = [{"kind": "muscle_biopsy", "supports_diagnosis": True}]
    hc = by_drug(data, "hydrocortisone")
    hc.update(end_date="2017-09-30", outcome="inadequate_response")  # a 12-week "failure" of the cream

    det = determine(referral_from_data(data, "adult"), crit, warnings)
    refractory = next(c for c in det.criteria() if c["id"] == "refractory_to_steroids")
    assert refractory["status"] == "not_met"
    assert not any("hydrocortisone" in e["summary"] for e in refractory["evidence"])
    assert "refractory_to_steroids" not in det.pathways_met

    hc["route"] = "oral"  # the same trial taken by mouth would count: the test can fail
    det = determine(referral_from_data(data, "adult"), crit, warnings)
    assert "refractory_to_steroids" in det.pathways_met


def test_child_prednisone_course_and_warnings_name_only_positions():
    data, warnings = imported(CHILD)
    pred = by_drug(data, "prednisone")
    assert (pred["route"], pred["start_date"]) == ("oral", "2019-09-16")
    assert pred["end_date"] is not None and pred["end_date"] <= data["date"]
    assert len(data["treatments"]) == 1
    text = "\n".join(warnings)
    # Loratadine and the epinephrine auto-injector are not in the drug vocabulary: reported, by
    # position (an id may carry data: issue 16), never by id.
    bundle = json.loads(CHILD.read_text(encoding="utf-8"))
    ids = ("811f1b08-628c-4a39-8764-f86f6076caac", "97841e2a-00c1-4b23-baf3-0fdb7f3b5091")
    assert all(named(bundle, i).split()[0] in text for i in ids)
    assert not any(i in text for i in ids)
    assert "Observation" in text and "Immunization" in text
    for phi in ("Alexis", "Toy", "Loratadine", "Epinephrine", "sinusitis", "2018-06-22"):
        assert phi not in text


def test_synthea_imports_through_the_cli(tmp_path):
    request = tmp_path / "request.yaml"
    request.write_text(yaml.safe_dump(SUPPLEMENT))
    for path in (ADULT, CHILD):
        out = tmp_path / f"{path.stem[:4]}.yaml"
        result = CliRunner().invoke(cli, ["import-fhir", str(path), "--request", str(request), "-o", str(out)])
        assert result.exit_code == 0, result.output
        referral, _ = read_referral(out)
        assert referral.coverage.payer == "acme-health"
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_check_on_a_bare_synthea_bundle_says_what_to_supply():
    result = CliRunner().invoke(cli, ["check", str(ADULT)])
    assert result.exit_code == 2
    assert "the request is missing" in result.output and "coverage" in result.output
    assert str(ADULT) in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ our bundles round-trip


@pytest.mark.parametrize("bundle, equivalent, pathways", [
    ("dm-bundle.json", "dm-fhir-equivalent.yaml", ["refractory_to_steroids", "first_line_failure"]),
    ("pv-bundle.json", "pv-fhir-equivalent.yaml", ["flare_on_taper"]),
])
def test_own_bundles_decide_like_their_yaml_referrals(crit, bundle, equivalent, pathways):
    from_fhir, warnings = read_referral(SAMPLES / bundle, criteria=crit)
    from_yaml, _ = read_referral(SAMPLES / equivalent)
    a, b = determine(from_fhir, crit, warnings), determine(from_yaml, crit)
    assert a.determination == b.determination == "meets_criteria"
    assert a.pathways_met == b.pathways_met == pathways
    assert a.dosing == b.dosing and a.dosing is not None
    assert a.policy.id == b.policy.id

    def essentials(ref):
        return ([(t.drug, t.route, t.start_date, t.end_date, t.outcome) for t in ref.treatments],
                [(f.kind, f.date, f.supports_diagnosis) for f in ref.findings],
                [d.code for d in ref.diagnoses], ref.patient.model_dump(), ref.coverage.model_dump(),
                ref.prescriber.model_dump(), ref.request.model_dump(), ref.date, ref.referral_id,
                [(c.drug, c.drug_class) for c in ref.contraindications],
                [(x.measure, x.value, x.date) for x in ref.assessments])

    assert essentials(from_fhir) == essentials(from_yaml)


def test_import_warnings_reach_the_determination():
    result = CliRunner().invoke(cli, ["check", str(SAMPLES / "dm-bundle.json"), "--json"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.output)["warnings"]
    bundle = json.loads((SAMPLES / "dm-bundle.json").read_text(encoding="utf-8"))
    assert any(named(bundle, "00000000-0000-4000-8000-000000000021").split()[0] in w and "AllergyIntolerance" in w
               for w in warnings)
    assert not any("00000000-0000-4000-8000-000000000021" in w for w in warnings)


# ------------------------------------------------------------------ malformed bundles


def mini() -> dict:
    """A small valid transaction bundle: patient, coverage, prescriber, condition, IVIG order."""
    pid = "urn:uuid:11111111-1111-4111-8111-111111111111"
    entries = [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe", "given": ["Jo"]}],
         "gender": "female", "birthDate": "1970-01-01"},
        {"resourceType": "Coverage", "id": "c1", "status": "active", "beneficiary": {"reference": pid},
         "payor": [{"display": "Centers for Medicare & Medicaid Services"}], "subscriberId": "M-1"},
        {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Rao", "given": ["Anita"]}],
         "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]},
        {"resourceType": "Condition", "id": "k1", "subject": {"reference": pid},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "396230008", "display": "Dermatomyositis"}]}},
        {"resourceType": "Observation", "id": "w1", "status": "final", "subject": {"reference": pid},
         "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "effectiveDateTime": "2026-11-01",
         "valueQuantity": {"value": 154, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
         "subject": {"reference": pid}, "medicationCodeableConcept": {"text": "Octagam 10% 10 G/100 ML Injectable Solution"},
         "authoredOn": "2026-11-15", "requester": {"reference": "Practitioner/d1"},
         "dosageInstruction": [{"text": "2 g/kg over 4 days every 4 weeks for 3 cycles"}]},
    ]
    full = [{"fullUrl": pid if r["resourceType"] == "Patient" else f"urn:uuid:{i:08d}-0000-4000-8000-000000000000",
             "resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for i, r in enumerate(entries)]
    return {"resourceType": "Bundle", "id": "mini-1", "type": "transaction", "timestamp": "2026-11-20T12:00:00Z",
            "entry": full}


def entry(bundle: dict, rid: str) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == rid)


def named(bundle: dict, rid: str) -> str:
    """How messages name a resource: its position and type (never its id, issue 16)."""
    at, res = next((i, e["resource"]) for i, e in enumerate(bundle["entry"]) if e["resource"].get("id") == rid)
    return f"entry[{at}] {res['resourceType']}"


def check_file(tmp_path: Path, payload: str | dict) -> object:
    path = tmp_path / "bundle.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return CliRunner().invoke(cli, ["check", str(path)]), path


def test_the_mini_bundle_is_valid_and_maps_its_conventions():
    data, warnings = referral_data_from_bundle(mini(), "mini")
    assert data["referral_id"] == "mini-1"  # Bundle.id
    assert data["coverage"] == {"payer": "medicare", "member_id": "M-1"}
    assert data["diagnoses"][0]["code"] == "M33.10"  # through criteria/fhir/snomed-icd10.yaml
    assert data["patient"]["weight_kg"] == 69.9  # 154 lb
    assert data["request"] == {"therapy": "ivig", "product": "Octagam 10%", "request_type": "initial",
                               "dose_g_per_kg": 2.0, "days_per_cycle": 4, "interval_weeks": 4.0, "cycles": 3}
    assert data["prescriber"] == {"name": "Anita Rao", "npi": "1234567893"}
    referral_from_data(data, "mini")


@pytest.mark.parametrize("payload, expected", [
    ("{not json at all", "not valid YAML or JSON"),
    ({"resourceType": "Patient", "id": "p"}, "expected a FHIR Bundle"),
    ({"resourceType": "Bundle", "type": "history", "entry": []}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Pateint"}}]},
     "entry[0].resource.resourceType"),
])
def test_not_a_usable_bundle_is_exit_2_naming_file_and_field(tmp_path, payload, expected):
    result, path = check_file(tmp_path, payload)
    assert result.exit_code == 2, result.output
    assert expected in result.output and str(path) in result.output
    assert "Traceback" not in result.output


def test_invalid_fhir_field_names_entry_resource_and_field(tmp_path):
    bundle = mini()
    entry(bundle, "p1")["birthDate"] = "1970-13-45"
    result, path = check_file(tmp_path, bundle)
    assert result.exit_code == 2
    assert "entry[0] Patient: birthDate" in result.output and str(path) in result.output
    assert "1970-13-45" not in result.output  # the rejected value is patient data


@pytest.mark.parametrize("rid, field, ref", [
    ("m1", "subject", "urn:uuid:99999999-9999-4999-8999-999999999999"),
    ("m1", "subject", "Patient/nobody"),
    ("m1", "requester", "Practitioner/missing"),
    ("k1", "subject", "urn:uuid:99999999-9999-4999-8999-999999999999"),
])
def test_broken_reference_is_exit_2_naming_resource_and_field(tmp_path, rid, field, ref):
    bundle = mini()
    entry(bundle, rid)[field] = {"reference": ref}
    result, path = check_file(tmp_path, bundle)
    assert result.exit_code == 2, result.output
    kind = entry(bundle, rid)["resourceType"]
    assert f"{named(bundle, rid)} {field}" in result.output and "does not resolve" in result.output
    assert kind and f"/{rid}" not in result.output and ref not in result.output
    assert str(path) in result.output and "Traceback" not in result.output


def test_two_patients_is_an_error(tmp_path):
    bundle = mini()
    bundle["entry"].append({"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                            "resource": {"resourceType": "Patient", "id": "p2"}, "request": {"method": "POST", "url": "Patient"}})
    result, _ = check_file(tmp_path, bundle)
    assert result.exit_code == 2 and "2 Patient resources" in result.output


def test_missing_request_and_coverage_are_listed_together(tmp_path):
    bundle = mini()
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in ("Coverage", "MedicationRequest")]
    result, _ = check_file(tmp_path, bundle)
    assert result.exit_code == 2
    assert "the request is missing" in result.output and "no Coverage resource" in result.output
    # The bundle's only Practitioner with a valid NPI stands in for the missing requester.
    assert "prescriber:" not in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ mapping conventions


def with_statement(status: str, reason: str | None, period: dict, text="predniSONE 20 MG Oral Tablet", route=None) -> dict:
    bundle = mini()
    statement = {"resourceType": "MedicationStatement", "id": "s1", "status": status,
                 "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": text},
                 "effectivePeriod": period}
    if reason:
        statement["statusReason"] = [{"text": reason}]
    if route:
        statement["dosage"] = [{"route": {"text": route}}]
    bundle["entry"].append({"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": statement,
                            "request": {"method": "POST", "url": "MedicationStatement"}})
    return bundle


@pytest.mark.parametrize("reason, outcome", [
    ("Adverse reaction: hyperglycaemia", "intolerance"),
    ("Stopped: steroid-induced psychosis, not tolerated", "intolerance"),
    ("Ineffective after 8 weeks", "inadequate_response"),
    ("No response; treatment failure", "inadequate_response"),
    ("Flared each time it was tapered", "flare_on_taper"),
    ("Stopped because of cost", "other"),
    ("Disease in remission", "response"),
    (None, None),
])
def test_status_reason_conventions(reason, outcome):
    bundle = with_statement("completed", reason, {"start": "2026-01-01", "end": "2026-03-01"})
    data, _ = referral_data_from_bundle(bundle, "b")
    assert by_drug(data, "prednisone").get("outcome") == outcome


def test_unmatched_reason_is_unknown_with_a_warning():
    data, warnings = referral_data_from_bundle(with_statement("stopped", "moved away", {"start": "2026-01-01",
                                                                                         "end": "2026-02-01"}), "b")
    assert "outcome" not in by_drug(data, "prednisone")
    assert any("] MedicationStatement" in w and "statusReason" in w for w in warnings)
    assert not any("s1" in w.replace("status", "") for w in warnings)


def test_active_without_end_is_ongoing_and_future_end_is_still_taking():
    data, _ = referral_data_from_bundle(with_statement("active", None, {"start": "2026-01-01", "end": "2027-06-01"}), "b")
    pred = by_drug(data, "prednisone")
    assert (pred["end_date"], pred["outcome"]) == (None, "ongoing")


def test_stopped_without_an_end_date_never_reads_as_ongoing():
    data, warnings = referral_data_from_bundle(with_statement("stopped", "ineffective", {"start": "2026-01-01"}), "b")
    pred = by_drug(data, "prednisone")
    assert pred["end_date"] == "2026-01-01" and pred["outcome"] == "inadequate_response"
    assert any("] MedicationStatement" in w and "no end date" in w for w in warnings)
    undated = with_statement("stopped", "adverse reaction", {})
    statement = entry(undated, "s1")
    statement.pop("effectivePeriod")
    statement["dateAsserted"] = "2026-05-01"
    data, _ = referral_data_from_bundle(undated, "b")
    pred = by_drug(data, "prednisone")
    assert ("start_date" not in pred, pred["end_date"], pred["outcome"]) == (True, "2026-05-01", "intolerance")
    statement.pop("dateAsserted")
    data, warnings = referral_data_from_bundle(undated, "b")
    assert not data.get("treatments") and any("no date at all" in w for w in warnings)


def test_active_with_flare_reason_keeps_the_flare():
    data, _ = referral_data_from_bundle(with_statement("active", "flare on taper below 10 mg", {"start": "2026-01-01"}), "b")
    assert by_drug(data, "prednisone")["outcome"] == "flare_on_taper"


@pytest.mark.parametrize("text, route_text, drug, route", [
    ("Clobetasol Propionate 0.5 MG/G Topical Ointment", None, "clobetasol", "topical"),
    ("Methotrexate 25 MG/ML Auto-Injector", None, "methotrexate", "sc"),
    ("methylPREDNISolone 40 MG/ML Injectable Suspension", "Intramuscular route", "methylprednisolone", "im"),
    ("Rituxan 10 MG/ML Injection", None, "rituximab", None),  # the drug's default route applies
    ("CellCept 500 MG Oral Tablet", None, "mycophenolate mofetil", "oral"),
])
def test_drug_and_route_from_text(text, route_text, drug, route):
    bundle = with_statement("completed", None, {"start": "2026-01-01", "end": "2026-02-01"}, text=text, route=route_text)
    data, _ = referral_data_from_bundle(bundle, "b")
    assert by_drug(data, drug).get("route") == route


def test_snomed_map_needs_the_name_for_an_unverified_code():
    bundle = mini()
    entry(bundle, "k1")["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "77090002",
                                               "display": "Something else entirely"}]}
    with pytest.raises(Exception, match="diagnoses"):
        referral_data_from_bundle(bundle, "b")
    entry(bundle, "k1")["code"]["coding"][0]["display"] = "Bullous pemphigoid"
    data, _ = referral_data_from_bundle(bundle, "b")
    assert data["diagnoses"][0]["code"] == "L12.0"


def test_condition_named_but_not_coded_maps_with_a_warning():
    bundle = mini()
    entry(bundle, "k1")["code"] = {"text": "Juvenile dermatomyositis"}
    data, warnings = referral_data_from_bundle(bundle, "b")
    assert data["diagnoses"][0]["code"] == "M33.00"
    assert any(named(bundle, "k1") in w and "by its name" in w for w in warnings)


def test_rituximab_order_and_allergy_contraindication():
    bundle = mini()
    order = entry(bundle, "m1")
    order["medicationCodeableConcept"] = {"text": "Truxima 10 MG/ML Injection"}
    order["dosageInstruction"] = [{"text": "1000 mg IV, 2 doses every 2 weeks"}]
    bundle["entry"].append({"resource": {
        "resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}, "type": "intolerance",
        "code": {"text": "Systemic corticosteroids"}, "recordedDate": "2025-05-01",
        "reaction": [{"manifestation": [{"text": "Steroid psychosis"}]}]}, "fullUrl": "urn:uuid:a1a1a1a1-0000-4000-8000-000000000000",
        "request": {"method": "POST", "url": "AllergyIntolerance"}})
    data, _ = referral_data_from_bundle(bundle, "b")
    assert data["request"] == {"therapy": "rituximab", "product": "Truxima", "request_type": "initial",
                               "dose_mg": 1000.0, "doses": 2, "interval_weeks": 2.0}
    assert data["contraindications"] == [{"drug_class": "systemic_corticosteroids",
                                          "reason": "intolerance: Steroid psychosis", "documented_date": "2025-05-01"}]


def test_adverse_event_naming_a_drug_is_a_contraindication():
    bundle = with_statement("stopped", "hepatotoxicity", {"start": "2025-01-01", "end": "2025-03-01"},
                            text="Methotrexate 2.5 MG Oral Tablet")
    bundle["entry"].append({"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444", "request": {"method": "POST", "url": "AdverseEvent"},
                            "resource": {"resourceType": "AdverseEvent", "actuality": "actual",
                                         "subject": {"reference": "Patient/p1"}, "date": "2025-03-01",
                                         "event": {"text": "Drug-induced hepatitis"},
                                         "suspectEntity": [{"instance": {"reference": "urn:uuid:33333333-3333-4333-8333-333333333333"}}]}})
    data, _ = referral_data_from_bundle(bundle, "b")
    assert by_drug(data, "methotrexate")["outcome"] == "intolerance"
    assert data["contraindications"] == [{"drug": "methotrexate", "reason": "adverse event: Drug-induced hepatitis",
                                          "documented_date": "2025-03-01"}]


def test_searchset_with_relative_and_contained_references():
    bundle = mini()
    bundle["type"] = "searchset"
    for e in bundle["entry"]:
        e.pop("request")
        r = e["resource"]
        e["fullUrl"] = f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}"
        e["search"] = {"mode": "match" if r["resourceType"] == "Patient" else "include"}
        for key in ("subject", "beneficiary"):
            if key in r:
                r[key] = {"reference": "https://ehr.example.org/fhir/Patient/p1"}
    order = entry(bundle, "m1")
    order.pop("medicationCodeableConcept")
    order["contained"] = [{"resourceType": "Medication", "id": "med", "code": {"text": "Privigen 20 G/200 ML"}}]
    order["medicationReference"] = {"reference": "#med"}
    bundle["entry"].append({"resource": {"resourceType": "OperationOutcome", "id": "oo",
                                         "issue": [{"severity": "information", "code": "informational"}]},
                            "search": {"mode": "outcome"}})
    data, _ = referral_data_from_bundle(bundle, "b")
    assert data["request"]["product"] == "Privigen"
    assert data["coverage"]["member_id"] == "M-1"


# ------------------------------------------------------------------ the import-fhir command


def test_import_writes_yaml_0600_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ref.yaml"
    run = CliRunner().invoke
    first = run(cli, ["import-fhir", str(SAMPLES / "pv-bundle.json"), "-o", str(out)])
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_referral(out)[0].referral_id == "pv-fhir-0002"
    again = run(cli, ["import-fhir", str(SAMPLES / "pv-bundle.json"), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = run(cli, ["import-fhir", str(SAMPLES / "pv-bundle.json"), "-o", str(out), "--force",
                       "--payer", "Medicare", "--member-id", "Z9"])
    assert forced.exit_code == 0
    referral = read_referral(out)[0]
    assert (referral.coverage.payer, referral.coverage.member_id) == ("medicare", "Z9")


def test_import_json_output_and_stdout(tmp_path):
    out = tmp_path / "ref.json"
    result = CliRunner().invoke(cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "-o", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text())["referral_id"] == "dm-fhir-0001"
    printed = CliRunner().invoke(cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "--json"])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout)["request"]["product"] == "Privigen"
    both = CliRunner().invoke(cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "--json", "-o", str(out)])
    assert both.exit_code == 2


def test_import_of_something_that_is_not_fhir_is_exit_2(tmp_path):
    path = tmp_path / "referral.json"
    path.write_text(json.dumps({"referral_id": "R-1"}))
    result = CliRunner().invoke(cli, ["import-fhir", str(path), "--json"])
    assert result.exit_code == 2 and str(path) in result.output and "not a FHIR resource" in result.output


def test_request_file_errors_are_exit_2(tmp_path):
    bad = tmp_path / "req.yaml"
    bad.write_text("requets: {therapy: ivig}\n")
    result = CliRunner().invoke(cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "--request", str(bad), "--json"])
    assert result.exit_code == 2 and "requets" in result.output
    bad.write_text("date: 2026-02-30\n")
    result = CliRunner().invoke(cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "--request", str(bad), "--json"])
    assert result.exit_code == 2 and "date" in result.output and "Traceback" not in result.output


def test_request_file_replaces_the_bundle_request(tmp_path):
    req = tmp_path / "req.yaml"
    req.write_text(yaml.safe_dump({"request": {"therapy": "ivig", "product": "Gamunex-C", "dose_g_per_kg": 1.0,
                                               "days_per_cycle": 2, "interval_weeks": 4, "cycles": 3},
                                   "clinical_course": "active", "date": "2026-11-25", "referral_id": "R-9"}))
    result = CliRunner().invoke(
        cli, ["import-fhir", str(SAMPLES / "dm-bundle.json"), "--request", str(req), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["request"]["product"], data["clinical_course"], data["date"], data["referral_id"]) == \
        ("Gamunex-C", "active", "2026-11-25", "R-9")
    assert data["prescriber"]["npi"] == "1234567893"  # still the requester of the bundle's order
    assert "not used as the request" in result.stderr


def test_fhir_library_is_imported_only_for_a_bundle_it_must_judge(tmp_path):
    # A YAML referral never loads it; a bundle `shapes` finds certainly valid does not need it
    # (its import and model building cost ~0.4 s); a doubtful bundle is handed to it.
    code = ("import sys; from click.testing import CliRunner; from priorauth.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['check', sys.argv[1]]); "
            "print(r.exit_code, any(m.startswith('fhir') for m in sys.modules))")
    doubtful = load_json(SAMPLES / "dm-bundle.json")
    doubtful["entry"][0]["resource"]["_birthDate"] = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    (tmp_path / "doubtful.json").write_text(json.dumps(doubtful), encoding="utf-8")
    for path, expected in ((SAMPLES / "dm-fhir-equivalent.yaml", ["0", "False"]),
                           (SAMPLES / "dm-bundle.json", ["0", "False"]),
                           (tmp_path / "doubtful.json", ["0", "True"])):
        run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
        assert run.stdout.split() == expected, (path, run.stderr)


def test_help_ends_with_an_example():
    result = CliRunner().invoke(cli, ["import-fhir", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "priorauth import-fhir" in result.output.split("Example:")[1]


# ------------------------------------------------------------------ the importer is handed what it needs (issue 12)


def _fhir_batch_input(tmp_path: Path, n: int) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    bundle = load_json(SAMPLES / "dm-bundle.json")
    for i in range(n):
        bundle["id"] = f"dm-fhir-{i:04d}"
        (inp / f"b{i}.json").write_text(json.dumps(bundle), encoding="utf-8")
    return inp


def _worklist(out: Path) -> list[dict]:
    import csv

    with open(out / "worklist.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_fhir_batch_honours_criteria(tmp_path):
    import shutil

    from priorauth.batch.run import run_batch

    inp = _fhir_batch_input(tmp_path, 2)
    other = tmp_path / "criteria"
    shutil.copytree(CRIT.root, other)
    payers = other / "fhir" / "payers.yaml"
    payers.write_text(payers.read_text(encoding="utf-8") + "  medicare: acme-health\n", encoding="utf-8")
    run_batch(inp, tmp_path / "bundled", jobs=1, formats=())
    run_batch(inp, tmp_path / "copy", jobs=1, formats=(), criteria_dir=other)
    assert {r["payer"] for r in _worklist(tmp_path / "bundled")} == {"medicare"}
    assert {r["payer"] for r in _worklist(tmp_path / "copy")} == {"acme-health"}
    # and through the command line's --criteria
    result = CliRunner().invoke(cli, ["batch", str(inp), "-o", str(tmp_path / "cli"), "--no-letters",
                                      "--jobs", "1", "--criteria", str(other)])
    assert result.exit_code == 0, result.output
    assert {r["payer"] for r in _worklist(tmp_path / "cli")} == {"acme-health"}


def test_api_and_check_read_a_bundle_with_the_criteria_given(tmp_path):
    import shutil

    import priorauth

    other = tmp_path / "criteria"
    shutil.copytree(CRIT.root, other)
    payers = other / "fhir" / "payers.yaml"
    payers.write_text(payers.read_text(encoding="utf-8") + "  medicare: acme-health\n", encoding="utf-8")
    bundle = SAMPLES / "dm-bundle.json"
    assert priorauth.load_referral(bundle).coverage.payer == "medicare"
    assert priorauth.load_referral(bundle, criteria=other).coverage.payer == "acme-health"
    assert priorauth.import_fhir(bundle, criteria=other).coverage.payer == "acme-health"
    assert priorauth.check(bundle.read_text(encoding="utf-8"), criteria=other).referral.coverage.payer == "acme-health"
    for criteria, payer in ((None, "medicare"), (other, "baseline")):  # acme-health has no variant of its own
        args = ["check", str(bundle), "--json"] + (["--criteria", str(criteria)] if criteria else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["policy"]["payer"] == payer


def test_fhir_batch_loads_criteria_and_maps_once(tmp_path, monkeypatch):
    from priorauth.batch.run import run_batch
    from priorauth.criteria import policy
    from priorauth.io.fhir import maps

    calls = {"criteria": 0, "map files": 0}
    real_criteria, real_map = policy.load_criteria, maps._load_map

    def count_criteria(*a, **kw):
        calls["criteria"] += 1
        return real_criteria(*a, **kw)

    def count_map(*a, **kw):
        calls["map files"] += 1
        return real_map(*a, **kw)

    monkeypatch.setattr(policy, "load_criteria", count_criteria)
    monkeypatch.setattr(maps, "_load_map", count_map)
    monkeypatch.setattr(maps, "_CACHE", {})
    summary = run_batch(_fhir_batch_input(tmp_path, 5), tmp_path / "out", jobs=1, formats=())
    assert summary.determinations["meets_criteria"] == 5
    assert calls == {"criteria": 1, "map files": len(maps.MAP_FILES)}


def test_maps_are_cached_per_folder_and_reloaded_when_a_file_changes(tmp_path):
    import shutil

    from priorauth.io.fhir import load_maps

    folder = tmp_path / "fhir"
    shutil.copytree(CRIT.root / "fhir", folder)
    first = load_maps(folder)
    assert load_maps(folder) is first
    assert load_maps(CRIT.root / "fhir") is not first  # another folder, its own maps
    payers = folder / "payers.yaml"
    payers.write_text(payers.read_text(encoding="utf-8") + "  acme: acme-health\n", encoding="utf-8")
    os.utime(payers, ns=(payers.stat().st_atime_ns, payers.stat().st_mtime_ns + 10**9))
    again = load_maps(folder)
    assert again is not first and again.payers.aliases["acme"] == "acme-health"


def test_a_fhir_bundle_without_criteria_is_a_clear_error():
    from priorauth.core.errors import InputError

    with pytest.raises(InputError, match="criteria"):
        read_referral(SAMPLES / "dm-bundle.json")
    assert read_referral(SAMPLES / "dm-fhir-equivalent.yaml")[0].referral_id == "dm-fhir-0001"  # YAML needs none


def test_io_imports_no_criteria_module():
    import ast

    io_dir = ROOT / "priorauth" / "io"
    files = sorted(io_dir.rglob("*.py"))
    assert len(files) >= 7
    for path in files:
        package = ["priorauth", *path.relative_to(ROOT / "priorauth").parent.parts]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            bad = [n for n in names if n == "priorauth.criteria" or n.startswith("priorauth.criteria.")]
            assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad[0]}"


def test_importing_and_running_the_fhir_reader_loads_no_criteria_module():
    code = ("import sys, json; from priorauth.io.fhir import referral_data_from_bundle, load_maps; "
            "from priorauth.io import readers; "
            "print(sorted(m for m in sys.modules if m.startswith('priorauth.criteria')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.stdout.split() == ["[]"], run.stderr


# ------------------------------------------------------------------ shapes: the fast validity check


def test_shapes_table_is_the_installed_fhir_resources():
    from priorauth.io.fhir import shapes

    assert shapes.build_table() == shapes.table(), "run: python -m priorauth.io.fhir.shapes"


TRICKY = [None, "", " ", " x", "x ", "a  b", "x\ny", 0, -1, 1, 2 ** 31, 1.5, 1e-7, True, False, "1", "true",
          [], [None], [1], {}, {"x": 1}, {"extension": []}, "2019", "2019-02", "2019-02-30", "2019-13", "2019-2-1",
          "2026-01-01T10:00:00", "2026-01-01T10:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T10:00:00+15:00",
          "2026-01-01T10:00Z", "10:00:00", "10:00", "urn:uuid:x y", "é", "A" * 65, "abc-1.2", "final",
          "http://loinc.org", "Patient/1", "#x", "0001-01-01"]


def _positions(node, out):
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _positions(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _positions(value, out)
    return out


def _mutate(resource: dict, rng) -> dict:
    r = copy.deepcopy(resource)
    container, key = rng.choice(_positions(r, []) or [(r, "id")])
    what = rng.random()
    if what < 0.6:
        container[key] = copy.deepcopy(rng.choice(TRICKY))
    elif what < 0.7 and isinstance(container, dict):
        del container[key]
    elif what < 0.8 and isinstance(container, dict):
        container[rng.choice(["unknownField", "_" + str(key), "valueString", "effectivePeriod", "fhir_comments"])] = \
            copy.deepcopy(rng.choice(TRICKY[1:]))
    elif isinstance(container[key], list) and container[key]:
        container[key] = container[key][0]
    else:
        container[key] = [container[key]]
    return r


def test_shapes_never_accept_what_fhir_resources_rejects():
    import random

    from pydantic import ValidationError
    from fhir.resources.R4B import get_fhir_model_class

    from priorauth.io.fhir import shapes

    rng = random.Random(12)
    sure = checked = 0
    for path in (SAMPLES / "dm-bundle.json", SAMPLES / "pv-bundle.json", ADULT, CHILD):
        entries = [e["resource"] for e in load_json(path)["entry"]]
        for resource in entries + [_mutate(rng.choice(entries), rng) for _ in range(600)]:
            if not shapes.resource_conforms(resource):
                continue
            sure += 1
            try:
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                pytest.fail(f"shapes accepted a resource fhir.resources rejects: {exc}\n{json.dumps(resource)[:2000]}")
            checked += 1
    assert sure > 300  # the check is sure of many (not an always-false check)
