"""priorauth: prior-authorization packets for IVIG, SCIG and rituximab.

Library use (what the command line does, from Python)::

    from priorauth import check
    det = check("samples/dm-steroid-intolerance.yaml")
    det.determination        # "meets_criteria"
    det.to_dict()            # the determination JSON of spec section 3

Every name below loads its module on first use, so `import priorauth` costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it (relative to this package)
_EXPORTS = {
    "check": ".api",
    "load_referral": ".api",
    "render_letter": ".api",
    "render_packet": ".api",
    "run_batch": ".api",
    "import_fhir": ".api",
    "lint": ".api",
    "load_criteria": ".api",
    "Determination": ".api",
    "Referral": ".api",
    "Criteria": ".api",
    "PriorAuthError": ".api",
    "InputError": ".api",
    "CriteriaError": ".api",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from .api import (Criteria, CriteriaError, Determination, InputError, PriorAuthError, Referral, check,
                      import_fhir, lint, load_criteria, load_referral, render_letter, render_packet, run_batch)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'priorauth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
