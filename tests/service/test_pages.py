"""Pages through the app: upload, worklist, case page, check a patient, correct, renewals."""

from __future__ import annotations

import datetime as dt
import re

from .conftest import DATA, Env


def _files(*names: str, bad: bytes | None = None):
    files = [("files", (n, (DATA / n).read_bytes(), "application/octet-stream")) for n in names]
    if bad is not None:
        files.append(("files", ("broken.yaml", bad, "application/yaml")))
    return files


def test_upload_many_with_a_per_file_error(env: Env) -> None:
    c = env.browser("billing")
    before = env.store.list_cases()[1]
    r = c.post("/upload", data={"csrf": c.csrf},
               files=_files("dm-steroid-intolerance.yaml", "dm-bundle.json", bad=b"referral_id: ZQXSECRET\n"))
    assert r.status_code == 201
    assert r.text.count("/cases/") >= 2 and "not added" in r.text and "ZQXSECRET" not in r.text
    assert env.store.list_cases()[1] == before + 2


def test_worklist_filter_sort_counts(env: Env) -> None:
    env.new_case("pm-undated-steroid-trial.yaml")
    c = env.browser("billing")
    page = c.get("/?status=missing_documentation&sort=patient&order=asc").text
    assert "start date of the prednisone trial" in page  # what is missing, in words
    assert "missing documentation: <strong>" in page
    assert 'class="status s-ready"' not in page
    page = c.get("/?payer=nobody").text
    assert "No cases match." in page


def test_case_page_shows_the_determination_and_records_approval(env: Env) -> None:
    cid = env.new_case()["case_id"]
    c = env.browser("billing")
    page = c.get(f"/cases/{cid}").text
    for words in ("Determination", "Criteria", "Dosing and billing", "J1568", "Safety", "History", "Record submitted"):
        assert words in page, words
    assert c.post(f"/cases/{cid}/events", data={"csrf": c.csrf, "type": "submitted", "version": "1"},
                  follow_redirects=False).status_code == 303
    r = c.post(f"/cases/{cid}/events", data={"csrf": c.csrf, "type": "approved", "version": "2",
                                              "date": "2026-12-01", "authorization_number": "PA-1",
                                              "approved_units": "1476", "start_date": "2026-12-01",
                                              "end_date": "2027-05-31"})
    assert r.status_code == 200 and "PA-1" in r.text and "Units given" in r.text
    stale = c.post(f"/cases/{cid}/events", data={"csrf": c.csrf, "type": "closed", "version": "2"})
    assert stale.status_code == 409 and "reload" in stale.text


def test_case_page_says_dosing_and_billing_in_the_words_of_check(env: Env) -> None:
    from html import unescape

    from priorauth import check
    from priorauth.engine.summary import billing_lines, dosing_line

    cid = env.new_case()["case_id"]
    page = unescape(env.browser("billing").get(f"/cases/{cid}").text)
    det = check(DATA / "dm-steroid-intolerance.yaml").to_dict()
    section = page[page.index("Dosing and billing"):page.index("<h3>Safety")]
    assert dosing_line(det["dosing"]) in section and "g/kg x" in section
    assert det["billing"] and all(line in section for line in billing_lines(det["billing"], det["authorization"]))
    assert "{'" not in section and "None" not in section and "_" not in re.sub(r"<[^>]+>", "", section)


def test_case_page_names_the_policy_by_its_title_and_document(env: Env) -> None:
    from html import unescape

    from priorauth import check
    from priorauth.engine.summary import policy_lines

    cid = env.new_case()["case_id"]
    page = unescape(env.browser("billing").get(f"/cases/{cid}").text)
    ref = check(DATA / "dm-steroid-intolerance.yaml").to_dict()["policy"]
    section = page[page.index("Determination:"):page.index("Dosing and billing")]
    lines = policy_lines(ref)
    assert lines[0].startswith(f"Policy: {ref['title']} (") and ref["document"]["citation"] in lines[1]
    assert all(f"<li>{line}</li>" in section for line in lines)
    assert "Pathways met:" in section


