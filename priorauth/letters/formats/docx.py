"""DOCX (docxtpl): the editable letter."""

from __future__ import annotations

from . import Format, register


def _render(ctx, template, assets=None):
    from ..render import render_docx

    return render_docx(ctx, template, assets)


register(Format("docx", ".docx", _render, template_suffixes=(".docx",)))
