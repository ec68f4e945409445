"""The case service: a web application and JSON API over a store of cases (spec section 6).

`create_app(data=..., database=...)` builds the ASGI application; `priorauth.service.cli`
holds the `serve` and `users` commands.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    # imported lazily: `import priorauth.service` must not pull in FastAPI for the CLI's --help
    from .app import create_app as _create

    return _create(*args, **kwargs)
