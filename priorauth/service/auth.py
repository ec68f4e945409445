"""Who is asking and what they may do: passwords, tokens, sessions, CSRF, rate limit, roles."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request

from .models import utcnow
from .store import Store, Who

_hasher = PasswordHasher()
# a hash to verify against when the user does not exist, so timing does not tell names apart
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))

# role -> what it may do. physician: check and read; billing: cases and events; admin: users, audit
PERMISSIONS: dict[str, frozenset[str]] = {
    "physician": frozenset({"read", "check"}),
    "billing": frozenset({"read", "write", "check"}),
    "admin": frozenset({"admin"}),
}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(store: Store, name: str, password: str) -> Optional[Who]:
    user = store.user_by_name(name)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    return Who(user.id, user.name, user.role) if user else None


class RateLimit:
    """At most `limit` failed sign-ins per (user name, address) in `window` seconds, counted in
    the database (table `signin_failures`), so every `serve` process and worker shares them.
    The key is a hash: the table holds neither names nor addresses."""

    def __init__(self, store: Store, limit: int = 5, window: float = 300.0):
        self.store, self.limit, self.window = store, limit, window

    @staticmethod
    def key(name: str, address: str) -> str:
        return hashlib.sha256(f"{name}\x00{address}".encode()).hexdigest()

    def _since(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=self.window)

    def blocked(self, key: str) -> bool:
        return self.store.signin_failures(key, self._since()) >= self.limit

    def fail(self, key: str) -> None:
        self.store.signin_failed(key, self._since())

    def clear(self, key: str) -> None:
        self.store.signin_clear(key)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use): every form carries it back."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, sent: Optional[str]) -> None:
    expected = request.session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(expected, str(sent)):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")


def bearer_user(request: Request) -> Optional[Who]:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return request.app.state.store.user_by_token(token.strip())


def session_user(request: Request) -> Optional[Who]:
    uid = request.session.get("uid")
    return request.app.state.store.user_by_id(uid) if isinstance(uid, int) else None


def allowed(user: Who, permission: str) -> bool:
    return permission in PERMISSIONS.get(user.role, frozenset())