def test_check_stores_nothing_unless_saved(env: Env) -> None:
    text = (DATA / "dm-steroid-intolerance.yaml").read_text()
    physician = env.browser("physician")
    before = env.store.list_cases()[1]
    r = physician.post("/check", data={"csrf": physician.csrf, "referral": text})
    assert r.status_code == 200 and "meets criteria" in r.text and "Save as case" not in r.text
    assert physician.post("/check", data={"csrf": physician.csrf, "referral": text, "save": "1"}).status_code == 200
    assert env.store.list_cases()[1] == before
    billing = env.browser("billing")
    r = billing.post("/check", data={"csrf": billing.csrf, "referral": text, "save": "1"}, follow_redirects=False)
    assert r.status_code == 303 and env.store.list_cases()[1] == before + 1
    r = physician.post("/check", data={"csrf": physician.csrf, "referral": text.replace("sex: female", "sex: ZQXS")})
    # the form gives the pasted text back to edit; the error itself names the field only
    errors = r.text.split('<div class="error"', 1)[1].split("</div>", 1)[0]
    assert r.status_code == 422 and "patient.sex" in errors and "ZQXS" not in errors


def test_correct_and_renewal_continuation(env: Env) -> None:
    cid = env.new_case("pm-undated-steroid-trial.yaml")["case_id"]
    c = env.browser("billing")
    form = c.get(f"/cases/{cid}/correct").text
    assert "referral_id: S-PM-004" in form
    text = (DATA / "pm-undated-steroid-trial.yaml").read_text().replace("weight_kg", "height_cm", 0)
    r = c.post(f"/cases/{cid}/correct", data={"csrf": c.csrf, "version": "1", "referral": text + "\nbogus: 1\n"})
    assert r.status_code == 422 and "bogus" in r.text
    r = c.post(f"/cases/{cid}/correct", data={"csrf": c.csrf, "version": "1", "referral": text})
    assert r.status_code == 200 and env.store.get(cid).referral_version == 2
    # an approval ending within 30 days shows on the renewals page; one click starts a continuation
    rid = env.new_case()["case_id"]
    today = dt.date.today()
    env.store.add_event(rid, "submitted", today, {}, "t")
    env.store.add_event(rid, "approved", today, {"authorization_number": "R-9", "approved_units": 10,
                                                 "start_date": (today - dt.timedelta(days=150)).isoformat(),
                                                 "end_date": (today + dt.timedelta(days=20)).isoformat()}, "t")
    page = c.get("/renewals").text
    assert "R-9" in page and "Start continuation" in page
    r = c.post(f"/cases/{rid}/continuation", data={"csrf": c.csrf}, follow_redirects=False)
    assert r.status_code == 303
    new = env.store.get(r.headers["location"].rsplit("/", 1)[1])
    assert new.request_type == "continuation" and new.id != rid


def test_worklist_pages_and_htmx_fragment(env: Env) -> None:
    """50 rows a page with previous/next links that keep the filter; htmx gets the table only."""
    from priorauth import check
    from priorauth.service.referrals import referral_data

    det = check(DATA / "pm-undated-steroid-trial.yaml")
    env.store.add_cases([(referral_data(det), det.to_dict())] * 55, "seed")
    c = env.browser("billing")
    total = env.store.worklist(status="missing_documentation")["total"]
    first = c.get("/?status=missing_documentation&sort=patient&order=asc")
    assert first.status_code == 200 and f"{total} cases, page 1 of {-(-total // 50)}" in first.text
    assert first.text.count('<tr><td><a href="/cases/') == 50
    assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
    nxt = re.search(r'href="([^"]+)" hx-get="[^"]+" rel="next"', first.text).group(1).replace("&amp;", "&")
    assert "status=missing_documentation" in nxt and "page=2" in nxt and "sort=patient" in nxt
    part = c.get(nxt, headers={"HX-Request": "true", "HX-Target": "worklist"})
    assert part.status_code == 200 and part.text.startswith('<div id="worklist">')
    assert "<header" not in part.text and 'rel="prev"' in part.text and "Sign out" not in part.text
    rows = part.text.count('<tr><td><a href="/cases/')
    assert rows == min(50, total - 50)
    # a bad sort, status or page is ignored, not an error
    assert c.get("/?sort=bogus&status=nope&page=-3").status_code == 200
    assert c.get("/?page=abc").status_code == 422
