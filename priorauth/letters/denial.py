"""The denial an appeal answers: checked from options or a YAML/JSON file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import InputError


# ------------------------------------------------------------------ denial (appeals)


FIELDS = ("reason", "date", "reference", "criteria", "level", "appeal_to")
# Appeal levels a denial file may name (templates/appeals.yaml says which a line of business has).
LEVELS = ("internal", "second_internal", "external", "redetermination", "reconsideration", "fair_hearing")
_FIELD_LIKE = re.compile(r"[a-z][a-z0-9_]{0,40}\Z")


def parse_denial(data: Any, source: str = "denial") -> dict:
    """Check a denial (reason, date, reference, criteria) -> plain dict; InputError names the field."""
    from ..core.codes import _iso_date

    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with reason, date, reference, criteria")
    unknown = sorted(set(data) - set(FIELDS), key=str)
    if unknown:
        # A field-like key is named (a typo to fix); anything else may be data and is not.
        shown = unknown[0] if isinstance(unknown[0], str) and _FIELD_LIKE.match(unknown[0]) else "(an unknown key)"
        raise InputError(f"{source}: {shown}: unknown field (expected {', '.join(FIELDS)})")
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{source}: reason: the denial reason is required (text)")
    out: dict[str, Any] = {"reason": reason.strip(), "date": None, "reference": None, "criteria": [],
                           "level": None, "appeal_to": None}
    if data.get("date") is not None:
        try:
            when = _iso_date(data["date"])
        except ValueError:
            raise InputError(f"{source}: date: expected a date as YYYY-MM-DD") from None
        out["date"] = when.isoformat()
    if data.get("reference") is not None:
        if not isinstance(data["reference"], (str, int)) or isinstance(data["reference"], bool):
            raise InputError(f"{source}: reference: expected text")
        out["reference"] = str(data["reference"]).strip() or None
    crit = data.get("criteria") or []
    if not isinstance(crit, list) or not all(isinstance(c, str) and c.strip() for c in crit):
        raise InputError(f"{source}: criteria: expected a list of criterion ids")
    out["criteria"] = [c.strip() for c in crit]
    level = data.get("level")
    if level is not None and level not in LEVELS:
        raise InputError(f"{source}: level: expected one of {', '.join(LEVELS)}")
    out["level"] = level
    to = data.get("appeal_to")
    if to is not None:
        if not isinstance(to, dict) or set(to) - {"department", "address", "fax", "phone"} or \
                not all(isinstance(v, str) for v in to.values()):
            raise InputError(f"{source}: appeal_to: expected department, address, fax, phone (text)")
        to = {k: v.strip() for k, v in to.items() if v.strip()}
    out["appeal_to"] = to or None
    return out


def load_denial(path: str | Path) -> dict:
    """A denial from a YAML or JSON file (keys reason, date, reference, criteria)."""
    from ..core.yamlio import parse_text, read_text

    text = read_text(Path(path))
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    return parse_denial(parse_text(text, str(path)), str(path))
