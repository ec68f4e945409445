"""Server-rendered pages (Jinja2) for billing staff, physicians and admins."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode
from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.datastructures import FormData, UploadFile

from ..engine.summary import billing_lines, dosing_line, policy_lines
from . import referrals
from .auth import allowed, check_csrf, csrf_token, hash_password, session_user, verify_password
from .referrals import BadInput
from .store import Conflict, NotFound, ROLES, Store, Who
from .workflow import EventError, STATUSES, TRANSITIONS, parse_event

router = APIRouter()
_env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
                   auto_reload=False)  # templates ship with the package: no stat() per page
_env.globals.update(dosing_line=dosing_line, billing_lines=billing_lines, policy_lines=policy_lines)  # the words `priorauth check` prints
PAGE_SIZE = 50
SORT_LABELS = [("updated", "last change"), ("due", "renewal due"), ("status", "status"), ("payer", "payer"),
               ("patient", "patient")]
SORTS = {k for k, _ in SORT_LABELS}
MAX_FILES = 200


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    html = _env.get_template(name).render(request=request, user=user, csrf=csrf_token(request),
                                          can=lambda p: bool(user) and allowed(user, p), **ctx)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    request.state.user = session_user(request)
    return render(request, "error.html", status=status, status_code=status, message=message)


def page_user(permission: Optional[str] = None):
    def dep(request: Request) -> Who:
        user = session_user(request)
        if user is None:
            raise HTTPException(401, "sign in")
        request.state.user = user
        if permission and not allowed(user, permission):
            raise HTTPException(403, f"the {user.role} role may not open this page")
        return user
    return dep


async def csrf_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matched the session's (every POST form)."""
    form = await request.form(max_files=MAX_FILES)
    check_csrf(request, form.get("csrf"))  # type: ignore[arg-type]
    return form


def store(request: Request) -> Store:
    return request.app.state.store


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---------------------------------------------------------------------------- sign in and out


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request):
    return render(request, "signin.html")


@router.post("/signin")
def signin(request: Request, form: FormData = Depends(csrf_form)):
    name = str(form.get("username", ""))[:64]
    limit = request.app.state.rate_limit
    key = limit.key(name, request.client.host if request.client else "")
    if limit.blocked(key):
        return render(request, "signin.html", status=429,
                      error="Too many failed sign-ins: wait five minutes and try again.")
    user = verify_password(store(request), name, str(form.get("password", "")))
    if user is None:
        limit.fail(key)
        store(request).audit(name or "-", "signin.failed")
        return render(request, "signin.html", status=401, error="That user name and password do not match.")
    limit.clear(key)
    request.session.clear()  # a fresh session (and CSRF token) at sign-in: no fixation
    request.session["uid"] = user.id
    csrf_token(request)
    store(request).audit(user.name, "signin")
    return see_other("/check" if user.role == "physician" else "/admin" if user.role == "admin" else "/")


@router.post("/signout")
def signout(request: Request, form: FormData = Depends(csrf_form)):
    request.session.clear()
    return see_other("/signin")


# ---------------------------------------------------------------------------- worklist


