"""Wording of the letters: small formatters, the Jinja sandbox, and the snippets of
`templates/letter-text.yaml` rendered to plain text against the letter context."""

from __future__ import annotations

import functools
import re
from datetime import date as Date
from pathlib import Path
from typing import Any, Mapping, Optional

import orjson

from ..core.errors import PriorAuthError
from ..core.resources import templates_dir

TEMPLATES = templates_dir()
WORDING = TEMPLATES / "letter-text.yaml"

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
    # Each search for a longer needle is a pass over the ~14 KB; one byte ("\\", the lead byte
    # of U+F000-U+FFFF) is memchr, and letters rarely have either: the longer ones only then.
    if (b"\\" in blob and (b"\\u00" in blob or b"\\b" in blob or b"\\f" in blob)) or \
            (b"\xef" in blob and (b"\xef\xbf\xbe" in blob or b"\xef\xbf\xbf" in blob)):
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


def jinja_env(fmt: str = "text", loader_dir: Optional[Path] = None, cls: Any = None):
    """A sandboxed, StrictUndefined Jinja environment escaping for `fmt` (html, md, docx, text);
    `cls` another sandbox class (sandbox.bounded_env: the one for a user's templates)."""
    from jinja2 import FileSystemLoader, StrictUndefined

    env = (cls or _sandbox())(
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
            out.append({"label": _say(label, ctx), "value": text})
    return out
