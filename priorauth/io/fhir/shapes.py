"""A fast, conservative check that fhir.resources would accept a resource, without importing it.

Validating a bundle with fhir.resources costs ~0.4 s of imports and model building on first
use and several milliseconds per bundle (a Python validator per element). Most bundles are
valid, so this module answers the question "is this resource certainly valid?" from a table
of the R4B models' fields (`r4b-shapes.json`, generated from the installed fhir.resources by
`python -m priorauth.io.fhir.shapes`; a test keeps it in step). It is deliberately stricter
than the library: any key, value or primitive it is not sure about (primitive extensions
`_x`, nulls, empty strings, a primitive type it does not check) answers "not sure", and the
bundle is then validated by fhir.resources, which also words the problems. So a bundle the
library would reject is never accepted here; a test checks that on mutated bundles.

Table: {"types": {name: {alias: [kind, target, is_list, required, choice_group]}},
        "choices": {name: {group: required}}, "resources": {resourceType: name}}.
`kind` is "p" (primitive: target is its kind, e.g. "DateTime"), "c" (complex: target is a
type name) or "r" (any resource, dispatched on its resourceType).
"""

from __future__ import annotations

import functools
import math
import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Optional

TABLE = Path(__file__).with_name("r4b-shapes.json")
INT32 = 2 ** 31

_STRING = re.compile(r"[ \r\n\t\S]+")
_CODE = re.compile(r"[^\s]+( [^\s]+)*")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URI = re.compile(r"[!-~]+")  # printable ASCII, no spaces
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_YEAR_MONTH = re.compile(r"[1-9][0-9]{3}(-(0[1-9]|1[0-2]))?")
_DAY = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}")
_INSTANT = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
                      r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])")
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")


def _full_day(value: str) -> bool:
    try:
        date.fromisoformat(value)
        return True
    except ValueError:
        return False


def _instant(value: str) -> bool:
    if not _INSTANT.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def _date(value: str) -> bool:
    return bool(_YEAR_MONTH.fullmatch(value)) or (bool(_DAY.fullmatch(value)) and _full_day(value))


def _time(value: str) -> bool:
    if not _TIME.fullmatch(value):
        return False
    time.fromisoformat(value)
    return True


def _string(v: Any) -> bool:
    if type(v) is not str or not v or len(v) >= 1 << 20 or v.strip() != v:
        return False
    # printable ASCII is all in [ \S]: the common case, without the regex
    return (v.isascii() and v.isprintable()) or bool(_STRING.fullmatch(v))


def _int(lo: int):
    return lambda v: type(v) is int and lo <= v < INT32


#: primitive kind -> a check that is sure only when the library accepts too
PRIMITIVES = {
    "Boolean": lambda v: type(v) is bool,
    "Integer": _int(-INT32),
    "UnsignedInt": _int(0),
    "PositiveInt": _int(1),
    "Decimal": lambda v: type(v) in (int, float) and math.isfinite(v) and bool(_DECIMAL.fullmatch(str(v))),
    "String": lambda v: _string(v),
    "Markdown": lambda v: _string(v),
    "Code": lambda v: type(v) is str and bool(_CODE.fullmatch(v)),
    "Id": lambda v: type(v) is str and bool(_ID.fullmatch(v)),
    "Uri": lambda v: type(v) is str and bool(_URI.fullmatch(v)),
    "Canonical": lambda v: type(v) is str and bool(_URI.fullmatch(v)),
    "Date": lambda v: type(v) is str and _date(v),
    "DateTime": lambda v: type(v) is str and (_date(v) or _instant(v)),
    "Instant": lambda v: type(v) is str and _instant(v),
    "Time": lambda v: type(v) is str and _time(v),
}


@functools.lru_cache(maxsize=1)
def table() -> dict:
    import orjson

    return orjson.loads(TABLE.read_bytes())


class _Shape:
    """One model's fields, compiled: alias -> (check, is_list, choice group); what is required."""

    __slots__ = ("fields", "required", "required_groups")

    def __init__(self, fields: dict, required: tuple, required_groups: frozenset):
        self.fields, self.required, self.required_groups = fields, required, required_groups


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[dict[str, _Shape], dict[str, str]]:
    t = table()
    shapes: dict[str, _Shape] = {}

    def complex_check(target: str):
        return lambda v: _conforms(v, shapes[target])

    def check_of(kind: str, target: str):
        if kind == "p":
            return PRIMITIVES.get(target, _never)
        if kind == "c":
            return complex_check(target)
        return _any_resource

    for name, fields in t["types"].items():
        groups = t["choices"].get(name, {})
        shapes[name] = _Shape({alias: (check_of(kind, target), is_list, group)
                               for alias, (kind, target, is_list, _, group) in fields.items()},
                              tuple(alias for alias, spec in fields.items() if spec[3]),
                              frozenset(g for g, required in groups.items() if required))
    return shapes, t["resources"]


