"""Referral bodies in, determinations out, through the library's public API only."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Optional

import yaml

from priorauth import Determination, InputError, check, render_letter, render_packet

from .models import Case, Event

FHIR_TYPES = ("application/fhir+json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
LETTER_FORMATS = {"docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                  "pdf": "application/pdf", "html": "text/html; charset=utf-8",
                  "md": "text/markdown; charset=utf-8"}


class BadInput(Exception):
    """Invalid input: `errors` is [{"loc": [...], "msg": ...}], naming fields, never values."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("invalid input")
        self.errors = errors


def parse(body: bytes | str, content_type: str = "application/json") -> Any:
    """The body as data: JSON (FHIR too) or YAML; BadInput when it does not parse."""
    text = body.decode("utf-8", errors="strict") if isinstance(body, bytes) else body
    ctype = content_type.split(";")[0].strip().lower()
    try:
        if ctype in YAML_TYPES:
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        # the parser's message can quote the text: say only where it broke
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        line = line + 1 if line is not None else getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise BadInput([{"loc": ["body"], "msg": f"not valid {'YAML' if ctype in YAML_TYPES else 'JSON'}{where}"}]) \
            from None
    if not isinstance(data, dict):
        raise BadInput([{"loc": ["body"], "msg": "expected a referral object or a FHIR Bundle"}])
    return data


def evaluate(data: dict[str, Any]) -> tuple[dict[str, Any], Determination]:
    """(the validated referral as plain data, its determination) or BadInput."""
    try:
        det = check(data)
    except InputError as exc:
        raise BadInput(input_errors(str(exc), data)) from None
    return referral_data(det), det


def referral_data(det: Determination) -> dict[str, Any]:
    return det.referral.model_dump(mode="json", exclude_none=True)


def evaluate_body(body: bytes | str, content_type: str) -> tuple[dict[str, Any], Determination]:
    return evaluate(parse(body, content_type))


_LINE = re.compile(r"^\s*(?P<loc>[^:]+?):\s*(?P<msg>.*)$")
_QUOTED = re.compile(r"""(['"]).*?\1""")


def input_errors(message: str, data: Any) -> list[dict[str, Any]]:
    """InputError text -> [{"loc", "msg"}]; any value of the input it quotes is blanked out."""
    lines = message.splitlines()
    body = [ln for ln in lines[1:] if ln.strip()] or [lines[0].split(":", 1)[-1]]
    values = sorted({v for v in _strings(data) if len(v) >= 3}, key=len, reverse=True)
    errors = []
    for ln in body:
        m = _LINE.match(ln)
        loc, msg = (m["loc"].strip(), m["msg"]) if m else ("body", ln.strip())
        loc_parts = ["body"] + ([] if loc in ("(top level)", "body") else loc.split("."))
        for v in values:
            msg = msg.replace(v, "…")
        msg = re.sub(r",? got .*$", "", msg)
        errors.append({"loc": loc_parts, "msg": msg.strip()})
    return errors


def _strings(data: Any):
    if isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)
    elif isinstance(data, str):
        yield data


def continuation(data: dict[str, Any], today: Optional[dt.date] = None) -> dict[str, Any]:
    """A renewal's referral: the same referral as a continuation request, as of today."""
    new = json.loads(json.dumps(data))
    new["request"]["request_type"] = "continuation"
    today = today or dt.date.today()
    if dt.date.fromisoformat(new["date"]) < today:
        new["date"] = today.isoformat()
    return new


def denial_of(events: list[Event]) -> Optional[dict[str, Any]]:
    """The last denial, in the shape render_letter's appeal takes."""
    for ev in reversed(events):
        if ev.type == "denied":
            fields = json.loads(ev.data)
            denial = {"reason": fields["reason"], "date": ev.date.isoformat()}
            if fields.get("reference"):
                denial["reference"] = fields["reference"]
            if fields.get("criteria"):
                denial["criteria"] = [c.strip() for c in fields["criteria"].split(",") if c.strip()]
            return denial
    return None


def letter(data: dict[str, Any], fmt: str, kind: Optional[str], events: list[Event]) -> bytes:
    """The letter in `fmt`, or the whole submission packet (PDF) when `fmt` is "packet"."""
    denial = denial_of(events) if kind == "appeal" else None
    if kind == "appeal":
        if denial is None:
            raise BadInput([{"loc": ["query", "kind"], "msg": "an appeal letter needs a denied event first"}])
        # the referral's date dates the letter: an appeal is written after the denial
        if denial["date"] > data["date"]:
            data = {**data, "date": denial["date"]}
    try:
        det = check(data)
        if fmt == "packet":
            return render_packet(det, kind=kind, denial=denial)
        return render_letter(det, fmt, kind=kind, denial=denial)
    except InputError as exc:
        raise BadInput(input_errors(str(exc), data)) from None


def case_summary(case: Case) -> dict[str, Any]:
    """A case in a list: its determination's value and what is missing, not the whole JSON."""
    return {"case_id": case.id, "referral_id": case.referral_id, "status": case.status,
            "version": case.version, "payer": case.payer, "request_type": case.request_type,
            "determination": case.determination, "missing": json.loads(case.missing),
            "authorization": {"number": case.auth_number, "approved_units": case.approved_units,
                              "start_date": _iso(case.auth_start), "end_date": _iso(case.auth_end)},
            "reauthorization_due": _iso(case.reauthorization_due),
            "units_given": case.units_given, "referral_version": case.referral_version}


def case_json(case: Case, events: Optional[list[Event]] = None) -> dict[str, Any]:
    """The case as the API shows it (spec section 6): the determination JSON of section 3."""
    out = {**case_summary(case), "determination": json.loads(case.result)}
    if events is not None:
        out["events"] = [{"type": e.type, "date": e.date.isoformat(), **json.loads(e.data),
                          "from_status": e.from_status, "to_status": e.to_status, "by": e.created_by,
                          "recorded_at": e.created_at.isoformat() + "Z"} for e in events]
    return out


def _iso(value: Optional[dt.date]) -> Optional[str]:
    return value.isoformat() if value else None
