"""Roles, CSRF, sign-in rate limit, audit log, headers, size limit, no patient data in URLs."""

from __future__ import annotations

import pytest

from .conftest import DATA, PASSWORD, Env, csrf_of


@pytest.mark.parametrize("method,path,role,code", [
    ("GET", "/api/v1/cases", None, 401),
    ("GET", "/api/v1/worklist.csv", None, 401),
    ("POST", "/api/v1/cases", None, 401),
    ("GET", "/api/v1/cases", "physician", 200),
    ("POST", "/api/v1/cases", "physician", 403),
    ("GET", "/api/v1/cases", "admin", 403),
    ("GET", "/api/v1/audit", "billing", 403),
    ("GET", "/api/v1/audit", "physician", 403),
    ("GET", "/api/v1/audit", "admin", 200),
    ("GET", "/api/v1/worklist.csv", "physician", 200),
])
def test_role_matrix(env: Env, method: str, path: str, role: str | None, code: int) -> None:
    headers = env.h(role) if role else {}
    body = (DATA / "dm-steroid-intolerance.yaml").read_bytes() if method == "POST" else None
    r = env.client.request(method, path, content=body, headers={**headers, "content-type": "application/yaml"})
    assert r.status_code == code


def test_events_need_billing(env: Env) -> None:
    cid = env.new_case()["case_id"]
    for role in ("physician", "admin"):
        r = env.client.post(f"/api/v1/cases/{cid}/events", json={"type": "submitted"}, headers=env.h(role))
        assert r.status_code == 403
    assert env.client.get(f"/api/v1/cases/{cid}", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_pages_redirect_and_forbid(env: Env) -> None:
    r = env.client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    physician = env.browser("physician")
    assert physician.get("/upload").status_code == 403
    assert physician.get("/admin").status_code == 403
    assert physician.get("/check").status_code == 200
    assert env.browser("admin").get("/").status_code == 403


def test_csrf_rejected(env: Env) -> None:
    c = env.browser("billing")
    cid = env.new_case()["case_id"]
    for token in (None, "forged"):
        data = {"type": "submitted", "date": "2026-11-21"} | ({"csrf": token} if token else {})
        assert c.post(f"/cases/{cid}/events", data=data).status_code == 403
    assert env.store.get(cid).status == "ready"
    r = c.post(f"/cases/{cid}/events", data={"type": "submitted", "date": "2026-11-21", "csrf": c.csrf},
               follow_redirects=False)
    assert r.status_code == 303 and env.store.get(cid).status == "submitted"
    # the API does not take the session cookie for changes (a page could post there cross-site)
    assert c.post(f"/api/v1/cases/{cid}/events", json={"type": "closed"}).status_code == 401


def test_signin_rate_limit_and_cookie(env: Env) -> None:
    from fastapi.testclient import TestClient

    from priorauth.service.app import create_app

    c = TestClient(env.app)
    csrf = csrf_of(c.get("/signin").text)
    for _ in range(5):
        r = c.post("/signin", data={"csrf": csrf, "username": "physician", "password": "wrong"})
        assert r.status_code == 401
    r = c.post("/signin", data={"csrf": csrf, "username": "physician", "password": PASSWORD})
    assert r.status_code == 429  # even the right password, until the window passes
    other = TestClient(env.app)
    csrf = csrf_of(other.get("/signin").text)
    r = other.post("/signin", data={"csrf": csrf, "username": "billing", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=" in cookie
    # the limit is in the database: a second app on the same store (another worker or
    # process) refuses the same pair too, and the table holds neither the name nor the address
    second = create_app(env.data)
    try:
        c2 = TestClient(second)
        csrf2 = csrf_of(c2.get("/signin").text)
        r = c2.post("/signin", data={"csrf": csrf2, "username": "physician", "password": PASSWORD})
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text
        with env.store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT key FROM signin_failures").scalars().all()
        assert len(stored) >= 5 and not any("physician" in k or "testclient" in k for k in stored)
    finally:
        second.state.store.close()
    env.app.state.rate_limit.clear(env.app.state.rate_limit.key("physician", "testclient"))
    r = c.post("/signin", data={"csrf": csrf_of(c.get("/signin").text), "username": "physician",
                                "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_signin_limit_window(env: Env) -> None:
    """Failures older than the window no longer count, and a success clears the pair's count."""
    import datetime as dt

    from priorauth.service.auth import RateLimit

    limit = RateLimit(env.store, limit=2, window=60)
    key = limit.key("someone", "10.0.0.9")
    limit.fail(key)
    limit.fail(key)
    assert limit.blocked(key) and not limit.blocked(limit.key("someone", "10.0.0.10"))
    with env.store.engine.begin() as conn:  # age them past the window
        conn.exec_driver_sql("UPDATE signin_failures SET at = ? WHERE key = ?",
                             (dt.datetime(2000, 1, 1).isoformat(" "), key))
    assert not limit.blocked(key)
    limit.fail(key)
    limit.fail(key)
    limit.clear(key)
    assert not limit.blocked(key)


def test_audit_records_reads_and_changes(env: Env) -> None:
    cid = env.new_case()["case_id"]
    env.client.get(f"/api/v1/cases/{cid}", headers=env.h("physician"))
    rows = env.client.get("/api/v1/audit", headers=env.h("admin")).json()["audit"]
    mine = [(a["user"], a["action"]) for a in rows if a["case_id"] == cid]
    assert ("physician", "case.read") in mine and ("billing", "case.create") in mine
    assert all(set(a) == {"at", "user", "action", "case_id"} for a in rows)
    assert "Whitfield" not in str(rows)
    page = env.browser("admin").get("/admin")
    assert page.status_code == 200 and cid in page.text


def test_headers(env: Env) -> None:
    cid = env.new_case()["case_id"]
    for r in (env.client.get(f"/api/v1/cases/{cid}", headers=env.h("billing")),
              env.browser("billing").get(f"/cases/{cid}"), env.client.get("/signin")):
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
    page = env.browser("billing").get(f"/cases/{cid}").text
    assert "<script>" not in page and " on" + "click=" not in page and "style=" not in page


def test_body_limit(env: Env) -> None:
    r = env.client.post("/api/v1/cases", content=b"x" * (2 * 1024 * 1024 + 1), headers=env.h("billing"))
    assert r.status_code == 413


def test_urls_carry_case_ids_only(env: Env) -> None:
    c = env.browser("billing")
    page = c.get("/").text
    import re

    for href in re.findall(r'href="([^"]+)"', page):
        assert "S-DM" not in href and "Whitfield" not in href and "Eleanor" not in href