@router.get("/", response_class=HTMLResponse)
def worklist(request: Request, status: str = "", payer: str = "", due_before: str = "", sort: str = "updated",
             order: str = "desc", page: int = 1, user: Who = Depends(page_user("read"))):
    st = store(request)
    due = _date_or_none(due_before)
    page = min(max(page, 1), 100_000)
    if status not in STATUSES:
        status = ""
    if sort not in SORTS:
        sort = "updated"
    w = st.worklist(status=status or None, payer=payer or None, due_before=due, sort=sort,
                    descending=order != "asc", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    st.audit(user.name, "worklist.read")
    total = w["total"]
    query = {"status": status, "payer": payer, "due_before": due_before if due else "", "sort": sort,
             "order": "asc" if order == "asc" else "desc"}
    pages = max(1, -(-total // PAGE_SIZE))
    link = lambda n: "/?" + urlencode({**query, "page": n})  # noqa: E731
    ctx = dict(rows_html=worklist_rows(w["rows"]), total=total, page=page, pages=pages, q=query,
               prev_url=link(page - 1) if page > 1 else None, next_url=link(page + 1) if page < pages else None)
    if request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "worklist":
        # htmx asks for the table only: no header, filters or counts to render
        return render(request, "worklist_table.html", **ctx)
    return render(request, "worklist.html", counts=w["counts"], statuses=STATUSES, payers=w["payers"],
                  sorts=SORT_LABELS, **ctx)


def worklist_rows(rows) -> Markup:  # noqa: ANN001
    """The table rows, from stored columns, built directly (a Jinja loop costs ~10x for 50 rows)."""
    if not rows:
        return Markup('<tr><td colspan="6">No cases match.</td></tr>')
    return Markup("".join(_row_html(*c) for c in rows))


@lru_cache(maxsize=20_000)
def _row_html(case_id, patient, referral_id, payer, status, missing, due) -> str:  # noqa: ANN001
    """One row's HTML, a function of its stored columns only: kept, as pages repeat the same rows."""
    missing = json.loads(missing) if missing and missing != "[]" else None
    return (f'<tr><td><a href="/cases/{escape(case_id)}">{escape(patient)}</a></td>'
            f'<td>{escape(referral_id)}</td><td>{escape(payer)}</td>'
            f'<td><span class="status s-{escape(status)}">{escape(status.replace("_", " "))}</span></td>'
            f'<td>{escape("; ".join(missing)) if missing else "—"}</td>'
            f'<td>{due.isoformat() if due else "—"}</td></tr>\n')


# ---------------------------------------------------------------------------- one case


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(case_id: str, request: Request, user: Who = Depends(page_user("read"))):
    st = store(request)
    try:
        case, events, versions = st.case_view(case_id)
    except NotFound:
        raise HTTPException(404, "no such case") from None
    st.audit(user.name, "case.read", case.id)
    # the likeliest next steps first: infusions during an approval, closing last
    next_events = sorted((e for e, (allowed_from, _) in TRANSITIONS.items() if case.status in allowed_from),
                         key=lambda e: (e == "closed", e != "infusion_given"))
    return render(request, "case.html", case=case, determination=determination_html(case), events=events,
                  event_data=[json.loads(e.data) for e in events], next_events=next_events, versions=versions,
                  has_denial=any(e.type == "denied" for e in events), today=dt.date.today().isoformat())


# the determination section of a case page depends on the case's determination JSON only, which
# changes only with the case's version: rendered once per (case, version) and kept (LRU)
_DETERMINATIONS: "OrderedDict[tuple[str, int], Markup]" = OrderedDict()
_DETERMINATIONS_MAX = 2000
_det_lock = threading.Lock()


def determination_html(case) -> Markup:  # noqa: ANN001
    key = (case.id, case.version)
    with _det_lock:
        html = _DETERMINATIONS.get(key)
        if html is not None:
            _DETERMINATIONS.move_to_end(key)
            return html
    result = json.loads(case.result)
    html = Markup(_env.get_template("determination.html").render(result=result,
                                                                  tree=_tree(result.get("criteria") or [])))
    with _det_lock:
        _DETERMINATIONS[key] = html
        while len(_DETERMINATIONS) > _DETERMINATIONS_MAX:
            _DETERMINATIONS.popitem(last=False)
    return html


@router.post("/cases/{case_id}/events")
def record_event(case_id: str, request: Request, form: FormData = Depends(csrf_form),
                 user: Who = Depends(page_user("write"))):
    st = store(request)
    body = {k: v for k, v in form.items() if k != "csrf" and isinstance(v, str)}
    version = body.pop("version", None)
    try:
        etype, date, fields = parse_event(body)
        st.add_event(case_id, etype, date, fields, user.name, version=int(version) if version else None)
    except EventError as exc:
        return error_page(request, 422, f"{exc.loc[-1]}: {exc.msg}")
    except NotFound:
        raise HTTPException(404, "no such case") from None
    except Conflict as exc:
        return error_page(request, 409, str(exc))
    return see_other(f"/cases/{case_id}")


@router.get("/cases/{case_id}/correct", response_class=HTMLResponse)
def correct_form(case_id: str, request: Request, user: Who = Depends(page_user("write"))):
    st = store(request)
    case = _case(st, case_id)
    import yaml

    text = yaml.safe_dump(st.referral(case.id), sort_keys=False, allow_unicode=True)
    return render(request, "correct.html", case=case, text=text)


@router.post("/cases/{case_id}/correct")
def correct(case_id: str, request: Request, form: FormData = Depends(csrf_form),
            user: Who = Depends(page_user("write"))):
    st = store(request)
    case = _case(st, case_id)
    text = str(form.get("referral", ""))
    try:
        data, det = referrals.evaluate_body(text, "application/yaml")
        st.correct(case.id, data, det.to_dict(), user.name, version=int(form.get("version") or 0) or None)
    except BadInput as exc:
        return render(request, "correct.html", status=422, case=case, text=text, errors=exc.errors)
    except Conflict as exc:
        return error_page(request, 409, str(exc))
    return see_other(f"/cases/{case.id}")


@router.post("/cases/{case_id}/continuation")
def start_continuation(case_id: str, request: Request, form: FormData = Depends(csrf_form),
                       user: Who = Depends(page_user("write"))):
    st = store(request)
    case = _case(st, case_id)
    try:
        data, det = referrals.evaluate(referrals.continuation(st.referral(case.id)))
    except BadInput as exc:
        return error_page(request, 422, "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in exc.errors))
    new = st.add_cases([(data, det.to_dict())], user.name)[0]
    return see_other(f"/cases/{new.id}")


# ---------------------------------------------------------------------------- upload


@router.get("/upload", response_class=HTMLResponse)
def upload_form(request: Request, user: Who = Depends(page_user("write"))):
    return render(request, "upload.html")


@router.post("/upload", response_class=HTMLResponse)
async def upload(request: Request, form: FormData = Depends(csrf_form), user: Who = Depends(page_user("write"))):
    """Each file becomes a case or a per-file error; the cases are written in one transaction."""
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    good, results = [], []
    for n, f in enumerate(files, 1):
        raw = await f.read()
        label = (f.filename or f"file {n}")[:200]  # on this page only, never in a URL or a log
        ctype = "application/yaml" if (f.filename or "").lower().endswith((".yaml", ".yml")) else "application/json"
        try:
            data, det = referrals.evaluate_body(raw, ctype)
        except BadInput as exc:
            results.append({"label": label, "errors": exc.errors})
            continue
        except UnicodeDecodeError:
            results.append({"label": label, "errors": [{"loc": ["body"], "msg": "not UTF-8 text"}]})
            continue
        good.append((data, det.to_dict()))
        results.append({"label": label, "errors": None})
    if not files:
        return render(request, "upload.html", status=422, message="Choose one or more referral files.")
    from starlette.concurrency import run_in_threadpool

    cases = await run_in_threadpool(store(request).add_cases, good, user.name) if good else []
    it = iter(cases)
    for r in results:
        if r["errors"] is None:
            r["case"] = next(it)
    return render(request, "upload.html", results=results, status=201 if cases else 422)


# ---------------------------------------------------------------------------- check a patient


@router.get("/check", response_class=HTMLResponse)
def check_form(request: Request, user: Who = Depends(page_user("check"))):
    return render(request, "check.html")


@router.post("/check", response_class=HTMLResponse)
async def check_patient(request: Request, form: FormData = Depends(csrf_form),
                        user: Who = Depends(page_user("check"))):
    """An answer at once; nothing is stored unless 'save as case' was pressed (billing role)."""
    text = str(form.get("referral") or "")
    upload_file = form.get("file")
    if isinstance(upload_file, UploadFile) and upload_file.filename:
        text = (await upload_file.read()).decode("utf-8", errors="replace")
    ctype = "application/json" if text.lstrip().startswith("{") else "application/yaml"
    try:
        data, det = referrals.evaluate_body(text, ctype)
    except BadInput as exc:
        return render(request, "check.html", status=422, text=text, errors=exc.errors)
    result = det.to_dict()
    if form.get("save") and allowed(user, "write"):
        from starlette.concurrency import run_in_threadpool

        case = (await run_in_threadpool(store(request).add_cases, [(data, result)], user.name))[0]
        return see_other(f"/cases/{case.id}")
    store(request).audit(user.name, "check")
    return render(request, "check.html", text=text, result=result, tree=_tree(result.get("criteria") or []))


# ---------------------------------------------------------------------------- renewals


@router.get("/renewals", response_class=HTMLResponse)
def renewals(request: Request, user: Who = Depends(page_user("read"))):
    st = store(request)
    today = dt.date.today()
    cases, _ = st.list_cases(status="approved", due_before=today + dt.timedelta(days=30), sort="due",
                             descending=False, limit=500)
    st.audit(user.name, "renewals.read")
    return render(request, "renewals.html", cases=cases, today=today)


# ---------------------------------------------------------------------------- admin


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, user: Who = Depends(page_user("admin"))):
    st = store(request)
    rows = st.audit_log(limit=200)
    st.audit(user.name, "audit.read")
    return render(request, "admin.html", audit=rows, users=st.users(), roles=ROLES)


@router.post("/admin/users")
def admin_add_user(request: Request, form: FormData = Depends(csrf_form), user: Who = Depends(page_user("admin"))):
    name, role, password = (str(form.get(k, "")) for k in ("name", "role", "password"))
    if not name or role not in ROLES or len(password) < 12:
        return error_page(request, 422, "a user needs a name, a role and a password of at least 12 characters")
    try:
        store(request).add_user(name, role, hash_password(password))
    except Conflict as exc:
        return error_page(request, 409, str(exc))
    store(request).audit(user.name, "user.add")
    return see_other("/admin")


# ---------------------------------------------------------------------------- helpers


def _case(st: Store, case_id: str):
    try:
        return st.get(case_id)
    except NotFound:
        raise HTTPException(404, "no such case") from None


def _date_or_none(value: str) -> Optional[dt.date]:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _tree(criteria: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The criteria as (depth, criterion) in tree order, from each one's `parent`."""
    children: dict[Optional[str], list[dict[str, Any]]] = {}
    for c in criteria:
        children.setdefault(c.get("parent"), []).append(c)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: Optional[str], depth: int) -> None:
        for c in children.get(parent, []):
            out.append((depth, c))
            if depth < 12:
                walk(c["id"], depth + 1)
    walk(None, 0)
    return out


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)
