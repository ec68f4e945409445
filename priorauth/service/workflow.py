"""Statuses, events and the transitions between them (spec section 6), as data."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

# the determination a case starts from -> its first status
FROM_DETERMINATION = {"meets_criteria": "ready", "missing_documentation": "missing_documentation",
                      "not_eligible": "not_eligible"}
STATUSES = ["missing_documentation", "ready", "not_eligible", "submitted", "pended", "approved",
            "denied", "appealed", "expired", "closed"]
OPEN = frozenset(STATUSES) - {"closed", "expired"}
# statuses a correction re-derives from the new determination (nothing sent to the payer yet)
PRE_SUBMISSION = frozenset(FROM_DETERMINATION.values())

# event type -> (statuses it may follow, the status it leads to; None keeps the status)
TRANSITIONS: dict[str, tuple[frozenset[str], Optional[str]]] = {
    "submitted": (frozenset({"ready", "pended"}), "submitted"),
    "pended": (frozenset({"submitted"}), "pended"),
    "approved": (frozenset({"submitted", "pended", "appealed"}), "approved"),
    "denied": (frozenset({"submitted", "pended", "appealed"}), "denied"),
    "appealed": (frozenset({"denied"}), "appealed"),
    "expired": (frozenset({"approved"}), "expired"),
    "closed": (OPEN, "closed"),
    # extension: units given at one infusion, counted against the units approved
    "infusion_given": (frozenset({"approved"}), None),
}

# event type -> {field: kind}; kinds: str, int, date. Required fields are marked with '!'
FIELDS: dict[str, dict[str, str]] = {
    "submitted": {"reference": "str", "note": "str"},
    "pended": {"requested": "str", "reference": "str", "note": "str"},
    "approved": {"authorization_number": "str!", "approved_units": "int!", "start_date": "date!",
                 "end_date": "date!", "note": "str"},
    "denied": {"reason": "str!", "reference": "str", "criteria": "str", "note": "str"},
    "appealed": {"reference": "str", "note": "str"},
    "expired": {"note": "str"},
    "closed": {"note": "str"},
    "infusion_given": {"units": "int!", "note": "str"},
}

DEFAULT_LEAD_DAYS = 30


class EventError(ValueError):
    """A bad event body: `loc` names the field (never its value)."""

    def __init__(self, loc: list[str], msg: str):
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def parse_event(body: Any) -> tuple[str, dt.date, dict[str, Any]]:
    """(type, date, fields) from an event body, or EventError naming the field."""
    if not isinstance(body, dict):
        raise EventError(["body"], "expected a JSON object")
    etype = body.get("type")
    if etype not in TRANSITIONS:
        raise EventError(["body", "type"], "must be one of " + ", ".join(TRANSITIONS))
    spec = FIELDS[etype]
    unknown = set(body) - set(spec) - {"type", "date", "version"}
    if unknown:
        raise EventError(["body", sorted(unknown)[0]], f"not a field of a {etype} event")
    date = _date(body.get("date"), "date") if body.get("date") not in (None, "") else dt.date.today()
    fields: dict[str, Any] = {}
    for name, kind in spec.items():
        value = body.get(name)
        if value in (None, ""):
            if kind.endswith("!"):
                raise EventError(["body", name], f"required for a {etype} event")
            continue
        kind = kind.rstrip("!")
        if kind == "int":
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise EventError(["body", name], "expected a whole number") from None
            if value < 0:
                raise EventError(["body", name], "must not be negative")
        elif kind == "date":
            value = _date(value, name).isoformat()
        else:
            if not isinstance(value, str) or len(value) > 2000:
                raise EventError(["body", name], "expected text of at most 2000 characters")
        fields[name] = value
    if etype == "approved" and fields["end_date"] < fields["start_date"]:
        raise EventError(["body", "end_date"], "is before start_date")
    return etype, date, fields


def _date(value: Any, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise EventError(["body", name], "expected a date YYYY-MM-DD") from None


def lead_days(result: dict[str, Any]) -> int:
    """How many days before the end a renewal is due, from the policy's computed authorization."""
    auth = result.get("authorization") or {}
    try:
        return (dt.date.fromisoformat(auth["end"]) - dt.date.fromisoformat(auth["reauthorization_due"])).days
    except (KeyError, TypeError, ValueError):
        return DEFAULT_LEAD_DAYS
