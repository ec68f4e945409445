"""`users add` and `users token` through click's runner; a token they print works on the API."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from priorauth.service.app import create_app
from priorauth.service.cli import serve, users


def test_users_add_and_token(tmp_path) -> None:
    data = str(tmp_path / "d")
    r = CliRunner().invoke(users, ["add", "ann", "--role", "billing", "--data", data], input="a long password 1\n")
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(users, ["add", "ann", "--role", "billing", "--data", data], input="a long password 1\n")
    assert r.exit_code == 2 and "exists" in r.output
    r = CliRunner().invoke(users, ["add", "bob", "--role", "nurse", "--data", data])
    assert r.exit_code == 2
    r = CliRunner().invoke(users, ["token", "ann", "--data", data])
    assert r.exit_code == 0
    token = r.output.strip().splitlines()[-1]
    assert CliRunner().invoke(users, ["token", "nobody", "--data", data]).exit_code == 2
    app = create_app(data)
    assert TestClient(app).get("/api/v1/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert token not in (tmp_path / "d" / "cases.sqlite3").read_bytes().decode("latin-1")  # only its hash
    app.state.store.close()


def test_serve_help() -> None:
    r = CliRunner().invoke(serve, ["--help"])
    assert r.exit_code == 0 and "--database" in r.output and "--secure-cookies" in r.output


def test_load_folder_once(tmp_path) -> None:
    from priorauth.service.cli import load_folder
    from priorauth.service.store import Store

    from .conftest import DATA

    store = Store.open(tmp_path / "d")
    assert load_folder(store, str(DATA)) == (4, 0)
    assert load_folder(store, str(DATA)) == (0, 0)  # a restart does not add them again
    assert store.list_cases()[1] == 4
    store.close()
