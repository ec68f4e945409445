"""The ASGI application: store, session middleware, security headers, body limit, routers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from .auth import RateLimit
from .store import Store

HERE = Path(__file__).parent
MAX_BODY = 2 * 1024 * 1024
SESSION_MAX_AGE = 8 * 3600  # a working day; the signature carries the time, so old cookies fail

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class Guard:
    """Pure ASGI: security headers on every answer, no-store on all but static files, and a
    body size limit (413) checked on Content-Length and on the bytes actually received."""

    def __init__(self, app, max_body: int = MAX_BODY):  # noqa: ANN001
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope["path"].startswith("/static/")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _too_large(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
            return message

        async def send_with_headers(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send) -> None:  # noqa: ANN001
    body = b'{"errors":[{"loc":["body"],"msg":"the request is larger than 2 MiB"}]}'
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def create_app(data: Optional[str | Path] = None, database: Optional[str] = None, *,
               secure_cookies: bool = False, store: Optional[Store] = None) -> FastAPI:
    """The application over the store in `data` (SQLite) or `database` (a URL)."""
    from . import api, pages

    store = store or Store.open(data, database)
    app = FastAPI(title="priorauth case service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.rate_limit = RateLimit(store)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 401:
            return RedirectResponse("/signin", status_code=303)
        return pages.error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # FastAPI's default echoes the input: name the field only
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return JSONResponse({"errors": errors}, status_code=422)

    app.add_middleware(SessionMiddleware, secret_key=store.setting("session_secret"),
                       session_cookie="priorauth_session", max_age=SESSION_MAX_AGE,
                       same_site="lax", https_only=secure_cookies)
    app.add_middleware(Guard)
    return app


def from_env() -> FastAPI:
    """The app as `serve --workers N` starts it in each worker process (settings by environment)."""
    import os

    return create_app(os.environ.get("PRIORAUTH_SERVICE_DATA") or None,
                      os.environ.get("PRIORAUTH_SERVICE_DATABASE") or None,
                      secure_cookies=os.environ.get("PRIORAUTH_SERVICE_SECURE") == "1")
