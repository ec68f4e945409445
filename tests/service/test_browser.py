"""In a real headless Chromium (Debian's, driven by Playwright): sign in, upload, worklist sort
and filter, the case page, record an approval, download a letter. Screenshots go to /tmp."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and os.environ.get("CI"):
    raise RuntimeError(f"{CHROMIUM} is absent in CI: .ci/run must install Debian's chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium): browser tests did not run",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

import uvicorn  # noqa: E402

from priorauth.service.app import create_app  # noqa: E402

from .conftest import DATA, PASSWORD, add_user  # noqa: E402

SHOTS = Path(os.environ.get("PRIORAUTH_SCREENSHOTS", "/tmp/priorauth-screens"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("browser") / "data")
    add_user(app.state.store, "billing", "billing")
    add_user(app.state.store, "physician", "physician")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)
    app.state.store.close()


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.errors = []
        pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
        yield pg
        browser.close()


def test_billing_flow(server, page) -> None:
    page.goto(server + "/")
    assert page.url.endswith("/signin")
    page.fill("#username", "billing")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(server + "/")
    page.screenshot(path=str(SHOTS / "1-worklist-empty.png"), full_page=True)

    page.click("text=Upload")
    page.set_input_files("#files", [str(DATA / n) for n in
                                    ("dm-steroid-intolerance.yaml", "pm-undated-steroid-trial.yaml",
                                     "ibm-not-covered.yaml", "dm-bundle.json")])
    page.click("button:has-text('Upload')")
    assert page.locator(".results li a").count() == 4
    page.screenshot(path=str(SHOTS / "2-upload.png"), full_page=True)

    page.click("nav >> text=Worklist")
    assert page.locator("table.cases tbody tr").count() == 4
    page.select_option("select[name=sort]", "patient")
    page.select_option("select[name=order]", "asc")
    page.wait_for_url("**order=asc**")
    names = page.locator("table.cases tbody tr td:first-child").all_inner_texts()
    assert names == sorted(names)
    page.select_option("select[name=status]", "ready")
    page.wait_for_url("**status=ready**")  # htmx swapped the table and pushed the URL
    statuses = page.locator("table.cases .status").all_inner_texts()
    assert statuses and set(statuses) == {"ready"}
    page.screenshot(path=str(SHOTS / "3-worklist-filtered.png"), full_page=True)

    page.locator("table.cases tbody tr td a").first.click()
    page.wait_for_selector("h2#det")
    assert "meets criteria" in page.inner_text("h2#det")
    page.screenshot(path=str(SHOTS / "4-case.png"), full_page=True)
    page.click("#form-submitted button")
    page.wait_for_selector("#form-approved")
    form = page.locator("#form-approved")
    form.locator("input[name=authorization_number]").fill("PA-2026-9")
    form.locator("input[name=approved_units]").fill("1476")
    form.locator("input[name=start_date]").fill("2026-12-01")
    form.locator("input[name=end_date]").fill("2027-05-31")
    form.locator("button").click()
    page.wait_for_selector("text=PA-2026-9")
    assert "approved" in page.inner_text(".summary")
    page.screenshot(path=str(SHOTS / "5-approved.png"), full_page=True)

    with page.expect_download() as info:
        page.click("a:has-text('docx')")
    path = info.value.path()
    assert Path(path).read_bytes()[:2] == b"PK"
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def test_physician_checks_a_patient(server, page) -> None:
    page.click("button:has-text('Sign out')")
    page.wait_for_url("**/signin")
    page.fill("#username", "physician")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url("**/check")
    assert page.locator("nav >> text=Upload").count() == 0
    page.fill("#referral", (DATA / "pm-undated-steroid-trial.yaml").read_text())
    page.click("button:has-text('Check')")
    page.wait_for_selector("h2#det")
    assert "missing documentation" in page.inner_text("h2#det")
    assert "start date of the prednisone trial" in page.inner_text("ul.missing")
    page.screenshot(path=str(SHOTS / "6-check.png"), full_page=True)
