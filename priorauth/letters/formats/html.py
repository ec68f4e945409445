"""HTML (Jinja2, autoescaped): a standalone printable page."""

from __future__ import annotations

from . import Format, register


def _render(ctx, template, assets=None):
    from ..render import render_text

    return render_text(ctx, "html", template, assets)


register(Format("html", ".html", _render, aliases=(".htm",)))
