"""The JSON API of spec section 6, through the app: every route, status and error code."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from .conftest import DATA, Env


def test_health_needs_no_credentials(env: Env) -> None:
    r = env.client.get("/api/v1/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_create_yaml_json_fhir(env: Env) -> None:
    created = env.new_case()
    assert created["status"] == "ready" and created["referral_id"] == "S-DM-001"
    assert created["determination"]["determination"] == "meets_criteria"
    assert "S-DM-001" not in created["case_id"]
    as_json = yaml.safe_load((DATA / "pm-undated-steroid-trial.yaml").read_text())
    r = env.client.post("/api/v1/cases", json=json.loads(json.dumps(as_json, default=str)), headers=env.h("billing"))
    assert r.status_code == 201 and r.json()["status"] == "missing_documentation"
    r = env.client.post("/api/v1/cases", content=(DATA / "dm-bundle.json").read_bytes(),
                        headers=env.h("billing", **{"content-type": "application/fhir+json"}))
    assert r.status_code == 201, r.text
    r = env.client.post("/api/v1/cases", content=(DATA / "ibm-not-covered.yaml").read_bytes(),
                        headers=env.h("billing", **{"content-type": "application/yaml"}))
    assert r.json()["status"] == "not_eligible"


def test_422_names_the_field_never_the_value(env: Env) -> None:
    data = yaml.safe_load((DATA / "dm-steroid-intolerance.yaml").read_text())
    data = json.loads(json.dumps(data, default=str))
    data["patient"]["birth_date"] = "ZQX-SECRET-4471"
    r = env.client.post("/api/v1/cases", json=data, headers=env.h("billing"))
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "patient", "birth_date"]
    assert "ZQX-SECRET-4471" not in r.text and "Whitfield" not in r.text
    data["patient"]["birth_date"] = "1962-08-19"
    data["diagnoses"][0]["code"] = "ZQXSECRET"
    r = env.client.post("/api/v1/cases", json=data, headers=env.h("billing"))
    assert r.status_code == 422 and "ZQXSECRET" not in r.text
    r = env.client.post("/api/v1/cases", content=b"{not json ZQXSECRET", headers=env.h("billing"))
    assert r.status_code == 422 and "ZQXSECRET" not in r.text


def test_case_read_events_and_409(env: Env) -> None:
    cid = env.new_case()["case_id"]
    r = env.client.get(f"/api/v1/cases/{cid}", headers=env.h("physician"))
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"referral_id", "status", "determination", "events", "authorization", "reauthorization_due"}
    post = lambda ev: env.client.post(f"/api/v1/cases/{cid}/events", json=ev, headers=env.h("billing"))  # noqa: E731
    assert post({"type": "approved", "date": "2026-11-21", "authorization_number": "X", "approved_units": 1,
                 "start_date": "2026-12-01", "end_date": "2027-01-01"}).status_code == 409  # ready: not yet
    r = post({"type": "submitted", "date": "2026-11-21"})
    assert r.status_code == 201 and r.json()["status"] == "submitted"
    assert post({"type": "pended", "date": "2026-11-25", "requested": "MMT-8 notes"}).json()["status"] == "pended"
    assert post({"type": "submitted", "date": "2026-11-28"}).status_code == 201
    assert post({"type": "denied", "date": "2026-12-01"}).status_code == 422  # reason required
    r = post({"type": "denied", "date": "2026-12-01", "reason": "steroid trial not documented"})
    assert r.json()["status"] == "denied"
    r = env.client.get(f"/api/v1/cases/{cid}/letter?format=md&kind=appeal", headers=env.h("billing"))
    assert r.status_code == 200 and b"steroid trial not documented" in r.content
    assert post({"type": "appealed", "date": "2026-12-02"}).json()["status"] == "appealed"
    r = post({"type": "approved", "date": "2026-12-10", "authorization_number": "PA-77", "approved_units": 1476,
              "start_date": "2026-12-10", "end_date": "2027-06-09"})
    case = r.json()
    assert case["authorization"] == {"number": "PA-77", "approved_units": 1476, "start_date": "2026-12-10",
                                     "end_date": "2027-06-09"}
    assert case["reauthorization_due"] == "2027-05-10"
    r = post({"type": "infusion_given", "date": "2026-12-11", "units": 246})
    assert r.json()["units_given"] == 246
    stale = post({"type": "closed", "date": "2026-12-12", "version": 1})
    assert stale.status_code == 409 and "reload" in stale.json()["detail"]
    assert post({"type": "nonsense"}).status_code == 422
    assert post({"type": "closed", "date": "2026-12-12", "version": case["version"] + 1}).status_code == 201
    assert post({"type": "closed", "date": "2026-12-13"}).status_code == 409  # closed is final
    assert [e["type"] for e in env.client.get(f"/api/v1/cases/{cid}", headers=env.h("billing")).json()["events"]] \
        == ["submitted", "pended", "submitted", "denied", "appealed", "approved", "infusion_given", "closed"]


def test_list_filters(env: Env) -> None:
    env.new_case()
    r = env.client.get("/api/v1/cases?status=ready", headers=env.h("physician"))
    assert r.status_code == 200 and r.json()["cases"] and all(c["status"] == "ready" for c in r.json()["cases"])
    r = env.client.get("/api/v1/cases?payer=bluepeak-health&due_before=2099-01-01", headers=env.h("billing"))
    assert all(c["payer"] == "bluepeak-health" for c in r.json()["cases"])
    assert env.client.get("/api/v1/cases?status=bogus", headers=env.h("billing")).status_code == 422
    assert env.client.get("/api/v1/cases?due_before=soon", headers=env.h("billing")).status_code == 422


def test_list_pages(env: Env) -> None:
    """GET /cases pages by a cursor: every case once, oldest first, new cases at the end; the
    default page is 50; bad limits and cursors answer 422 naming the parameter, not its value."""
    from priorauth import check
    from priorauth.service.referrals import referral_data

    det = check(DATA / "dm-steroid-intolerance.yaml")
    env.store.add_cases([(referral_data(det), det.to_dict())] * 60, "seed")
    everyone = env.client.get("/api/v1/cases?limit=200", headers=env.h("billing")).json()
    assert everyone["next"] is None and len(everyone["cases"]) >= 60
    first = env.client.get("/api/v1/cases", headers=env.h("billing")).json()
    assert len(first["cases"]) == 50 and first["next"].startswith("/api/v1/cases?limit=50&cursor=")
    seen, url, added = [], "/api/v1/cases?limit=7", None
    while url:
        r = env.client.get(url, headers=env.h("physician"))
        assert r.status_code == 200 and len(r.json()["cases"]) <= 7
        seen += [c["case_id"] for c in r.json()["cases"]]
        if added is None:  # a case added during the walk comes on a later page, not twice
            added = env.new_case()["case_id"]
        url = r.json()["next"]
    assert seen == [c["case_id"] for c in everyone["cases"]] + [added]
    ready = env.client.get("/api/v1/cases?status=ready&limit=3", headers=env.h("billing")).json()
    assert "status=ready" in ready["next"] and all(c["status"] == "ready" for c in ready["cases"])
    for query, loc in (("limit=0", "limit"), ("limit=201", "limit"), ("limit=many", "limit"),
                       ("cursor=ZQXSECRET", "cursor"), ("cursor=" + "A" * 40, "cursor")):
        r = env.client.get(f"/api/v1/cases?{query}", headers=env.h("billing"))
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", loc], (query, r.text)
        assert "ZQXSECRET" not in r.text and "many" not in r.text.replace("too many", "")


def test_correct_referral_keeps_history(env: Env) -> None:
    cid = env.new_case("pm-undated-steroid-trial.yaml")["case_id"]
    data = yaml.safe_load((DATA / "pm-undated-steroid-trial.yaml").read_text())
    data["patient"]["weight_kg"] = 72
    for t in data["treatments"]:
        t.setdefault("start_date", "2026-01-05")
    r = env.client.put(f"/api/v1/cases/{cid}/referral", content=yaml.safe_dump(data),
                       headers=env.h("billing", **{"content-type": "application/yaml"}))
    assert r.status_code == 200, r.text
    assert r.json()["referral_version"] == 2 and r.json()["events"][-1]["type"] == "corrected"
    assert env.client.put(f"/api/v1/cases/{cid}/referral", content=b"{}", headers=env.h("billing")).status_code == 422
    assert env.client.put("/api/v1/cases/nope/referral", content=b"{}", headers=env.h("billing")).status_code == 404


def test_letters_packet_404(env: Env) -> None:
    cid = env.new_case()["case_id"]
    for fmt, magic in (("docx", b"PK"), ("html", b"<"), ("md", b"")):
        r = env.client.get(f"/api/v1/cases/{cid}/letter?format={fmt}", headers=env.h("physician"))
        assert r.status_code == 200 and r.content.startswith(magic), fmt
        assert "S-DM-001" not in r.headers["content-disposition"]
    r = env.client.get(f"/api/v1/cases/{cid}/letter?format=pdf", headers=env.h("physician"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert env.client.get(f"/api/v1/cases/{cid}/letter?format=exe", headers=env.h("billing")).status_code == 422
    assert env.client.get(f"/api/v1/cases/{cid}/letter?kind=appeal", headers=env.h("billing")).status_code == 422
    r = env.client.get(f"/api/v1/cases/{cid}/packet", headers=env.h("billing"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF") and cid in r.headers["content-disposition"]
    from pypdf import PdfReader

    pages = PdfReader(__import__("io").BytesIO(r.content)).pages
    assert len(pages) >= 3 and f"of {len(pages)}" in pages[-1].extract_text()
    assert env.client.get(f"/api/v1/cases/{cid}/packet?kind=bogus", headers=env.h("billing")).status_code == 422
    assert env.client.get("/api/v1/cases/missing", headers=env.h("billing")).status_code == 404


def test_packet_and_404_checked_first(env: Env) -> None:
    assert env.client.get("/api/v1/cases/missing/packet", headers=env.h("billing")).status_code == 404


def test_worklist_csv_is_formula_safe(env: Env) -> None:
    data = yaml.safe_load((DATA / "dm-steroid-intolerance.yaml").read_text())
    data["patient"]["family_name"] = "=HYPERLINK(1)"
    r = env.client.post("/api/v1/cases", content=yaml.safe_dump(data),
                        headers=env.h("billing", **{"content-type": "application/yaml"}))
    assert r.status_code == 201
    r = env.client.get("/api/v1/worklist.csv", headers=env.h("billing"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows and {"referral", "patient", "status", "what is missing", "case"} <= set(rows[0])
    patients = [row["patient"] for row in rows]
    assert "'=HYPERLINK(1), Eleanor" in patients and not any(p.startswith("=") for p in patients)
    assert all(row["status"] not in ("closed", "expired") for row in rows)


def test_restart_keeps_cases(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from priorauth.service.app import create_app

    from .conftest import add_user

    app = create_app(tmp_path / "d")
    token = add_user(app.state.store, "b", "billing")
    h = {"Authorization": f"Bearer {token}", "content-type": "application/yaml"}
    cid = TestClient(app).post("/api/v1/cases", content=(DATA / "dm-steroid-intolerance.yaml").read_bytes(),
                               headers=h).json()["case_id"]
    app.state.store.close()
    again = create_app(tmp_path / "d")
    r = TestClient(again).get(f"/api/v1/cases/{cid}", headers=h)
    assert r.status_code == 200 and r.json()["referral_id"] == "S-DM-001"
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "d" / "cases.sqlite3").stat().st_mode & 0o777) == "0o600"
    again.state.store.close()
