"""What would fit: when every criterion that failed is one the prescriber can change (a dose,
unit or interval cap, a non-preferred product, a specialty), the changes that would meet them."""

from __future__ import annotations

from typing import Any

from .leaves import BY_MODEL
from .result import NOT_MET, Result


def _failed_leaves(r: Result, out: list[Result]) -> None:
    if r.status != NOT_MET:
        return
    if not r.children:
        out.append(r)
    for child in r.children:
        _failed_leaves(child, out)


def would_fit(result: Result, ctx: Any) -> list[dict]:
    """[{"criterion", "change", "text"}], or [] when anything failed that no change of the
    request can fix (no pathway met, an uncovered diagnosis) or when the whole is not failed."""
    if result.status != NOT_MET:
        return []
    failed: list[Result] = []
    _failed_leaves(result, failed)
    out = []
    for r in failed:
        leaf = BY_MODEL.get(type(r.node))
        found = leaf.fit(r.node, ctx) if leaf is not None and leaf.fit is not None else None
        if found is None:
            return []
        out.append({"criterion": r.node.id, **found})
    return out
