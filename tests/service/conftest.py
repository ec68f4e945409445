"""Fixtures of the case service tests: a store per backend, one app per module, users and tokens."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from priorauth.service.app import create_app  # noqa: E402
from priorauth.service.auth import hash_password  # noqa: E402
from priorauth.service.store import Store  # noqa: E402

DATA = Path(__file__).with_name("data")
PASSWORD = "correct horse battery"
PG_ENV = "PRIORAUTH_TEST_DATABASE_URL"


def pg_url() -> str:
    """The URL of a fresh, empty schema of the test PostgreSQL; unreachable means the test fails."""
    url = os.environ.get(PG_ENV)
    if not url and os.environ.get("CI"):
        pytest.fail(f"{PG_ENV} is not set in CI: .ci/run must start PostgreSQL (.ci/postgres.sh)")
    if not url:
        pytest.skip(f"{PG_ENV} is not set: the PostgreSQL store tests did not run (source .ci/postgres.sh)")
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    base = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        engine = sa.create_engine(base)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {type(exc).__name__}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def _pg_store() -> Store:
    return Store.open(database=pg_url())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    st = Store.open(tmp_path / "data") if request.param == "sqlite" else _pg_store()
    yield st
    st.close()


def add_user(st: Store, name: str, role: str) -> str:
    """Add a user; their API token."""
    st.add_user(name, role, hash_password(PASSWORD))
    return st.new_token(name)


class Env:
    def __init__(self, tmp: Path):
        self.data = tmp / "data"
        self.app = create_app(self.data)
        self.store: Store = self.app.state.store
        self.tokens = {role: add_user(self.store, role, role) for role in ("billing", "physician", "admin")}
        self.client = TestClient(self.app)

    def h(self, role: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}

    def new_case(self, name: str = "dm-steroid-intolerance.yaml") -> dict:
        r = self.client.post("/api/v1/cases", content=(DATA / name).read_bytes(),
                             headers=self.h("billing", **{"content-type": "application/yaml"}))
        assert r.status_code == 201, r.text
        return r.json()

    def browser(self, role: str) -> TestClient:
        """A client signed in through the form, with its CSRF token at `.csrf`."""
        c = TestClient(self.app)
        c.csrf = csrf_of(c.get("/signin").text)
        r = c.post("/signin", data={"csrf": c.csrf, "username": role, "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 303, r.text
        c.csrf = csrf_of(c.get("/check" if role != "admin" else "/admin").text)
        return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    e = Env(tmp_path_factory.mktemp("svc"))
    yield e
    e.store.close()
