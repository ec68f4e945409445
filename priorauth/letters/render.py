"""Letters of medical necessity: initial, continuation and appeal, as DOCX, PDF, HTML or Markdown.

`letter_context` decides what a letter says, as a plain JSON-able dict built from the
referral and its determination; `templates/letter-text.yaml` holds the wording and the
layout templates in `templates/` decide how it looks (docxtpl for DOCX, Jinja2 for HTML and
Markdown; Typst for PDF, see formats/pdf.py). Every template is rendered
in a Jinja2 sandbox with StrictUndefined and escaping for its format, so a practice's own
template (`template=`) can neither reach Python internals nor print a misspelled name as a
blank. Heavy libraries (jinja2, docxtpl, lxml, matplotlib) are imported only when a letter
is rendered: `priorauth check` never pays for them.

Dates come from the referral (the letter is dated the referral's `date`), never the clock.
"""

from __future__ import annotations

import functools
import io
import math
import re
import zipfile
from collections import OrderedDict
from datetime import date as Date
from pathlib import Path
from typing import Any, Mapping, Optional

import orjson

from ..core.errors import InputError, PriorAuthError
from ..core.files import atomic_write
from ..core.resources import templates_dir

FORMATS = ("docx", "pdf", "html", "md")
KINDS = ("initial", "continuation", "appeal")
TEMPLATES = templates_dir()
WORDING = TEMPLATES / "letter-text.yaml"
BUILTIN = {"docx": "letter.docx", "pdf": "letter.typ", "html": "letter.html.j2", "md": "letter.md.j2"}
EXTENSIONS = {".docx": "docx", ".pdf": "pdf", ".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}
MET = "met"
MAX_CHART_MEASURES = 6

# Characters XML 1.0 cannot hold (a .docx would not open): dropped from every value.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# ------------------------------------------------------------------ small formatters


def us_date(value: Optional[Date]) -> Optional[str]:
    """2026-11-20 -> 11/20/2026 (the form US payer forms use)."""
    return value.strftime("%m/%d/%Y") if value else None


def long_date(value: Date) -> str:
    return f"{value.strftime('%B')} {value.day}, {value.year}"


def num(value: Any) -> Optional[str]:
    """136.0 -> '136', 27.25 -> '27.25', 4850 -> '4,850'; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    text = f"{float(value):,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def join_and(items: Any) -> str:
    items = [str(i) for i in items if i not in (None, "")]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def lcfirst(text: Any) -> str:
    """'Refractory to ...' -> 'refractory to ...', but 'IVIG ...' stays."""
    text = str(text)
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def md_escape(value: Any) -> Any:
    """A value made safe for Markdown: no markup, no HTML, no table breaks (`|`)."""
    if value is None:
        return ""
    if hasattr(value, "__html__"):  # Markup from the template itself: trusted
        return value
    text = re.sub(r"\s*\n\s*", " ", str(value))
    text = re.sub(r"([\\`*_{}\[\]<>|~&#])", r"\\\1", text)
    # What only matters at the start of a line (a list marker, heading, numbered item).
    text = re.sub(r"^([-+=])", r"\\\1", text)
    return re.sub(r"^(\d+)([.)])(?=\s|$)", r"\1\\\2", text)


def _clean_context(ctx: dict) -> dict:
    """The letter context without characters XML cannot hold.

    Nearly every context has none, and finding that out by walking ~300 values costs more
    than serialising the whole context once (orjson, ~10 us): in its output every such
    character is an escape (\\u00XX, \\b, \\f) or the raw bytes of U+FFFE / U+FFFF. A match
    (or an escaped backslash before b or f, a false alarm) takes the full walk. The context
    was built fresh by letter_context, so returning it shares nothing with the caller's data.
    """
    try:
        blob = orjson.dumps(ctx)
    except (TypeError, orjson.JSONEncodeError):  # not JSON (a lone surrogate...): walk it
        return _clean(ctx)
    if b"\\u00" in blob or b"\\b" in blob or b"\\f" in blob or b"\xef\xbf\xbe" in blob or b"\xef\xbf\xbf" in blob:
        return _clean(ctx)
    return ctx


def _clean(value: Any) -> Any:
    """Drop characters XML cannot hold, all through a context (a copy: it shares nothing)."""
    if isinstance(value, str):
        # Every such character is non-printable (category Cc or Cn), and isprintable() is
        # much cheaper than the substitution that most strings do not need.
        return value if value.isprintable() else _XML_INVALID.sub("", value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------ wording and Jinja


@functools.lru_cache(maxsize=4)
def _wording(path: Path, mtime: float) -> dict:
    from ..core.yamlio import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise PriorAuthError(f"{path}: expected a mapping of wording")
    return data


def wording() -> dict:
    """templates/letter-text.yaml, loaded once (reloaded when the file changes)."""
    try:
        mtime = WORDING.stat().st_mtime
    except OSError:
        raise PriorAuthError(f"{WORDING}: letter wording file not found") from None
    return _wording(WORDING, mtime)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


@functools.lru_cache(maxsize=8)
def _builtin_env(fmt: str, loader_dir: Path):
    """The environment of the built-in templates, kept so each template compiles once."""
    return jinja_env(fmt, loader_dir)


@functools.lru_cache(maxsize=1)
def _sandbox():
    from jinja2.sandbox import SandboxedEnvironment

    dict_attributes = frozenset(name for cls in dict.__mro__ for name in vars(cls))

    class Sandbox(SandboxedEnvironment):
        """The sandbox, with its most common step made cheap: `x.name` where x is a plain dict
        (every letter value is one) and `name` is not an attribute of dict is the item
        x["name"], which SandboxedEnvironment.getattr finds only after getattr() raised."""

        def getattr(self, obj: Any, attribute: str) -> Any:
            if type(obj) is dict and attribute not in dict_attributes:
                try:
                    return obj[attribute]
                except LookupError:
                    return self.undefined(obj=obj, name=attribute)
            return super().getattr(obj, attribute)

    return Sandbox


def jinja_env(fmt: str = "text", loader_dir: Optional[Path] = None):
    """A sandboxed, StrictUndefined Jinja environment escaping for `fmt` (html, md, docx, text)."""
    from jinja2 import FileSystemLoader, StrictUndefined

    env = _sandbox()(
        undefined=StrictUndefined,
        autoescape=fmt in ("html", "docx"),
        finalize=md_escape if fmt == "md" else _finalize,
        trim_blocks=fmt in ("html", "md"),
        lstrip_blocks=fmt in ("html", "md"),
        keep_trailing_newline=True,
        loader=FileSystemLoader(str(loader_dir)) if loader_dir else None,
    )
    env.filters.update(join_and=join_and, lcfirst=lcfirst, num=num, md=md_escape)
    return env


@functools.lru_cache(maxsize=1)
def _text_env():
    from jinja2.runtime import Context, missing

    env = jinja_env("text")
    globals_ = env.globals

    class SnippetContext(Context):
        """Looks names up in the snippet's own variables, then the letter context, then
        Jinja's globals: the order Template.render gives them, without merging the three
        into a new dict for each of the ~50 snippets of a letter."""

        def resolve_or_missing(self, key: str) -> Any:
            if key in self.vars:
                return self.vars[key]
            if key in self.parent:
                return self.parent[key]
            return globals_.get(key, missing)

    env.context_class = SnippetContext
    return env


@functools.lru_cache(maxsize=1024)
def _snippet(source: str):
    """A wording snippet, compiled once per process (keyed by its text)."""
    return _text_env().from_string(source)


def _say(source: Any, ctx: Mapping[str, Any], **extra: Any) -> str:
    """Render one wording snippet to plain text (whitespace collapsed)."""
    if source is None:
        return ""
    source = str(source)
    if "{" not in source:
        return source
    tpl = _snippet(source)
    env = tpl.environment
    # Template.render(ctx), minus its copies of the context: the snippet reads the letter
    # context itself (SnippetContext adds the globals), which no template can write into.
    context = env.context_class(env, {**ctx, **extra} if extra else ctx, tpl.name, tpl.blocks)
    try:
        text = env.concat(tpl.root_render_func(context))
    except Exception:
        from jinja2 import TemplateError

        try:
            env.handle_exception()  # as Template.render: re-raises, with the template's traceback
        except TemplateError as exc:
            raise PriorAuthError(f"{WORDING}: cannot render the wording {source[:60]!r}...: {exc}") from None
    # str.split() splits on what re's \s matches (str.isspace), without a regex per snippet
    return " ".join(text.split())


def _rows(spec: list, ctx: Mapping[str, Any]) -> list[dict]:
    out = []
    for label, value in spec:
        text = _say(value, ctx)
        if text:
            out.append({"label": label, "value": text})
    return out


# ------------------------------------------------------------------ denial (appeals)


def parse_denial(data: Any, source: str = "denial") -> dict:
    """Check a denial (reason, date, reference, criteria) -> plain dict; InputError names the field."""
    from ..core.codes import _iso_date

    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with reason, date, reference, criteria")
    unknown = sorted(set(data) - {"reason", "date", "reference", "criteria"})
    if unknown:
        raise InputError(f"{source}: {unknown[0]}: unknown field (expected reason, date, reference, criteria)")
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{source}: reason: the denial reason is required (text)")
    out: dict[str, Any] = {"reason": reason.strip(), "date": None, "reference": None, "criteria": []}
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
    return out


def load_denial(path: str | Path) -> dict:
    """A denial from a YAML or JSON file (keys reason, date, reference, criteria)."""
    from ..core.yamlio import parse_text, read_text

    text = read_text(Path(path))
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    return parse_denial(parse_text(text, str(path)), str(path))


# ------------------------------------------------------------------ the context


def _walk(result, ancestors: tuple = ()):
    yield result, ancestors
    for child in result.children:
        yield from _walk(child, ancestors + (result,))


_ISO_IN_TEXT = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")


_PLAIN = [
    (re.compile(r"\s*\((\d+) of \1 needed\)"), ""),                       # "(1 of 1 needed)": says nothing
    (re.compile(r"\((\d+) of (\d+) needed\)"), r"(\1 of the \2 the policy requires)"),
    (re.compile(r"\b1 finding\(s\)"), "1 finding"),
    (re.compile(r"\bfinding\(s\)"), "findings"),
    (re.compile(r"\bof an accepted kind\b"), "of a kind the policy accepts"),
    (re.compile(r"\bemg\b"), "EMG"),
    (re.compile(r"\bmri\b"), "MRI"),
    (re.compile(r"\b(\d+)\.0\b(?!\.\d)"), r"\1"),                         # "every 4.0 weeks", "2.0 g/kg"
    (re.compile(r"\b(\d{1,3})(\d{3})\b(?= ?(?:mg|U/L|g)\b)"), r"\1,\2"),   # "1000 mg" -> "1,000 mg"
    (re.compile(r"\((mg|U/L)\) (\d{1,3})(\d{3})\b"), r"(\1) \2,\3"),        # "dose (mg) 1000 within"
]


def plain(text: str) -> str:
    """The engine's sentences as a person writes them (no "(1 of 1 needed)", "4.0 weeks", "emg")."""
    for pattern, repl in _PLAIN:
        text = pattern.sub(repl, text)
    return text


def us_dates(text: Optional[str]) -> Optional[str]:
    """The determination's sentences say 2025-02-01; the letter says 02/01/2025 throughout, in plain words."""
    return plain(_ISO_IN_TEXT.sub(r"\2/\3/\1", text)) if text else text


def _reason_and_evidence(reason: str, evidence: list[str]) -> dict:
    """Say each thing once: evidence the reason already quotes is not repeated as a bullet,
    and a reason that only lists several pieces of evidence keeps its lead-in, the bullets the rest."""
    quoted = [e for e in evidence if e and e in reason]
    if len(evidence) >= 2 and len(quoted) == len(evidence):
        lead = reason[:min(reason.index(e) for e in evidence)].rstrip(" :;,")
        if lead:
            reason = lead
            quoted = []
    return {"reason": us_dates(reason), "evidence": [us_dates(e) for e in evidence if e not in quoted]}


def _criterion(r, ancestors, policy) -> dict:
    src = policy.sources.get(r.node.source) if policy and r.node.source else None
    pathway = next((a.node for a in (*ancestors, r) if getattr(a.node, "pathway", False)), None)
    return {
        "id": r.node.id,
        "label": r.node.label,
        **_reason_and_evidence(r.reason, [e.summary for e in r.evidence]),
        "citation": src.citation if src else None,
        "url": src.url if src else None,
        "pathway": pathway.label if pathway is not None else None,
    }


def _in_unmet_alternative(r, ancestors: tuple) -> bool:
    """Is this node inside an alternative (child of any_of / at_least) that is not met as a whole?

    A met leaf of an unmet pathway (a drug being taken, in a rapidly-progressive pathway whose
    course is not rapidly progressive) proves nothing and is not shown as a criterion met.
    """
    chain = (*ancestors, r)
    return any(not hasattr(parent.node, "all_of") and child.status != MET
               for parent, child in zip(chain, chain[1:]))


def _met_leaves(result, policy) -> list[dict]:
    if result is None:
        return []
    return [_criterion(r, anc, policy) for r, anc in _walk(result)
            if r.status == MET and not r.children and not _in_unmet_alternative(r, anc)]


def _therapy_vocabulary(vocabulary):
    return vocabulary if vocabulary is not None else _default_vocabulary()


@functools.lru_cache(maxsize=1)
def _default_vocabulary():
    from ..criteria.policy import load_criteria

    return load_criteria().vocabulary


def _is_requested_therapy(t, referral, drug_class: str, vocabulary) -> bool:
    from ..criteria.policy import name_key

    if name_key(t.drug) == name_key(referral.request.product):
        return True
    generic = vocabulary.generic(t.drug) if vocabulary is not None else None
    return bool(generic) and vocabulary.in_class(generic, drug_class, t.route)


def _change(baseline: float, latest: float, better: Optional[str]) -> str:
    if latest == baseline:
        return "unchanged"
    if better not in ("lower", "higher"):
        return "changed"
    return "improved" if (latest < baseline) == (better == "lower") else "worse"


def _continuation(referral, words: dict, vocabulary, therapy_short: str) -> dict:
    drug_class = words["therapy"][referral.request.therapy]["drug_class"]
    courses = [t for t in referral.treatments if _is_requested_therapy(t, referral, drug_class, vocabulary)]
    starts = [t.start_date for t in courses if t.start_date]
    first = min(starts) if starts else None
    groups: "OrderedDict[str, list]" = OrderedDict()
    for a in referral.assessments:
        groups.setdefault(a.measure, []).append(a)
    measures, series, improved = [], [], []
    for key, points in groups.items():
        points = sorted(points, key=lambda a: a.date)
        meta = words.get("measures", {}).get(key) or {}
        label = meta.get("label") or key.replace("_", " ")
        unit = next((p.unit for p in reversed(points) if p.unit), None) or ""
        if first is not None:
            before = [p for p in points if p.date <= first]
            baseline = before[-1] if before else None
        else:
            baseline = points[0]
        latest = points[-1] if points[-1] is not baseline else None
        row = {"key": key, "label": label, "unit": unit,
               "baseline": num(baseline.value) if baseline else None,
               "baseline_date": us_date(baseline.date) if baseline else None,
               "latest": num(latest.value) if latest else None,
               "latest_date": us_date(latest.date) if latest else None,
               "change": None, "change_percent": None, "verdict": None}
        if baseline and latest:
            delta = latest.value - baseline.value
            verdict = _change(baseline.value, latest.value, meta.get("better"))
            row["change"] = ("+" if delta > 0 else "") + num(delta)
            if baseline.value:
                row["change_percent"] = f"{'+' if delta > 0 else ''}{round(100 * delta / abs(baseline.value))}%"
            row["verdict"] = words.get("change", {}).get(verdict, verdict)
            if verdict == "improved":
                u = f" {unit}" if unit else ""
                improved.append(f"{lcfirst(label)} from {num(baseline.value)}{u} to {num(latest.value)}{u}")
        measures.append(row)
        if len(points) >= 3:  # two points are a change, not a trend: the table says it
            series.append({"key": key, "label": label, "unit": unit,
                           "points": [[p.date.isoformat(), p.value, us_date(p.date), num(p.value)] for p in points]})
    return {
        "first_course": us_date(first),
        "first_course_iso": first.isoformat() if first else None,
        "has_baseline": first is not None,
        "courses": [{"drug": t.drug, "dose": t.dose, "start_date": us_date(t.start_date),
                     "end_date": us_date(t.end_date)} for t in courses],
        "measures": measures,
        "improved": improved,
        "series": series[:MAX_CHART_MEASURES],
        "therapy_short": therapy_short,
    }


def _appeal(denial: dict, det, policy) -> dict:
    result = det.result
    found = {r.node.id: (r, anc) for r, anc in _walk(result)} if result is not None else {}
    points = []
    for i, cid in enumerate(denial["criteria"]):
        if cid not in found:
            known = ", ".join(found) or "none: no policy applies"
            raise InputError(f"denial criteria[{i}]: {cid!r} is not a criterion of the policy "
                             f"(its criteria: {known})")
        r, anc = found[cid]
        point = _criterion(r, anc, policy)
        if r.status == MET:
            point["answer"] = "appeal_met"
            point["support"] = _met_leaves(r, policy) if r.children else [dict(point)]
        else:
            alt = next((a for a in reversed(anc) if hasattr(a.node, "any_of") and a.status == MET), None)
            if alt is not None:
                point["answer"] = "appeal_alternative"
                point["support"] = _met_leaves(alt, policy)
            else:
                point["answer"] = "appeal_open"
                point["support"] = [dict(point)]
        points.append(point)
    if not denial["criteria"]:
        # The denial names no criterion: answer with every criterion the record meets.
        for item in _met_leaves(result, policy):
            points.append({**item, "answer": "appeal_met", "support": [dict(item)]})
    return {**denial, "date_iso": denial["date"],
            "date": us_date(Date.fromisoformat(denial["date"])) if denial["date"] else None,
            "points": points}


def letter_context(referral, determination, kind: str = "initial", draft: bool = False,
                   denial: Optional[Mapping[str, Any]] = None, *, vocabulary=None, words: Optional[dict] = None) -> dict:
    """Everything a letter says, as a plain JSON-able dict (strings, numbers, lists, dicts).

    `denial` (appeals): {reason, date?, reference?, criteria?: [criterion ids]}.
    `vocabulary` (criteria's drug vocabulary) finds earlier courses of the requested therapy
    for a continuation letter; by default the bundled criteria's.
    """
    if kind not in KINDS:
        raise InputError(f"letter kind {kind!r}: expected one of {', '.join(KINDS)}")
    det, ref = determination, referral
    if kind == "appeal" and not denial:
        raise InputError("an appeal letter needs the denial: --denial FILE, or --denial-reason")
    words = words if words is not None else wording()
    req, pat, cov, pres = ref.request, ref.patient, ref.coverage, ref.prescriber
    policy = det.policy
    d = det.dosing or {}
    therapy = words["therapy"][req.therapy]

    def weeks(t) -> Optional[str]:
        if not t.start_date:
            return None
        return num(round(((t.end_date or ref.date) - t.start_date).days / 7, 1))

    ig = req.therapy != "rituximab"
    cycles, grams, units = req.cycles, d.get("grams_per_cycle"), d.get("billing_units_per_cycle")
    doses, units_dose = req.doses, d.get("billing_units_per_dose")
    request = {
        "therapy": req.therapy,
        "therapy_name": therapy["name"],
        "therapy_short": therapy["short"],
        "is_rituximab": not ig,
        "product": d.get("product") or req.product,
        "hcpcs": d.get("hcpcs"),
        # The determination's dosing names the unit for IVIG; for rituximab the wording file does.
        "billing_unit": d.get("billing_unit") or (therapy.get("billing_unit") if d.get("hcpcs") else None),
        "request_type": req.request_type,
        "dose_g_per_kg": num(req.dose_g_per_kg),
        "dosing_weight_kg": num(d.get("dosing_weight_kg")),
        "weight_basis": d.get("weight_basis"),
        "bmi": num(d.get("bmi")),
        "ideal_body_weight_kg": num(d.get("ideal_body_weight_kg")),
        "actual_weight_kg": num(pat.weight_kg),
        "grams_per_cycle": num(grams),
        "grams_per_day": num(d.get("grams_per_day")),
        "billing_units_per_cycle": num(units),
        "days_per_cycle": num(req.days_per_cycle),
        "interval_weeks": num(req.interval_weeks),
        "cycles": num(cycles),
        "total_grams": num(round(grams * cycles, 1)) if grams and cycles else None,
        "total_units": (num(units * cycles) if ig and units and cycles
                        else num(units_dose * doses) if units_dose and doses else None),
        "dose_mg": num(req.dose_mg),
        "doses": num(doses),
        "billing_units_per_dose": num(units_dose),
        "total_mg": num(req.dose_mg * doses) if req.dose_mg and doses else None,
        "site_of_care": words["site_of_care"].get(req.site_of_care, req.site_of_care) if req.site_of_care else None,
        "start_date": us_date(req.start_date),
    }
    covered = next((r for r, _ in _walk(det.result) if r.node.id == "diagnosis_covered"), None) if det.result else None
    idx = next((e.index for e in covered.evidence if e.kind == "diagnosis"), 0) if covered and covered.evidence else 0
    primary = ref.diagnoses[idx if idx is not None and idx < len(ref.diagnoses) else 0]
    finding_words = words["findings"]
    ctx: dict[str, Any] = {
        "kind": kind,
        "draft": bool(draft),
        "ready": det.determination == "meets_criteria",
        "determination": det.determination,
        "referral_id": ref.referral_id,
        "missing": [us_dates(m) for m in det.missing],
        "reasons": [us_dates(r) for r in det.reasons()],
        "warnings": list(det.warnings),
        "safety": [dict(s) for s in getattr(det, "safety", None) or []],
        "letter_date": long_date(ref.date),
        "letter_date_iso": ref.date.isoformat(),
        "patient": {
            "name": f"{pat.given_name} {pat.family_name}",
            "given_name": pat.given_name,
            "family_name": pat.family_name,
            "birth_date": us_date(pat.birth_date),
            "birth_date_iso": pat.birth_date.isoformat(),
            "age": ref.date.year - pat.birth_date.year
                   - ((ref.date.month, ref.date.day) < (pat.birth_date.month, pat.birth_date.day)),
            "sex": pat.sex,
            "weight_kg": num(pat.weight_kg),
            "height_cm": num(pat.height_cm),
        },
        "prescriber": {
            "name": pres.name, "npi": pres.npi,
            "specialty": pres.specialty[:1].upper() + pres.specialty[1:] if pres.specialty else None,
            "organization": pres.organization, "phone": pres.phone, "fax": pres.fax, "address": pres.address,
        },
        "payer": {"key": cov.payer, "name": cov.plan_name or cov.payer.replace("-", " ").replace("_", " ").title(),
                  "plan_name": cov.plan_name, "member_id": cov.member_id, "group_number": cov.group_number},
        "request": request,
        "diagnoses": [{"code": dx.code, "description": dx.description, "onset_date": us_date(dx.onset_date)}
                      for dx in ref.diagnoses],
        "primary_diagnosis": {"code": primary.code, "description": primary.description,
                              "text": f"{primary.description} ({primary.code})" if primary.description else primary.code},
        "confirmation": [{"kind": f.kind, "label": finding_words.get(f.kind, {}).get("label", f.kind),
                          "date": us_date(f.date), "result": f.result}
                         for f in ref.findings if f.supports_diagnosis],
        "treatments": [{"drug": t.drug, "route": words["route"].get(t.route, t.route) if t.route else None,
                        "dose": t.dose, "start_date": us_date(t.start_date),
                        "end_date": us_date(t.end_date) if t.end_date else ("ongoing" if t.start_date else None),
                        "weeks": weeks(t),
                        "outcome": words["outcome"].get(t.outcome, t.outcome) if t.outcome else None,
                        "details": t.details} for t in ref.treatments],
        "contraindications": [{"what": c.drug or (c.drug_class or "").replace("_", " "), "reason": c.reason,
                               "date": us_date(c.documented_date)} for c in ref.contraindications],
        "policy": {"found": policy is not None,
                   "id": policy.id if policy else None, "title": policy.title if policy else None,
                   "version": policy.version if policy else None, "payer": policy.payer if policy else None,
                   "effective": us_date(policy.effective) if policy else None},
        "pathways": [{"id": r.node.id, "label": r.node.label}
                     for r, _ in (_walk(det.result) if det.result else ())
                     if getattr(r.node, "pathway", False) and r.status == MET],
        "criteria": _met_leaves(det.result, policy),
        "met_ids": [r.node.id for r, _ in (_walk(det.result) if det.result else ()) if r.status == MET],
        "literature": [{"citation": policy.sources[k].citation, "url": policy.sources[k].url}
                       for k in (policy.literature if policy else []) if k in policy.sources],
        "labs": {},
        "authorization": None,
        "continuation": None,
        "appeal": None,
        "chart": None,
        "dosing": dict(det.dosing) if det.dosing else None,
    }
    latest: dict[str, Any] = {}
    for a in sorted(ref.assessments, key=lambda a: a.date):
        latest[a.measure] = f"{num(a.value)}{' ' + a.unit if a.unit else ''} on {us_date(a.date)}"
    ctx["labs"] = latest
    auth = det.authorization()
    if isinstance(auth, dict):
        ctx["authorization"] = {
            k: (us_date(Date.fromisoformat(v)) if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) else v)
            for k, v in auth.items()}
        ctx["authorization"].setdefault("months", None)
    if kind == "continuation":
        ctx["continuation"] = _continuation(ref, words, _therapy_vocabulary(vocabulary), therapy["short"])
    if kind == "appeal":
        denial = parse_denial(dict(denial), "denial")
        if denial["date"] and Date.fromisoformat(denial["date"]) > ref.date:
            raise InputError("denial date: after the referral date, which dates the letter; "
                             "update the referral's date to the day of the appeal")
        ctx["appeal"] = _appeal(denial, det, policy)

    # Wording, in stages: later snippets use what earlier ones produced.
    request["weight_basis_text"] = _say(words["weight_basis"].get(request["weight_basis"] or "", ""), ctx)
    request["summary"] = _say(words["request_summary"][req.therapy], ctx)
    request["rows"] = _rows(words["request_rows"][req.therapy], ctx)
    ctx["re_rows"] = _rows(words["re_rows"], ctx)
    ctx["letterhead"] = {"name": pres.organization or pres.name,
                         "lines": [t for t in (_say(s, ctx) for s in words["letterhead"]) if t]}
    ctx["recipient"] = [t for t in (_say(s, ctx) for s in words["recipient"]) if t]
    code = primary.code
    measures_by_code = words["response_measures_by_code"]
    ctx["monitoring_measures"] = measures_by_code[max((p for p in measures_by_code if code.startswith(p)), key=len)]
    extra = words.get("monitoring_by_code", {}).get(req.therapy, {})
    ctx["monitoring"] = [_say(s, ctx) for s in words["monitoring"][req.therapy]
                         + [item for prefix, items in extra.items() if code.startswith(prefix) for item in items]]
    para = words["paragraphs"]
    ctx["text"] = {
        "title": _say(words["title"][kind], ctx),
        "subject": _say(words["subject"][kind], ctx),
        "salutation": _say(words["salutation"], ctx),
        "opening": _say(para["opening"][kind], ctx),
        "closing": _say(para["closing"][kind], ctx),
        **{k: _say(para[k], ctx) for k in ("criteria_intro", "literature_intro", "attestation",
                                            "draft_banner", "draft_notice", "chart_caption", "chart_omitted")},
        "response_intro": _say(para["response_intro"], ctx) if kind == "continuation" else "",
        "no_prior_course": _say(para["no_prior_course"], ctx) if kind == "continuation" else "",
        "appeal_intro": _say(para["appeal_intro"], ctx) if kind == "appeal" else "",
    }
    if ctx["appeal"]:
        for p in ctx["appeal"]["points"]:
            p["answer"] = _say(para[p["answer"]], ctx)
    ctx["enclosures"] = _enclosures(ref, ctx, words)
    ctx["signature"] = {"name": pres.name, "specialty": ctx["prescriber"]["specialty"], "npi": pres.npi,
                        "organization": pres.organization, "date": ctx["letter_date"]}
    return _clean_context(ctx)


