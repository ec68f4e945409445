"""Safe YAML and JSON reading: one loader for referrals, criteria, denials and FHIR maps.

Every input a user gives (referrals, FHIR bundles, denial files) goes through parse_text,
which builds plain data only (maps, lists, str, int, float, bool, null) and refuses, with
an InputError naming the file and line and never the value:

* aliases and anchors (`&a`, `*a`: a referral never needs them, and a 15 KB "billion laughs"
  document expands past memory), merge keys (`<<`);
* every explicit tag (`!!int`, `!!float`, `!!bool`, `!!timestamp`, `!!binary`, `!custom`, ...)
  that changes what the text would be on its own;
* duplicate keys (a second `treatments:` would silently replace the first);
* more than MAX_NODES nodes or MAX_DEPTH levels of nesting, integers longer than
  MAX_INT_DIGITS digits, NaN / Infinity in JSON;
* files over MAX_FILE_BYTES (checked before reading), YAML over MAX_YAML_BYTES.

Dates stay text (the models parse them). read_yaml (criteria-side files, which do use
anchors) allows aliases but counts their expanded size against the same node budget.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import yaml

from .errors import CriteriaError, InputError

MAX_FILE_BYTES = 8 << 20  # any one input file: a referral is ~3 KB, a Synthea FHIR bundle ~1 MB of JSON
MAX_YAML_BYTES = 1 << 20  # YAML text (its node objects cost far more memory than JSON's)
MAX_CRITERIA_FILE_BYTES = 8 << 20  # a criteria, map or wording file
MAX_NODES = 250_000       # maps, lists and scalars in one document (expanded aliases included)
MAX_DEPTH = 64            # levels of nesting (a referral has 4, a FHIR bundle about 10)
MAX_INT_DIGITS = 15       # longer integers are not a quantity anyone means


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (no `!!python` tags) that leaves dates as text for the model to judge."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_NULL, _BOOL, _INT, _FLOAT = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool",
                              "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_PLAIN_SCALARS = frozenset((_NULL, _BOOL, _INT, _FLOAT))
_KIND = {_NULL: "null", _BOOL: "true/false", _INT: "integer", _FLOAT: "number", _STR: "text"}
_SAFE_KEY = re.compile(r"[a-z][a-z0-9_]{0,40}\Z")  # field-like, as model.referral shows them: a key like a name may be data


class _FastLoader(_Loader):  # type: ignore[misc,valid-type]
    """_Loader with a memo of plain scalars' resolved tags (batch runs parse thousands of
    referrals that repeat the same texts: sex, payer, true, units...). Subclasses must not
    add resolvers (the memo would go stale)."""

    _plain_tags: dict[str, str] = {}  # plain scalar text -> its resolved tag

    def resolve(self, kind, value, implicit):
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        if not implicit[0]:
            return self.DEFAULT_SCALAR_TAG  # quoted or block scalar, no path resolvers
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= 64:  # short texts only and a bounded memo: hostile input cannot grow it
                if len(self._plain_tags) >= 4096:
                    self._plain_tags.clear()
                self._plain_tags[value] = tag
        return tag


class _Refused(Exception):
    """A document the safe loader will not build: message (no value) and 0-based line."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def _line(node) -> int | None:
    mark = getattr(node, "start_mark", None)
    return mark.line if mark is not None else None


def _key_name(key: Any) -> str:
    """A key fit for a message: field names are shown, anything else (it may be data) is not."""
    return f"{key!r}" if isinstance(key, str) and _SAFE_KEY.match(key) else "(a key)"


