"""`priorauth serve` and `priorauth users add|token` (spec section 6)."""

from __future__ import annotations

import secrets
import sys

import click

_data = click.option("--data", "data", default="priorauth-data", show_default=True,
                     help="Folder of the SQLite store (created mode 0700).")
_database = click.option("--database", "database", default=None,
                         help="A database URL (postgresql://...) instead of SQLite in --data.")


def _store(data: str, database: str | None):
    from .store import Store

    return Store.open(data, database)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@_data
@_database
@click.option("--secure-cookies", is_flag=True, help="Mark the session cookie Secure (behind HTTPS).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (one per core; they share the store safely).")
@click.option("--load", "load_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="On a store with no cases yet, add every referral file of this folder as a case.")
def serve(host: str, port: int, data: str, database: str | None, secure_cookies: bool, workers: int,
          load_dir: str | None) -> None:
    """Run the case service: web pages and the JSON API."""
    import os

    import uvicorn

    from .app import create_app

    if load_dir:
        store = _store(data, database)
        try:
            added, bad = load_folder(store, load_dir)
        finally:
            store.close()
        click.echo(f"loaded {added} case(s) from {load_dir}" + (f", {bad} file(s) not valid" if bad else ""),
                   err=True)

    # proxy_headers: behind a TLS proxy the client address and scheme come from X-Forwarded-*
    options = dict(host=host, port=port, proxy_headers=True, server_header=False)
    if workers == 1:
        uvicorn.run(create_app(data, database, secure_cookies=secure_cookies), **options)
        return
    create_app(data, database).state.store.close()  # migrate once, before the workers start
    os.environ.update(PRIORAUTH_SERVICE_DATA=data or "", PRIORAUTH_SERVICE_DATABASE=database or "",
                      PRIORAUTH_SERVICE_SECURE="1" if secure_cookies else "0")
    uvicorn.run("priorauth.service.app:from_env", factory=True, workers=workers, **options)


def load_folder(store, folder: str) -> tuple[int, int]:  # noqa: ANN001
    """(cases added, files not valid) from the referral files of `folder`, if the store has no cases."""
    from pathlib import Path

    from .referrals import BadInput, evaluate_body

    if store.list_cases(limit=1, with_result=False)[1]:
        return 0, 0
    pairs, bad = [], 0
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        ctype = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
        try:
            data, det = evaluate_body(path.read_bytes(), ctype)
        except (BadInput, UnicodeDecodeError):
            bad += 1
            continue
        pairs.append((data, det.to_dict()))
    if pairs:
        store.add_cases(pairs, "serve --load")
    return len(pairs), bad


@click.group("users")
def users() -> None:
    """Users of the case service."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["billing", "physician", "admin"]), required=True)
@_data
@_database
def users_add(name: str, role: str, data: str, database: str | None) -> None:
    """Add a user; the password comes from standard input, else one is generated and printed once."""
    from .auth import hash_password
    from .store import Conflict

    password = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(15)
    elif len(password) < 12:
        raise click.UsageError("the password needs at least 12 characters")
    store = _store(data, database)
    try:
        store.add_user(name, role, hash_password(password))
    except Conflict as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        store.close()
    click.echo(f"added {name} ({role})", err=True)
    if generated:
        click.echo(password)


@users.command("token")
@click.argument("name")
@_data
@_database
def users_token(name: str, data: str, database: str | None) -> None:
    """Print a new API token for NAME (shown once; only its hash is kept)."""
    from .store import NotFound

    store = _store(data, database)
    try:
        click.echo(store.new_token(name))
    except NotFound as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        store.close()