def _enclosures(ref, ctx: dict, words: dict) -> list[str]:
    enc = words["enclosures"]
    out = [_say(enc["order"], ctx), _say(enc["clinic_note"], ctx)]
    for f in ref.findings:
        if f.supports_diagnosis:
            name = words["findings"].get(f.kind, {}).get("enclosure", f.kind.replace("_", " "))
            out.append(f"{name}{', ' + us_date(f.date) if f.date else ''}")
    if ref.assessments:
        labels = list(dict.fromkeys((words["measures"].get(a.measure) or {}).get("label") or a.measure
                                    for a in ref.assessments))
        out.append(_say(enc["assessments"], ctx, measures=labels))
    if ref.treatments:
        out.append(_say(enc["treatments"], ctx, drugs=list(dict.fromkeys(t.drug for t in ref.treatments))))
    if ref.contraindications:
        out.append(_say(enc["contraindications"], ctx, items=[c["what"] for c in ctx["contraindications"]]))
    if ctx["kind"] in ("continuation", "appeal"):
        out.append(_say(enc[ctx["kind"]], ctx))
    return list(dict.fromkeys(t for t in out if t))


# ------------------------------------------------------------------ the chart


def chart_png(context: Mapping[str, Any]) -> Optional[bytes]:
    """PNG of each measure's trend (small multiples), or None with nothing to plot."""
    cont = context.get("continuation") or {}
    series = cont.get("series") or []
    if not series:
        return None
    # The Agg canvas directly, without pyplot: no global backend switch, no shared state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    n = len(series)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.6, 1.9 * rows + 0.2), dpi=150)
    FigureCanvasAgg(fig)
    start = Date.fromisoformat(cont["first_course_iso"]) if cont.get("first_course_iso") else None
    label = cont.get("therapy_short") or "therapy"
    for i, s in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = [Date.fromisoformat(p[0]) for p in s["points"]]
        ys = [p[1] for p in s["points"]]
        ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.5, color="#1f4e79")
        if start is not None:
            ax.axvline(start, color="#c00000", linestyle="--", linewidth=1)
            ax.annotate(f"{label} start", xy=(start, 0), xycoords=("data", "axes fraction"),
                        xytext=(3, 3), textcoords="offset points", fontsize=6.5, color="#c00000")
        title = s["label"] + (f" ({s['unit']})" if s["unit"] else "")
        ax.set_title(title, fontsize=8, loc="left")
        locator = AutoDateLocator(maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.tick_params(labelsize=6.5)
        ax.xaxis.get_offset_text().set_fontsize(6.5)
        ax.grid(True, linewidth=0.3, alpha=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.margins(y=0.15)
    # Fixed margins in inches (tight_layout would draw the figure twice: +0.4 s a chart).
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.3 / height, bottom=0.45 / height,
                        hspace=0.75 / 1.3, wspace=0.22)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ------------------------------------------------------------------ rendering


def template_path(fmt: str, template: Optional[str | Path] = None) -> Path:
    return Path(template) if template else TEMPLATES / BUILTIN[fmt]


def _template_error(exc: BaseException, template: Path, custom: bool) -> PriorAuthError:
    """A template failure as an error naming the template; never a value from the referral."""
    from jinja2 import TemplateError

    line = getattr(exc, "lineno", None)
    where = f"{template}" + (f": line {line}" if line and not str(template).endswith(".docx") else "")
    if isinstance(exc, TemplateError):
        what = getattr(exc, "message", None) or type(exc).__name__
    else:
        what = f"{type(exc).__name__} while rendering"
    if custom:
        return InputError(f"{where}: {what}")
    return PriorAuthError(f"{where}: built-in template failed: {what}")


def render_text(ctx: Mapping[str, Any], fmt: str, template: Optional[str | Path] = None, assets=None) -> bytes:
    """HTML or Markdown through Jinja2; `template` None is the built-in one (from `assets`, a Letters)."""
    from jinja2 import TemplateError

    custom = template is not None
    assets = assets if assets is not None else default_letters()
    template = Path(template) if custom else assets.dir / BUILTIN[fmt]

    env = jinja_env(fmt) if custom else assets.text_env(fmt)
    data = dict(ctx)
    png = chart_png(ctx) if fmt == "html" else None
    if png:
        import base64

        data["chart"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    try:
        if custom:
            from ..core.yamlio import read_text

            tpl = env.from_string(read_text(template))
        else:
            tpl = env.get_template(template.name)
        return tpl.render(data).encode("utf-8")
    except TemplateError as exc:
        raise _template_error(exc, template, custom) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise _template_error(exc, template, custom) from None


def render_docx(ctx: Mapping[str, Any], template: Optional[str | Path] = None, assets=None) -> bytes:
    """DOCX through docxtpl; `template` None is the built-in one (read once by `assets`, a Letters)."""
    custom = template is not None
    assets = assets if assets is not None else default_letters()
    from docx.shared import Mm
    from docxtpl import DocxTemplate, InlineImage
    from jinja2 import TemplateError

    if custom:
        template = Path(template)
        try:
            raw = template.read_bytes()
        except OSError as exc:
            raise InputError(f"{template}: cannot read: {exc.strerror}") from None
    else:
        template, raw = assets.dir / BUILTIN["docx"], assets.docx
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise (InputError if custom else PriorAuthError)(f"{template}: not a .docx file (a DOCX template is needed for docx and pdf)")
    tpl = DocxTemplate(io.BytesIO(raw))
    png = chart_png(ctx)
    data = docx_data(ctx, InlineImage(tpl, io.BytesIO(png), width=Mm(165)) if png else None)
    try:
        tpl.render(data, jinja_env("docx"), autoescape=True)
    except TemplateError as exc:
        raise _template_error(exc, template, custom) from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, zipfile.BadZipFile) as exc:
        raise _template_error(exc, template, custom) from None
    buf = io.BytesIO()
    tpl.save(buf)
    return normalize_zip(buf.getvalue(), ctx.get("letter_date_iso"))


def has_chart(ctx: Mapping[str, Any]) -> bool:
    """Does the letter carry a trend chart (chart_png draws one)? Then its DOCX has an image part."""
    return bool((ctx.get("continuation") or {}).get("series"))


def docx_data(ctx: Mapping[str, Any], chart: Any = None) -> dict:
    """What the DOCX template renders: the letter context, and `chart` (an InlineImage or None)."""
    data = dict(ctx)
    data["chart"] = chart
    return data


def zip_date(as_of: Optional[str]) -> tuple:
    """The date of every entry of a letter's .docx: the letter's date (never the clock), as a
    zip date_time; zip dates start in 1980."""
    when = Date.fromisoformat(as_of) if as_of else Date(1980, 1, 1)
    return (max(when.year, 1980), when.month, when.day, 0, 0, 0)


def normalize_zip(data: bytes, as_of: Optional[str]) -> bytes:
    """Rewrite a .docx with every entry dated the letter's date (not the clock): same input, same bytes."""
    from .docx_fast import deflate_level

    stamp = zip_date(as_of)
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=stamp)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            part = src.read(info.filename)
            dst.writestr(entry, part, compresslevel=deflate_level(len(part)))
    return out.getvalue()