class _Builder:
    """Nodes -> plain data, with the checks of the module docstring. Recursion is bounded by
    MAX_DEPTH, so it is safe; with `aliases`, a shared node is built once (as PyYAML does)
    and its expanded size counts against MAX_NODES every time it is used."""

    def __init__(self, loader: _Loader, aliases: bool, tagged: bool = True):
        self.loader = loader
        self.aliases = aliases
        # Every tag is written with "!": a text without one has only the tags the text
        # resolves to, and the recheck in scalar() could not fail.
        self.tagged = tagged
        self.nodes = 0
        self.memo: dict[int, tuple[Any, int]] = {}  # id(node) -> (data, expanded size)
        self.building: set[int] = set()

    def build(self, node, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", _line(node))
        if self.aliases:
            hit = self.memo.get(id(node))
            if hit is not None:
                self._count(hit[1], node)
                return hit[0]
            if id(node) in self.building:
                raise _Refused("a recursive alias (a value that contains itself)", _line(node))
        before = self.nodes
        self._count(1, node)
        if type(node) is yaml.ScalarNode:
            data = self.scalar(node)
        elif type(node) is yaml.MappingNode:
            if node.tag != _MAP:
                raise _Refused("an explicit YAML tag on a mapping is not allowed", _line(node))
            data = {}
            self.building.add(id(node))
            for key_node, value_node in node.value:
                if type(key_node) is not yaml.ScalarNode:
                    raise _Refused("a key must be plain text, not a list or mapping", _line(key_node))
                if key_node.tag not in _PLAIN_SCALARS and key_node.tag != _STR:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        raise _Refused("YAML merge keys (<<) are not allowed", _line(key_node))
                key = self.scalar(key_node)
                self._count(1, key_node)
                if key in data:
                    raise _Refused(f"duplicate key {_key_name(key)} (each key may appear once)", _line(key_node))
                data[key] = self.build(value_node, depth + 1)
            self.building.discard(id(node))
        elif type(node) is yaml.SequenceNode:
            if node.tag != _SEQ:
                raise _Refused("an explicit YAML tag on a list is not allowed", _line(node))
            data = []
            self.building.add(id(node))
            for child in node.value:
                data.append(self.build(child, depth + 1))
            self.building.discard(id(node))
        else:  # pragma: no cover - the composer makes only these three
            raise _Refused("an unsupported YAML node", _line(node))
        if self.aliases:
            self.memo[id(node)] = (data, self.nodes - before)
        return data

    def _count(self, n: int, node) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values in one document", _line(node))

    def scalar(self, node) -> Any:
        tag = node.tag
        value = node.value
        if self.tagged:
            # What the text alone resolves to; a different tag was written explicitly.
            implicit = self.loader.resolve(yaml.ScalarNode, value, (True, False)) if not node.style else _STR
            if tag != implicit:
                if tag.startswith("tag:yaml.org,2002:"):
                    name = "!!" + tag[len("tag:yaml.org,2002:"):]
                else:
                    name = "a custom tag"
                raise _Refused(f"explicit YAML tags ({name}) are not allowed: write the value plainly", _line(node))
        if tag == _STR:
            return value
        if tag not in _PLAIN_SCALARS:  # `<<` or `=` as a value, or anything else PyYAML would construct
            raise _Refused("a YAML merge (<<) or value (=) indicator is not allowed here", _line(node))
        if tag == _INT and sum(c.isdigit() for c in value) > MAX_INT_DIGITS:
            raise _Refused(f"an integer longer than {MAX_INT_DIGITS} digits", _line(node))
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except Exception:  # noqa: BLE001 - `0x_`, `0b_`: the message would quote the value
            raise _Refused(f"not a valid {_KIND[tag]}", _line(node)) from None


def _anchor_or_tag(text: str, aliases: bool) -> None:
    """Refuse the first anchor (`&name`) or explicit tag (`!!int`, `!x`) of the document.

    The composed nodes no longer tell an explicit `!!str x` or `!!float 1.0` from plain text,
    so this pass over the events does; it runs only when the text holds `&` or `!`."""
    for event in yaml.parse(text, Loader=_Loader):
        if not aliases and getattr(event, "anchor", None) is not None:
            raise _Refused("YAML anchors and aliases (&name, *name) are not allowed in a referral",
                           event.start_mark.line)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            if isinstance(event, yaml.ScalarEvent) or not getattr(event, "implicit", True):
                name = "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else "a custom tag"
                raise _Refused(f"explicit YAML tags ({name}) are not allowed: write the value plainly",
                               event.start_mark.line)


# The texts where the pass over the events (_anchor_or_tag) can refuse, or fail as the
# composer would not: an anchor (`&` and a name character), an alias (`*`), or a second
# document (a marker, or a directive at the start of a line) that the composer would refuse
# before the parser found a later error. A `&` in text ("Greene & Associates") is none of these.
_MAY_ANCHOR = re.compile(r"&[\w-]|\*|---|\.\.\.|(?:\A|[\r\n\x85\u2028\u2029])%")


def _compose(text: str):
    loader = _FastLoader(text)
    try:
        return loader, loader.get_single_node()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, int | None]:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return problem, (mark.line if mark is not None else None)


def _where(source: str, line: int | None) -> str:
    return f"{source}: line {line + 1}:" if line is not None else f"{source}:"


class _JSONRefused(Exception):
    pass


def _pairs(pairs: list) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _JSONRefused(f"duplicate key {_key_name(key)} (each key may appear once)")
            seen.add(key)
    return data


def _json_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1 and sum(c.isdigit() for c in text) > MAX_INT_DIGITS:
        raise _JSONRefused(f"an integer longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_constant(name: str):
    raise _JSONRefused("NaN and Infinity are not numbers a referral can hold")


def _check_shape(data: Any) -> None:
    """Depth and node count of parsed JSON (iterative: no recursion on hostile input)."""
    stack = [(data, 0)]
    pop, push = stack.pop, stack.append
    nodes = 0
    while stack:
        value, depth = pop()
        if type(value) is dict:
            value = value.values()
        elif type(value) is not list:
            continue
        if depth >= MAX_DEPTH:
            raise _JSONRefused(f"nested more than {MAX_DEPTH} levels deep")
        nodes += len(value) + 1
        if nodes > MAX_NODES:
            raise _JSONRefused(f"more than {MAX_NODES:,} values in one document")
        depth += 1
        for v in value:
            if type(v) is dict or type(v) is list:
                push((v, depth))


_json_decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_int=_json_int, parse_constant=_json_constant)


