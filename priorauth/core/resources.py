"""Where the bundled data folders are: `criteria/` and `templates/`.

In the repository they are top-level folders (criteria authors edit them there); a wheel
carries them inside the package as `priorauth/_data/`. Either way the code asks this module,
so every command works from any working folder, installed, editable or from a checkout.
`--criteria` / `PRIORAUTH_CRITERIA` and `--templates` / `PRIORAUTH_TEMPLATES` override them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .errors import CriteriaError

ENV = {"criteria": "PRIORAUTH_CRITERIA", "templates": "PRIORAUTH_TEMPLATES"}


@lru_cache(maxsize=None)
def bundled(name: str) -> Path:
    """The folder shipped with the package: `_data/<name>` in a wheel, `<repo>/<name>` in a checkout."""
    # the package folder, as importlib.resources.files("priorauth") gives it (not imported: a
    # start-up cost for every command)
    inside = Path(__file__).parents[1] / "_data" / name
    if inside.is_dir():
        return inside
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    raise CriteriaError(f"the bundled {name}/ folder is missing from this installation "
                        f"(looked in {inside} and {checkout}); reinstall priorauth or set {ENV[name]}")


def folder(name: str, override: Optional[str | Path] = None) -> Path:
    """`override`, else the environment variable, else the bundled folder."""
    given = override if override is not None else os.environ.get(ENV[name]) or None
    return Path(given) if given is not None else bundled(name)


def criteria_dir(override: Optional[str | Path] = None) -> Path:
    return folder("criteria", override)


def templates_dir(override: Optional[str | Path] = None) -> Path:
    return folder("templates", override)