def _never(value: Any) -> bool:
    return False


def _any_resource(value: Any) -> bool:
    return resource_conforms(value)


def resource_conforms(resource: Any) -> bool:
    """True only if fhir.resources certainly accepts this resource (see the module text)."""
    if type(resource) is not dict:
        return False
    shapes, resources = _compiled()
    name = resources.get(resource.get("resourceType")) if type(resource.get("resourceType")) is str else None
    return name is not None and _conforms(resource, shapes[name], True)


def bundle_shell_conforms(shell: dict) -> bool:
    """The same for a Bundle whose entries' resources were taken out."""
    return _conforms(shell, _compiled()[0]["Bundle"], True)


def _conforms(value: Any, shape: _Shape, is_resource: bool = False) -> bool:
    if type(value) is not dict or not value:
        return False
    fields = shape.fields
    groups: Optional[set[str]] = None  # the choice groups given (value[x]: at most one each)
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            if key == "resourceType" and is_resource:
                continue
            return False  # unknown, a primitive extension (`_x`), fhir_comments: not sure
        check, is_list, group = spec
        if group is not None:
            if groups is None:
                groups = {group}
            elif group in groups:
                return False
            else:
                groups.add(group)
        if is_list:
            if type(item) is not list or not item:
                return False
            for one in item:
                if not check(one):
                    return False
        elif not check(item):
            return False
    for key in shape.required:
        if key not in value:
            return False
    return not shape.required_groups or (groups is not None and shape.required_groups <= groups)


# ------------------------------------------------------------------ the table, from fhir.resources


def build_table() -> dict:
    """The shapes of every R4B model, read from the installed fhir.resources (slow: imports all)."""
    import importlib
    import pkgutil
    import types as types_module
    import typing

    import fhir.resources.R4B as r4b
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    types: dict[str, dict] = {}
    choices: dict[str, dict] = {}
    resources: dict[str, str] = {}
    classes: dict[str, type] = {}
    for mod in pkgutil.iter_modules(r4b.__path__):
        if mod.name.startswith("_") or mod.name in ("fhirtypes", "fhirtypesvalidators"):
            continue
        module = importlib.import_module(f"fhir.resources.R4B.{mod.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, FHIRAbstractModel) and obj.__module__ == module.__name__:
                classes[obj.__name__] = obj

    def optional(ann: Any) -> Any:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types_module.UnionType) and len(args) == 1:
            return args[0]
        return ann

    def unwrap(ann: Any) -> tuple[Any, bool]:
        ann = optional(ann)
        if typing.get_origin(ann) is list:
            return optional(typing.get_args(ann)[0]), True
        return ann, False

    def kind_of(ann: Any) -> tuple[str, str]:
        if ann is bool:
            return "p", "Boolean"
        meta = getattr(ann, "__metadata__", None)
        if meta:
            return "p", type(meta[0]).__name__
        if hasattr(ann, "get_model_klass"):
            klass = ann.get_model_klass()
            return ("r", "Resource") if klass.__name__ in ("Resource", "DomainResource") else ("c", klass.__name__)
        return "p", "?"  # not checked: always "not sure"

    for name, cls in sorted(classes.items()):
        fields: dict[str, list] = {}
        groups: dict[str, bool] = {}
        for fname, info in cls.model_fields.items():
            alias = info.alias or fname
            if fname == "fhir_comments" or alias.startswith("_"):
                continue
            extra = info.json_schema_extra or {}
            ann, is_list = unwrap(info.annotation)
            kind, target = kind_of(ann)
            group = extra.get("one_of_many")
            if group:
                groups[group] = groups.get(group, False) or bool(extra.get("one_of_many_required"))
            fields[alias] = [kind, target, is_list, bool(info.is_required() or extra.get("element_required")), group]
        types[name] = fields
        if groups:
            choices[name] = groups
        rtype = getattr(cls, "__resource_type__", None)
        if rtype and cls.has_resource_base() and rtype == name:
            resources[rtype] = name
    return {"types": types, "choices": choices, "resources": resources}


def main() -> None:
    import orjson

    TABLE.write_bytes(orjson.dumps(build_table(), option=orjson.OPT_SORT_KEYS) + b"\n")
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