def _parse_json(text: str, source: str) -> Any:
    """JSON text -> data, or _NOT_JSON when it is not JSON (then YAML, whose flow maps also start with `{`).

    orjson parses (a JSON Lines batch parses one document per record; it refuses NaN and
    Infinity itself). It keeps the last of duplicate keys, so the keys are counted: `":`
    ends every key written without a space before its colon, and inside a string it can
    only appear as `\\":` (an escaped quote), which orjson writes back the same way. Equal
    counts in the text and in the data written back: no key was dropped. Any doubt (a
    different count, a `\\u0022` escape, space before a colon) takes the exact path, json
    with hooks."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = _NOT_JSON
    # Fewer containers cannot nest deeper than MAX_DEPTH, and fewer commas cannot make
    # MAX_NODES values: most documents need no walk.
    containers = text.count("{") + text.count("[")
    many = containers > MAX_DEPTH or text.count(",") + 2 * containers >= MAX_NODES
    try:
        if data is not _NOT_JSON and many:
            _check_shape(data)
        if data is not _NOT_JSON and "\\u0022" not in text and _SPACE_COLON.search(text) is None \
                and text.count('":') == orjson.dumps(data).count(b'":'):
            return data
        data = _json_decoder.decode(text)
        if many:
            _check_shape(data)
    except json.JSONDecodeError:
        return _NOT_JSON
    except _JSONRefused as exc:
        raise InputError(f"{source}: not valid YAML or JSON: {exc}") from None
    except (RecursionError, orjson.JSONEncodeError):
        raise InputError(f"{source}: not valid YAML or JSON: nested more than {MAX_DEPTH} levels deep") from None
    return data


_NOT_JSON = object()
_SPACE_COLON = re.compile(r'"\s+:')


def parse_text(text: str, source: str) -> Any:
    """YAML or JSON text (a referral, FHIR bundle or denial) -> plain data, or InputError."""
    if text.lstrip().startswith("{"):
        data = _parse_json(text, source)
        if data is not _NOT_JSON:
            return data
    if len(text) > MAX_YAML_BYTES:
        raise InputError(f"{source}: a YAML document over {size_text(MAX_YAML_BYTES)} is not a referral")
    return _load_yaml(text, source, aliases=False, error=InputError)


def _load_yaml(text: str, source: str, *, aliases: bool, error: type) -> Any:
    try:
        tagged = "!" in text
        if tagged or (not aliases and "&" in text and _MAY_ANCHOR.search(text)):
            _anchor_or_tag(text, aliases)
        loader, node = _compose(text)
        return None if node is None else _Builder(loader, aliases, tagged).build(node)
    except _Refused as exc:
        raise error(f"{_where(source, exc.line)} not valid YAML or JSON: {exc}") from None
    except yaml.YAMLError as exc:
        problem, line = _yaml_problem(exc)
        if line is not None:
            raise error(f"{source}: line {line + 1}, column {exc.problem_mark.column + 1}"
                        f" not valid YAML or JSON: {problem}") from None
        raise error(f"{source}: not valid YAML or JSON: {problem}") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML or JSON: nested more than {MAX_DEPTH} levels deep") from None


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None


def size_text(n: int) -> str:
    """A limit as people read it: `8 MiB`, or bytes below 1 MiB."""
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def read_upto(fh: BinaryIO, size: int, limit: int) -> bytes:
    """An open file's bytes: the `size` fstat gave (at most `limit`) and one byte more, then on,
    if the file is still growing (or a FIFO), to limit + 1 bytes, so the caller can refuse it.
    One read of limit + 1 bytes would make an 8 MiB buffer for every 3 KB referral."""
    data = fh.read(size + 1)
    if len(data) > size:
        data += fh.read(limit + 1 - len(data))
    return data


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """A file's bytes, refused before reading it whole when it is larger than `limit`
    (default MAX_FILE_BYTES)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        with open(path, "rb") as fh:
            try:
                size = os.fstat(fh.fileno()).st_size
            except OSError:
                size = 0
            if size > limit:
                raise InputError(f"{path}: {size:,} bytes, over the {size_text(limit)} limit for one input file")
            raw = read_upto(fh, size, limit)
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > limit:
        raise InputError(f"{path}: over the {size_text(limit)} limit for one input file")
    return raw


def read_text(path: Path) -> str:
    return _decode(read_bytes(Path(path)), str(path))


def read_stream(stream: BinaryIO, source: str = "<stdin>") -> str:
    """Standard input (its binary buffer) as text: size-limited, and non-UTF-8 is an InputError."""
    raw = stream.read(MAX_FILE_BYTES + 1) if hasattr(stream, "read") else b""
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(f"{source}: over the {size_text(MAX_FILE_BYTES)} limit for one input")
    return _decode(raw, source)


def read_yaml(path: Path) -> Any:
    """A criteria-side YAML file (criteria, maps, wording); CriteriaError names the file and line.

    Anchors and aliases are allowed (the wording file shares blocks), within the node budget."""
    try:
        raw = read_bytes(Path(path), MAX_CRITERIA_FILE_BYTES)
        text = raw.decode("utf-8")
    except InputError as exc:
        raise CriteriaError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise CriteriaError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return _load_yaml(text, str(path), aliases=True, error=CriteriaError)
