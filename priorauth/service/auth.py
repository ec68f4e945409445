"""Who is asking and what they may do: passwords, tokens, sessions, CSRF, rate limit, roles."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request

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
    """At most `limit` failed sign-ins per (user name, address) in `window` seconds (per process)."""

    def __init__(self, limit: int = 5, window: float = 300.0):
        self.limit, self.window = limit, window
        self._fails: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: tuple[str, str]) -> bool:
        with self._lock:
            q = self._fails.get(key)
            if not q:
                return False
            while q and q[0] < time.monotonic() - self.window:
                q.popleft()
            return len(q) >= self.limit

    def fail(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._fails[key].append(time.monotonic())

    def clear(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._fails.pop(key, None)


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
