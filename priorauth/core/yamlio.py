"""Safe YAML and JSON reading: one loader for referrals, criteria, denials and FHIR maps.

Dates stay text (the models parse them), only plain tags resolve, and JSON goes through
orjson first because a JSON Lines batch parses one document per record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from .errors import CriteriaError, InputError

class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (no `!!python` tags) that leaves dates as text for the model to judge."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _NotPlain(Exception):
    """The document needs PyYAML's full constructor (aliases, merge keys, tags, ...)."""


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
# Scalar tags the fast path builds, always with PyYAML's own constructor so values are
# identical; every other tag (binary, timestamp, set, omap, value, merge, python/..., !foo)
# goes the full path, which builds it or raises the same ConstructorError as ever.
_PLAIN_SCALARS = frozenset(("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"))
_MAX_DEPTH = 64  # deeper documents take the full (iterative) path instead of recursing here


class _FastLoader(_Loader):  # type: ignore[misc,valid-type]
    """_Loader with shortcuts for plain documents (batch runs parse thousands of referrals).

    Past the C parser, PyYAML spends its time in Python: a resolver call with regexes per
    scalar, and a constructor with a generator per collection and bookkeeping per node.
    A referral is plain maps, lists and scalars, so construct_document builds it directly
    and hands anything else, and any failure, to the unchanged PyYAML path: same data,
    same errors. Subclasses must not add resolvers (the memo below would go stale).
    """

    _plain_tags: dict[str, str] = {}  # plain scalar text -> its resolved tag

    def resolve(self, kind, value, implicit):
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        if not implicit[0]:
            # What BaseResolver.resolve returns for a scalar that is not plain (quoted,
            # block) when no path resolvers exist; saves its work for every quoted date.
            return self.DEFAULT_SCALAR_TAG
        # A plain scalar's tag depends on its text alone, and referrals repeat the same
        # texts (sex, payer, true, units...). Short texts only and a bounded memo, so
        # hostile input cannot grow memory.
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= 64:
                if len(self._plain_tags) >= 4096:
                    self._plain_tags.clear()
                self._plain_tags[value] = tag
        return tag

    def construct_document(self, node):
        try:
            return self._plain(node, set(), 0)
        except Exception:  # noqa: BLE001
            # _NotPlain, or a constructor error (`!!int x`, `0x_`...): the full path
            # decides, so the data or the exception is PyYAML's, raised in PyYAML's order
            # (it builds nested collections last, so its first error may differ from ours).
            return super().construct_document(node)

    def _plain(self, node, seen: set, depth: int):
        # `seen` holds every node built so far: meeting one again means an alias (a shared
        # or recursive object), which PyYAML's path builds as such.
        if node in seen or depth > _MAX_DEPTH:
            raise _NotPlain
        seen.add(node)
        tag = node.tag
        if type(node) is yaml.ScalarNode:
            if tag == _STR:
                return node.value
            if tag in _PLAIN_SCALARS:
                return self.yaml_constructors[tag](self, node)
            raise _NotPlain
        if tag == _MAP and type(node) is yaml.MappingNode:
            data = {}
            for key_node, value_node in node.value:
                # Scalar keys only: collection keys are unhashable (PyYAML raises), and
                # `<<` (merge) and `=` (value) keys have their own tags, so not _STR or
                # _PLAIN_SCALARS: all of them go the full path.
                if type(key_node) is not yaml.ScalarNode:
                    raise _NotPlain
                # str keys and values inline (most nodes of a referral): same as _plain().
                if key_node.tag == _STR and key_node not in seen:
                    seen.add(key_node)
                    key = key_node.value
                else:
                    key = self._plain(key_node, seen, depth)
                if value_node.tag == _STR and type(value_node) is yaml.ScalarNode and value_node not in seen:
                    seen.add(value_node)
                    value = value_node.value
                else:
                    value = self._plain(value_node, seen, depth + 1)
                # As in PyYAML: a repeated key keeps its first place and takes the last value.
                data[key] = value
            return data
        if tag == _SEQ and type(node) is yaml.SequenceNode:
            return [self._plain(child, seen, depth + 1) for child in node.value]
        raise _NotPlain


def parse_text(text: str, source: str) -> Any:
    """YAML or JSON text -> plain data. JSON is valid YAML, but a JSON parser is much faster."""
    if text.lstrip().startswith("{"):
        try:
            return orjson.loads(text)  # a JSON Lines batch parses one per record: ~3x json.loads
        except orjson.JSONDecodeError:
            pass  # fall through: YAML flow mappings also start with '{' (and NaN is YAML's to judge)
    try:
        return yaml.load(text, Loader=_FastLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}:{where} not valid YAML or JSON: {problem}") from None


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None


def read_yaml(path: Path) -> Any:
    """A criteria-side YAML file (criteria, maps, wording); CriteriaError names the file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CriteriaError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CriteriaError(f"{path}: cannot read: {exc}") from None
