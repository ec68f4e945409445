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
import zipfile
from datetime import date as Date
from pathlib import Path
from typing import Any, Mapping, Optional


from ..core.errors import InputError, PriorAuthError
from ..core.files import atomic_write
from ..core.resources import templates_dir

from .context import (KINDS, MAX_CHART_MEASURES, MET, _appeal, _continuation, _criterion, _met_leaves,  # noqa: F401
                      _walk, letter_context, plain, us_dates)
from .denial import load_denial, parse_denial  # noqa: F401
from .wording import (TEMPLATES, WORDING, _XML_INVALID, _clean, _clean_context, _rows, _say,  # noqa: F401
                      jinja_env, join_and, lcfirst, long_date, md_escape, num, us_date, wording)

FORMATS = ("docx", "pdf", "html", "md")
BUILTIN = {"docx": "letter.docx", "pdf": "letter.typ", "html": "letter.html.j2", "md": "letter.md.j2"}
EXTENSIONS = {".docx": "docx", ".pdf": "pdf", ".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


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

    from .sandbox import TemplateBoundsError

    if isinstance(exc, TemplateBoundsError):  # its message names the template and the limit
        return InputError(exc.message)
    if isinstance(exc, RecursionError):
        exc = TemplateError("nested too deeply (a macro that calls itself without end?)")
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

    if custom:
        from .sandbox import bounded_env

        env = bounded_env(fmt, template)
    else:
        env = assets.text_env(fmt)
    user = custom or assets.user  # a user's template (or templates folder): its errors are exit 2
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
        raise _template_error(exc, template, user) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
            RecursionError) as exc:
        raise _template_error(exc, template, user) from None


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
    custom = custom or assets.user
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise (InputError if custom else PriorAuthError)(f"{template}: not a .docx file (a DOCX template is needed for docx and pdf)")
    tpl = DocxTemplate(io.BytesIO(raw))
    png = chart_png(ctx)
    data = docx_data(ctx, InlineImage(tpl, io.BytesIO(png), width=Mm(165)) if png else None)
    try:
        tpl.render(data, letter_env("docx", template, custom), autoescape=True)
    except TemplateError as exc:
        raise _template_error(exc, template, custom) from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, zipfile.BadZipFile, OverflowError,
            RecursionError) as exc:
        raise _template_error(exc, template, custom) from None
    buf = io.BytesIO()
    tpl.save(buf)
    return normalize_zip(buf.getvalue(), ctx.get("letter_date_iso"))


def letter_env(fmt: str, template: str | Path, user: Optional[bool] = None):
    """The Jinja environment for `template`: bounded (sandbox.bounded_env) when it is a user's
    (`user`, or by default: not in the bundled templates folder), else the plain sandbox."""
    from .sandbox import bounded_env, is_bundled

    if user is None:
        user = not is_bundled(template)
    return bounded_env(fmt, template) if user else jinja_env(fmt)


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
        from .content import appeals_table

        # Appeal levels, deadlines and departments (templates/appeals.yaml; the bundled one if absent).
        self.words = {**self.words, "appeals": appeals_table(self.dir)}
        try:
            self.docx = (self.dir / BUILTIN["docx"]).read_bytes()
            self.sources = {fmt: (self.dir / BUILTIN[fmt]).read_text(encoding="utf-8") for fmt in self.TEXT}
        except OSError as exc:
            raise InputError(f"{exc.filename}: template missing from the templates folder ({exc.strerror})") from None
        for name in ("letter.typ", "letter-body.typ", "common.typ", "packet.typ", "p2p.typ", "stamp.typ"):
            if not (self.dir / name).is_file():
                raise InputError(f"{self.dir / name}: template missing from the templates folder")
        self._envs: dict[str, Any] = {}
        from .sandbox import is_bundled

        self.user = not is_bundled(self.dir)  # a user's templates folder: rendered within bounds

    def text_env(self, fmt: str):
        env = self._envs.get(fmt)
        if env is None:
            from jinja2 import DictLoader

            env = letter_env(fmt, self.dir / BUILTIN[fmt], self.user)
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