def render_context(context: Mapping[str, Any], fmt: str, template: Optional[str | Path] = None, assets=None) -> bytes:
    """A letter context (letter_context) -> bytes of the letter in `fmt` (the formats registry)."""
    from . import formats

    if context.get("kind") == "p2p" and fmt != "pdf":
        raise InputError(f"the peer-to-peer sheet is a one-page PDF: use --format pdf, not {fmt}")
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    spec = formats.get(fmt)
    if template is not None:
        path = Path(template)
        suffix = path.suffix.lower()
        if spec.template_suffixes and suffix not in spec.template_suffixes:
            raise InputError(f"{path}: a {fmt} letter needs a {' or '.join(spec.template_suffixes)} template")
        if not spec.template_suffixes and suffix in (".docx", ".typ"):
            raise InputError(f"{path}: a {fmt} letter needs a text (Jinja2) template, not a {suffix}")
        return spec.render(context, path, assets)
    return spec.render(context, None, assets)


def render_letter(referral, determination, fmt: str, kind: str = "initial", draft: bool = False,
                  template: Optional[str | Path] = None, denial: Optional[Mapping[str, Any]] = None,
                  *, vocabulary=None, templates: Optional[str | Path] = None) -> bytes:
    """The letter as bytes in `fmt` (docx, pdf, html, md); `template` replaces the built-in one,
    `templates` is another templates folder (default: the bundled one, or $PRIORAUTH_TEMPLATES)."""
    return letters_for(templates).render(referral, determination, fmt, kind=kind, draft=draft, template=template,
                                         denial=denial, vocabulary=vocabulary)


