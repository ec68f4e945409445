"""The JSON API of spec section 6: thin routes over the store."""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
from typing import Any, Optional
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from . import referrals
from .auth import allowed, bearer_user, session_user
from .referrals import BadInput, LETTER_FORMATS, case_json, case_summary
from .store import Conflict, NotFound, Store, Who
from .workflow import EventError, STATUSES, parse_event

router = APIRouter(prefix="/api/v1")
DEFAULT_LIMIT, MAX_LIMIT = 50, 200  # GET /cases: cases a page


def store(request: Request) -> Store:
    return request.app.state.store


def api_user(request: Request) -> Who:
    """Bearer token; a signed-in browser session too, but only to read (no CSRF on the API)."""
    user = bearer_user(request)
    if user is None and request.method == "GET":
        user = session_user(request)
    if user is None:
        raise HTTPException(401, "sign in or send Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})
    return user


def need(permission: str):
    def dep(user: Who = Depends(api_user)) -> Who:
        if not allowed(user, permission):
            raise HTTPException(403, f"the {user.role} role may not do this")
        return user
    return dep


def errors(status: int, errs: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"errors": errs}, status_code=status)


def _case_or_404(st: Store, case_id: str):
    try:
        return st.get(case_id)
    except NotFound:
        raise HTTPException(404, "no such case") from None


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/cases", status_code=201)
async def create_case(request: Request, user: Who = Depends(need("write"))):
    body = await request.body()
    try:
        data, det = referrals.evaluate_body(body, request.headers.get("content-type", "application/json"))
    except BadInput as exc:
        return errors(422, exc.errors)
    except UnicodeDecodeError:
        return errors(422, [{"loc": ["body"], "msg": "not UTF-8 text"}])
    case = store(request).add_cases([(data, det.to_dict())], user.name)[0]
    return {"case_id": case.id, "referral_id": case.referral_id, "status": case.status,
            "determination": det.to_dict()}


@router.get("/cases")
def list_cases(request: Request, status: Optional[str] = None, payer: Optional[str] = None,
               due_before: Optional[dt.date] = None, limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
               cursor: Optional[str] = None, user: Who = Depends(need("read"))):
    """One page of cases, oldest first; `next` is the URL of the next page (None on the last)."""
    if status and status not in STATUSES:
        return errors(422, [{"loc": ["query", "status"], "msg": "not a case status"}])
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError:
        return errors(422, [{"loc": ["query", "cursor"], "msg": "not a cursor from a previous page's next link"}])
    st = store(request)
    cases, more = st.case_page(status=status, payer=payer, due_before=due_before, limit=limit, after=after)
    st.audit(user.name, "cases.list")
    next_url = None
    if more is not None:
        query = {k: v for k, v in (("status", status), ("payer", payer),
                                   ("due_before", due_before.isoformat() if due_before else None)) if v}
        next_url = "/api/v1/cases?" + urlencode({**query, "limit": limit, "cursor": encode_cursor(more)})
    # a summary per case (the determination's value, not its JSON): GET the case for the rest
    return {"cases": [case_summary(c) for c in cases], "next": next_url}


