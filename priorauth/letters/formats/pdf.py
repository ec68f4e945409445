"""PDF through Typst (the `typst` package carries the compiler): no office suite.

The letter context goes to the Typst template as JSON data (`sys.inputs.ctx`), never spliced
into markup, so nothing a referral says can become Typst code. Fonts are the ones Typst embeds
(Libertinus Serif, DejaVu Sans Mono) plus those shipped in `templates/fonts/`; system fonts
are ignored, so every machine makes the same PDF. The PDF's date is the letter's date.
"""

from __future__ import annotations

import threading
from datetime import date as Date, datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

from ...core.errors import InputError, PriorAuthError
from . import Format, register

_compilers: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _json(ctx: Mapping[str, Any]) -> str:
    import orjson

    return orjson.dumps(ctx).decode("utf-8")


def timestamp(as_of: Optional[str]) -> int:
    when = Date.fromisoformat(as_of) if as_of else Date(1980, 1, 1)
    return int(datetime.combine(when, datetime.min.time(), timezone.utc).timestamp())


def compiler(main: Path, fonts: Optional[Path] = None):
    """A Typst compiler for one template, made once per process (it keeps its fonts and sources)."""
    import typst

    key = (str(main), str(fonts))
    with _lock:
        comp = _compilers.get(key)
        if comp is None:
            font_dir = fonts if fonts is not None else main.parent / "fonts"
            comp = typst.Compiler(str(main), root=str(main.parent),
                                  font_paths=[str(font_dir)] if font_dir.is_dir() else [],
                                  ignore_system_fonts=True)
            _compilers[key] = comp
    return comp


def compile_typst(main: Path, ctx: Mapping[str, Any], *, custom: bool = False, fonts: Optional[Path] = None,
                  extra: Optional[Mapping[str, str]] = None) -> bytes:
    """Compile `main` with the context as data; a failure names the template, never a value."""
    import typst

    if not main.is_file():
        raise (InputError if custom else PriorAuthError)(f"{main}: template not found")
    inputs = {"ctx": _json(ctx), **(extra or {})}
    from ..sandbox import compile_typst_bounded, is_bundled

    if custom or not is_bundled(main):
        # a user's template: in its own process, with a time and memory limit (sandbox.py)
        font_dir = fonts if fonts is not None else main.parent / "fonts"
        data = compile_typst_bounded(main, main.parent, [str(font_dir)] if font_dir.is_dir() else [], inputs,
                                     timestamp(ctx.get("letter_date_iso")))
        if not data.startswith(b"%PDF"):
            raise InputError(f"{main}: Typst wrote something that is not a PDF")
        return data
    try:
        # pdf_tags=False: an untagged PDF compiles ~3.5x faster (28 -> 8 ms a letter); a fax needs no tags
        data = compiler(main, fonts).compile(sys_inputs=inputs, timestamp=timestamp(ctx.get("letter_date_iso")),
                                             pdf_tags=False)
    except typst.TypstError as exc:
        first = (getattr(exc, "message", None) or str(exc)).splitlines()[0][:200]
        raise (InputError if custom else PriorAuthError)(f"{main}: Typst could not compile the template: {first}") from None
    if not data or not data.startswith(b"%PDF"):
        raise PriorAuthError(f"{main}: Typst wrote something that is not a PDF")
    return data


def _render(ctx, template, assets=None):
    from ..render import default_letters

    root = (assets if assets is not None else default_letters()).dir
    if template is None:
        main = root / ("p2p.typ" if ctx.get("kind") == "p2p" else "letter.typ")
        return compile_typst(main, ctx)
    return compile_typst(Path(template), ctx, custom=True, fonts=root / "fonts")


register(Format("pdf", ".pdf", _render, template_suffixes=(".typ",)))