class Letters:
    """Templates and wording read once, from one templates folder; rendering reads no file after.

    (Typst keeps the .typ sources and the fonts in its compiler, made once per template.)
    """

    TEXT = ("html", "md")

    def __init__(self, templates: Optional[str | Path] = None):
        from ..core.yamlio import read_yaml

        self.dir = Path(templates_dir(templates))
        if not self.dir.is_dir():
            raise InputError(f"{self.dir}: templates folder not found")
        wording_file = self.dir / "letter-text.yaml"
        if not wording_file.is_file():
            raise InputError(f"{wording_file}: letter wording file not found in the templates folder")
        self.words = read_yaml(wording_file)
        if not isinstance(self.words, dict):
            raise PriorAuthError(f"{wording_file}: expected a mapping of wording")
        try:
            self.docx = (self.dir / BUILTIN["docx"]).read_bytes()
            self.sources = {fmt: (self.dir / BUILTIN[fmt]).read_text(encoding="utf-8") for fmt in self.TEXT}
        except OSError as exc:
            raise InputError(f"{exc.filename}: template missing from the templates folder ({exc.strerror})") from None
        for name in ("letter.typ", "letter-body.typ", "common.typ", "packet.typ", "p2p.typ", "stamp.typ"):
            if not (self.dir / name).is_file():
                raise InputError(f"{self.dir / name}: template missing from the templates folder")
        self._envs: dict[str, Any] = {}

    def text_env(self, fmt: str):
        env = self._envs.get(fmt)
        if env is None:
            from jinja2 import DictLoader

            env = jinja_env(fmt)
            env.loader = DictLoader({BUILTIN[fmt]: self.sources[fmt]})
            self._envs[fmt] = env
        return env

    def context(self, referral, determination, kind: str = "initial", draft: bool = False,
                denial: Optional[Mapping[str, Any]] = None, *, vocabulary=None) -> dict:
        if kind == "p2p":
            from .p2p import p2p_context

            return p2p_context(referral, determination, draft=draft, denial=denial, vocabulary=vocabulary,
                               words=self.words)
        return letter_context(referral, determination, kind=kind, draft=draft, denial=denial,
                              vocabulary=vocabulary, words=self.words)

    def render_context(self, ctx: Mapping[str, Any], fmt: str, template: Optional[str | Path] = None) -> bytes:
        return render_context(ctx, fmt, template, assets=self)

    def render(self, referral, determination, fmt: str, kind: str = "initial", draft: bool = False,
               template: Optional[str | Path] = None, denial: Optional[Mapping[str, Any]] = None,
               *, vocabulary=None) -> bytes:
        if fmt not in FORMATS:
            raise InputError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
        ctx = self.context(referral, determination, kind=kind, draft=draft, denial=denial, vocabulary=vocabulary)
        return self.render_context(ctx, fmt, template)

    def packet(self, determination, *, kind: Optional[str] = None, denial: Optional[Mapping[str, Any]] = None,
               attachments=(), draft: bool = False, payer_fax: Optional[str] = None) -> bytes:
        from .packet import render_packet

        return render_packet(determination, kind=kind, denial=denial, attachments=attachments, draft=draft,
                             payer_fax=payer_fax, letters=self)


@functools.lru_cache(maxsize=8)
def _letters(root: str) -> Letters:
    return Letters(root)


def letters_for(templates: Optional[str | Path] = None) -> Letters:
    """The prepared Letters of a templates folder (default: $PRIORAUTH_TEMPLATES or the bundled one)."""
    return _letters(str(templates_dir(templates)))


def default_letters() -> Letters:
    return letters_for(None)


def write_letter(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write a rendered letter atomically, mode 0600; an existing file needs force=True."""
    return atomic_write(path, data, force=force)


def format_for(path: str | Path, fmt: Optional[str] = None) -> str:
    """The format asked for, or the one the output's extension names; InputError when neither works."""
    ext = Path(path).suffix.lower()
    implied = EXTENSIONS.get(ext)
    if fmt is None:
        if implied is None:
            raise InputError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}: "
                             f"use --format ({', '.join(FORMATS)}) or a .docx/.pdf/.html/.md name")
        return implied
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if implied is not None and implied != fmt:
        raise InputError(f"{path}: the extension {ext} says {implied}, but --format is {fmt}")
    return fmt
