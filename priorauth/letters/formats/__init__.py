"""Output formats of a letter: one registration each (name, extension, render).

`render(context, template, assets)` turns a letter context into bytes; `template` is None for
the built-in layout or the path of a practice's own template; `assets` is the prepared
`Letters` (templates folder, wording) to take the built-in layout from. To add a
format, write a module here that calls `register(...)` and list it in `_MODULES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Callable

Renderer = Callable[..., bytes]


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    render: Renderer
    template_suffixes: tuple[str, ...] = ()  # what a custom template for this format may be
    aliases: tuple[str, ...] = field(default=())  # other file extensions that mean this format


REGISTRY: dict[str, Format] = {}
_MODULES = ("docx", "pdf", "html", "md")


def register(fmt: Format) -> Format:
    REGISTRY[fmt.name] = fmt
    return fmt


def _load() -> None:
    """Import every format module (each registers itself); a module imported on its own
    (formats.pdf, by the packet) must not hide the others."""
    for mod in _MODULES:
        if mod not in REGISTRY:
            import_module(f"{__name__}.{mod}")


def get(name: str) -> Format:
    if name not in REGISTRY:
        _load()
    return REGISTRY[name]


def names() -> tuple[str, ...]:
    return _MODULES
