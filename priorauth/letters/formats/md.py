"""Markdown (Jinja2, every value escaped for Markdown)."""

from __future__ import annotations

from . import Format, register


def _render(ctx, template, assets=None):
    from ..render import render_text

    return render_text(ctx, "md", template, assets)


register(Format("md", ".md", _render, aliases=(".markdown",)))
