"""Property-based fuzzing of `priorauth check` (issue 16), in process through click's runner.

Referrals are generated valid and then broken: leaves replaced with wrong types, extreme
numbers and dates, random unicode; fields removed or added; the YAML text itself edited
(explicit tags, anchors, duplicate keys, control characters, truncation, random bytes). For
every input: exit code 0 or 2, no traceback, the injected distinctive value never on stderr,
and a dose in the JSON never negative.

CI cost is bounded by the `ci` profile (200 examples a test, no deadline). The long campaign
runs the same properties with HYPOTHESIS_PROFILE=long (see bench/fuzz_long.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from priorauth.cli.main import cli

from .conftest import BASE

settings.register_profile("ci", max_examples=200, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "33400")), deadline=None,
                          database=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MARK = "QZXJ"  # every injected text carries it: it must never reach stderr
_DIR = Path(tempfile.mkdtemp(prefix="priorauth-fuzz-"))
_RUNNER = CliRunner()

FINDINGS: list[str] = []  # filled when a property fails (the long run reports them)


# ------------------------------------------------------------------ strategies


def _paths(data, prefix=()):
    """Every (path, leaf) of a nested dict/list."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))
    yield prefix, data


def _set(data, path, value):
    for p in path[:-1]:
        data = data[p]
    data[path[-1]] = value


def _delete(data, path):
    for p in path[:-1]:
        data = data[p]
    del data[path[-1]]


marked_text = st.text(min_size=0, max_size=30).map(lambda t: f"{t}{MARK}{t[::-1]}")
extreme_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10 ** 30, max_value=10 ** 30),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 10 ** 18, 2 ** 63, 29.9, 250.1, 0.49, 400.1, 1e6 + 1]))
odd_dates = st.one_of(
    st.dates().map(str), st.sampled_from(["0001-01-01", "9999-12-31", "1899-12-31", "2100-12-31", "2101-01-01",
                                          "2026-02-30", "2026-13-01", "20261120", "2026-11-20T10:00:00"]))
leaf_values = st.one_of(marked_text, extreme_numbers, odd_dates, st.booleans(), st.none(),
                        st.lists(marked_text, max_size=3), st.dictionaries(marked_text, marked_text, max_size=2))
base_variants = st.sampled_from([
    {},
    {"treatments": [{"drug": "prednisone", "route": "oral", "dose": "60 mg daily", "start_date": "2026-01-01",
                     "end_date": "2026-06-01", "outcome": "inadequate_response"}]},
    {"patient": {**BASE["patient"], "height_cm": 100, "weight_kg": 40}},
    {"patient": {**BASE["patient"], "height_cm": 240, "weight_kg": 390}},
    {"request": {"therapy": "rituximab", "product": "Rituxan", "dose_mg": 1000, "doses": 2}},
    {"diagnoses": [{"code": "L10.0"}], "findings": [{"kind": "skin_biopsy", "supports_diagnosis": True}]},
])


@st.composite
def mutated_referrals(draw):
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(draw(base_variants)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = [p for p, _ in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        try:
            if action == "replace":
                _set(data, path, draw(leaf_values))
            elif action == "delete":
                _delete(data, path)
            else:
                parent = data
                for p in path[:-1]:
                    parent = parent[p]
                if isinstance(parent, dict):
                    parent[draw(st.sampled_from(["notes", f"{MARK}key", "weight_lbs", "Eleanor " + MARK]))] = \
                        draw(leaf_values)
        except (KeyError, IndexError, TypeError):
            pass
    return data


def _dump(data, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, allow_nan=True, default=str)
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:  # pragma: no cover
        return json.dumps(data, default=str)


TEXT_EDITS = ["tag", "anchor", "duplicate", "control", "truncate", "bytes", "deep", "long_int", "none"]


@st.composite
def edited_texts(draw):
    data = draw(mutated_referrals())
    text = _dump(data, draw(st.booleans()))
    lines = text.splitlines(keepends=True) or [""]
    edit = draw(st.sampled_from(TEXT_EDITS))
    i = draw(st.integers(min_value=0, max_value=max(len(lines) - 1, 0)))
    line = lines[i]
    if edit == "tag" and ": " in line:
        tag = draw(st.sampled_from(["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!str", "!!null",
                                    "!custom", "!!python/object/apply:os.system", "!!set", "!!map", "!!seq"]))
        key, _, value = line.partition(": ")
        lines[i] = f"{key}: {tag} {MARK}{value.strip()}\n"
    elif edit == "anchor" and ": " in line:
        key, _, value = line.partition(": ")
        lines[i] = f"{key}: &a {value}"
        lines.append(f"X{MARK}: *a\n")
    elif edit == "duplicate" and ":" in line and not line.startswith(" "):
        lines.append(line)
    elif edit == "control":
        ch = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\u2028", "\ufeff", "\ud800"]))
        lines[i] = line.replace(":", f": \"{MARK}\\x00\"" if ch == "\x00" else ":", 1) if ch == "\x00" else line + ch
    elif edit == "truncate":
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut].encode("utf-8", "surrogatepass")
    elif edit == "bytes":
        raw = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(draw(st.integers(min_value=1, max_value=5))):
            if raw:
                raw[draw(st.integers(min_value=0, max_value=len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    elif edit == "deep":
        depth = draw(st.integers(min_value=50, max_value=2000))
        lines.append(f"X{MARK}: " + "[" * depth + "]" * depth + "\n")
    elif edit == "long_int" and ": " in line:
        key, _, _ = line.partition(": ")
        lines[i] = f"{key}: {'9' * draw(st.integers(min_value=15, max_value=6000))}\n"
    return "".join(lines).encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------ the property


def run_check(raw: bytes, suffix: str = ".yaml") -> None:
    """`priorauth check --json` on these bytes; asserts the properties of the module docstring."""
    path = _DIR / f"fuzz{suffix}"
    path.write_bytes(raw)
    result = _RUNNER.invoke(cli, ["check", str(path), "--json"], catch_exceptions=True)
    info = f"exit {result.exit_code}, input {raw[:300]!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {info}\n{tb[-1500:]}")
    assert result.exit_code in (0, 2), f"{info}\n{result.output[-1000:]}"
    assert "Traceback" not in result.output, info
    assert MARK not in result.stderr, f"{info}\n{result.stderr}"
    if result.exit_code == 0:
        det = json.loads(result.stdout)
        dosing = det.get("dosing") or {}
        for key in ("dosing_weight_kg", "grams_per_cycle", "billing_units_per_cycle", "dose_mg",
                    "billing_units_per_dose"):
            value = dosing.get(key)
            if isinstance(value, (int, float)):
                assert math.isfinite(value) and value >= 0, f"negative or infinite {key} {value}: {info}"


@given(mutated_referrals(), st.booleans())
def test_mutated_referrals(data, as_json):
    run_check(_dump(data, as_json).encode("utf-8", "surrogatepass"), ".json" if as_json else ".yaml")


@given(edited_texts())
def test_edited_texts(raw):
    run_check(raw)


@given(st.dictionaries(st.sampled_from(["given_name", "family_name", "member_id", "payer", "name"]),
                       st.text(min_size=1, max_size=40).map(lambda t: t + MARK), min_size=1))
def test_random_unicode_in_text_fields(texts):
    data = copy.deepcopy(BASE)
    for key, value in texts.items():
        section = "prescriber" if key == "name" else "coverage" if key in ("member_id", "payer") else "patient"
        data[section][key] = value
    run_check(json.dumps(data).encode(), ".json")