def encode_cursor(after: tuple[dt.datetime, str]) -> str:
    """An opaque cursor: the last case's (created_at, id), base64url."""
    raw = json.dumps([after[0].isoformat(), after[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, case_id = json.loads(raw)
        if not isinstance(case_id, str) or len(case_id) > 32:
            raise ValueError("bad id")
        return dt.datetime.fromisoformat(at), case_id
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
        raise ValueError("not a cursor") from None


@router.get("/cases/{case_id}")
def get_case(case_id: str, request: Request, user: Who = Depends(need("read"))):
    st = store(request)
    case = _case_or_404(st, case_id)
    st.audit(user.name, "case.read", case.id)
    return case_json(case, st.events(case.id))


@router.post("/cases/{case_id}/events", status_code=201)
async def add_event(case_id: str, request: Request, user: Who = Depends(need("write"))):
    try:
        body = json.loads(await request.body())
        etype, date, fields = parse_event(body)
    except ValueError as exc:
        if isinstance(exc, EventError):
            return errors(422, [{"loc": exc.loc, "msg": exc.msg}])
        return errors(422, [{"loc": ["body"], "msg": "not valid JSON"}])
    version = body.get("version") or _if_match(request)
    st = store(request)
    try:
        st.add_event(case_id, etype, date, fields, user.name, version=_int(version))
    except NotFound:
        raise HTTPException(404, "no such case") from None
    except Conflict as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return JSONResponse(case_json(st.get(case_id), st.events(case_id)), status_code=201)


@router.put("/cases/{case_id}/referral")
async def correct_referral(case_id: str, request: Request, user: Who = Depends(need("write"))):
    st = store(request)
    _case_or_404(st, case_id)
    try:
        data, det = referrals.evaluate_body(await request.body(),
                                            request.headers.get("content-type", "application/json"))
    except BadInput as exc:
        return errors(422, exc.errors)
    except UnicodeDecodeError:
        return errors(422, [{"loc": ["body"], "msg": "not UTF-8 text"}])
    try:
        case = st.correct(case_id, data, det.to_dict(), user.name, version=_int(_if_match(request)))
    except Conflict as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    return case_json(case, st.events(case_id))


@router.get("/cases/{case_id}/letter")
def letter(case_id: str, request: Request, format: str = "docx", kind: Optional[str] = None,
           user: Who = Depends(need("read"))):
    if format not in LETTER_FORMATS:
        return errors(422, [{"loc": ["query", "format"], "msg": "one of " + ", ".join(LETTER_FORMATS)}])
    if kind not in (None, "initial", "continuation", "appeal"):
        return errors(422, [{"loc": ["query", "kind"], "msg": "one of initial, continuation, appeal"}])
    st = store(request)
    case = _case_or_404(st, case_id)
    try:
        content = referrals.letter(st.referral(case.id), format, kind, st.events(case.id))
    except BadInput as exc:
        return errors(422, exc.errors)
    st.audit(user.name, f"case.letter.{format}", case.id)
    # the file name carries the case id, never the referral id or a name
    return Response(content, media_type=LETTER_FORMATS[format],
                    headers={"Content-Disposition": f'attachment; filename="letter-{case.id}.{format}"'})


@router.get("/cases/{case_id}/packet")
def packet(case_id: str, request: Request, kind: Optional[str] = None, user: Who = Depends(need("read"))):
    if kind not in (None, "initial", "continuation", "appeal"):
        return errors(422, [{"loc": ["query", "kind"], "msg": "one of initial, continuation, appeal"}])
    st = store(request)
    case = _case_or_404(st, case_id)
    try:
        content = referrals.letter(st.referral(case.id), "packet", kind, st.events(case.id))
    except BadInput as exc:
        return errors(422, exc.errors)
    st.audit(user.name, "case.packet", case.id)
    return Response(content, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="packet-{case.id}.pdf"'})


@router.get("/worklist.csv")
def worklist(request: Request, user: Who = Depends(need("read"))):
    st = store(request)
    cases, _ = st.list_cases(open_only=True, sort="status", descending=False)
    st.audit(user.name, "worklist.csv")
    return Response(worklist_csv(cases), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="worklist.csv"'})


@router.get("/audit")
def audit(request: Request, user: Who = Depends(need("admin"))):
    st = store(request)
    rows = st.audit_log()
    st.audit(user.name, "audit.read")
    return {"audit": [{"at": a.at.isoformat() + "Z", "user": a.user, "action": a.action, "case_id": a.case_id}
                      for a in rows]}


# the batch worklist's columns (spec section 4), then the case's own
WORKLIST_COLUMNS = ["referral", "patient", "payer", "policy", "determination", "pathways met",
                    "what is missing", "letter", "reauthorization due", "status", "message", "source",
                    "case", "authorization number", "approved units", "units given"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP): a leading quote on = + - @ tab CR."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def worklist_csv(cases) -> str:  # noqa: ANN001
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(WORKLIST_COLUMNS)
    for c in cases:
        result = json.loads(c.result)
        policy = (result.get("policy") or {}).get("id", "")
        w.writerow([csv_safe(v) for v in (
            c.referral_id, c.patient, c.payer, policy, c.determination, "; ".join(result.get("pathways_met") or []),
            "; ".join(json.loads(c.missing)), f"/api/v1/cases/{c.id}/letter",
            c.reauthorization_due.isoformat() if c.reauthorization_due else "", c.status,
            "; ".join(result.get("reasons") or []), "case service", c.id, c.auth_number, c.approved_units,
            c.units_given)])
    return out.getvalue()


def _if_match(request: Request) -> Optional[str]:
    value = request.headers.get("if-match")
    return value.strip('"W/') if value else None


def _int(value: Any) -> Optional[int]:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
