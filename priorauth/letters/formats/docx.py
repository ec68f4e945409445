"""DOCX (docxtpl): the editable letter."""

from __future__ import annotations

from . import Format, register


def _render(ctx, template):
    from ..render import render_docx

    return render_docx(ctx, template)


register(Format("docx", ".docx", _render, template_suffixes=(".docx",)))
