"""The safe referral loader (parse_text): what it accepts it builds exactly as PyYAML would;
everything else is an InputError naming file and line, never a traceback, never the value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from priorauth.core.errors import InputError
from priorauth.core import yamlio
from priorauth.core.yamlio import _FastLoader, _Loader, parse_text, read_text, read_yaml

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _pyyaml(text: str) -> tuple:
    try:
        return ("ok", yaml.load(text, Loader=_Loader))
    except Exception as exc:  # noqa: BLE001
        return ("error", type(exc))


def _ours(text: str) -> tuple:
    try:
        return ("ok", parse_text(text, "doc.yaml"))
    except InputError as exc:  # the only exception parse_text may raise
        return ("refused", str(exc))


def same(a, b) -> bool:
    """== that also demands equal types all the way down (True is not 1), the same key order,
    and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def assert_same_outcome(text: str) -> None:
    """Accepted: the data PyYAML builds. Refused: an InputError naming the file."""
    ours = _ours(text)
    if ours[0] == "ok":
        old = _pyyaml(text)
        assert old[0] == "ok" and same(old[1], ours[1]), (old, ours)
    else:
        assert ours[1].startswith("doc.yaml:"), ours




DEEP = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 150)) + "  " * 150 + "leaf: 1\n"

TRICKY = {
    "plain": "a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n",
    "anchor_alias": "base: &b {x: 1, y: [1, 2]}\ncopy: *b\n",
    "alias_scalar": "a: &s 7\nb: *s\n",
    "merge": "base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n",
    "merge_list": "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
    "merge_bad": "a:\n  <<: 5\n",
    "merge_as_value": "a: <<\n",
    "value_key": "=: 1\nb: 2\n",
    "value_as_value": "a: =\n",
    "explicit_str": "a: !!str 123\nb: !!str true\n",
    "explicit_int": 'a: !!int "5"\n',
    "explicit_int_bad": "a: !!int five\n",
    "explicit_float_bad": "a: !!float abc\n",
    "explicit_bool_bad": "a: !!bool maybe\n",
    "explicit_null_on_map": "a: !!null {b: 1}\n",
    "str_tag_on_seq": "a: !!str [1, 2]\n",
    "map_tag_on_scalar": "a: !!map x\n",
    "python_object": "a: !!python/object:os.system ls\n",
    "python_apply": "!!python/object/apply:os.system [echo hi]\n",
    "binary": "a: !!binary aGVsbG8=\n",
    "binary_key": "!!binary aGVsbG8=: 1\n",
    "set": "a: !!set {x, y}\n",
    "omap": "a: !!omap [x: 1, y: 2]\n",
    "pairs": "a: !!pairs [x: 1, x: 2]\n",
    "timestamp_tagged": "a: !!timestamp 2024-01-02\n",
    "unknown_tag": "a: !foo bar\n",
    "unknown_tag_map": "a: !foo {b: 1}\n",
    "unknown_tag_seq": "a: !foo [1]\n",
    "verbatim_tag": "a: !<tag:yaml.org,2002:str> 5\n",
    "nonspecific_tag": "a: ! 5\nb: ! true\n",
    "duplicate_keys": "a: 1\nb: 2\na: 3\n",
    "equal_keys_of_other_types": "1: a\ntrue: b\n1.0: c\n",
    "nan_keys": ".nan: a\n.nan: b\n",
    "null_key": "~: a\nnull: b\n",
    "complex_key": "? [a, b]\n: c\n",
    "complex_map_key": "? {a: 1}\n: c\n",
    "multi_document": "a: 1\n---\nb: 2\n",
    "explicit_start_end": "---\na: 1\n...\n",
    "empty": "",
    "only_comment": "# nothing\n",
    "only_start": "---\n",
    "dates_stay_text": "a: 2024-01-02\nb: 2024-01-02T10:00:00Z\nc: 2001-12-14 21:59:43.10 -5\n",
    "yes_no_on_off": "a: yes\nb: no\nc: on\nd: off\ne: Yes\nf: OFF\ng: y\nh: n\n",
    "nulls": "a: ~\nb: null\nc:\nd: Null\n",
    "floats": "a: .inf\nb: -.Inf\nc: .nan\nd: 1e3\ne: 1.0e+3\nf: 6.8523015e+5\ng: 190:20:30.15\nh: -1_000.5\n",
    "ints": "a: 0o17\nb: 0x1F\nc: 1_000\nd: 017\ne: 0b1010\nf: 190:20:30\ng: -0\nh: +12\ni: 0\n",
    "int_regex_but_bad": "a: 0b_\n",
    "int_regex_but_bad_hex": "a: 0x_\n",
    "float_regex_but_bad": "a: ._\n",
    "bad_later_in_order": "a:\n  b: !!int x\nc: !!float y\n",
    "quoted": "a: '1'\nb: \"true\"\nc: 'null'\n",
    "plain_then_quoted_same_text": "a: yes\nb: 'yes'\nc: yes\nd: \"12\"\ne: 12\nf: ! \"5\"\ng: !  null\n",
    "block_scalars": "a: |\n  line 1\n  line 2\nb: >-\n  folded\n  text\n",
    "scalar_root": "42\n",
    "seq_root": "- 1\n- two\n",
    "flow_map_root": "{a: 1, b: [2, 3]}\n",
    "deep_nesting": DEEP,
    "deep_flow": "[" * 200 + "]" * 200 + "\n",
    "non_ascii": "name: Zoë Ångström\nnote: 日本語\nemoji: \"\\U0001F600\"\n",
    "tab_indent_error": "a:\n\tb: 1\n",
    "unclosed_flow": "a: [1, 2\n",
    "bad_indent": "a: 1\n b: 2\n",
    "undefined_alias": "a: *nope\n",
    "duplicate_anchor": "a: &x 1\nb: &x 2\nc: *x\n",
    "long_scalar": "a: " + "x" * 5000 + "\nb: " + "1" * 200 + "\n",
    "bom_like": "\ufeffa: 1\n",
    "control_char": "a: \x07\n",
}


REFUSED = {"anchor_alias", "alias_scalar", "merge", "merge_list", "merge_bad", "merge_as_value", "value_key",
           "value_as_value", "explicit_str", "explicit_int", "explicit_int_bad", "explicit_float_bad",
           "explicit_bool_bad", "explicit_null_on_map", "str_tag_on_seq", "map_tag_on_scalar", "python_object",
           "python_apply", "binary", "binary_key", "set", "omap", "pairs", "timestamp_tagged", "unknown_tag",
           "unknown_tag_map", "unknown_tag_seq", "verbatim_tag", "duplicate_keys", "equal_keys_of_other_types",
           "complex_key", "complex_map_key", "multi_document", "deep_nesting", "deep_flow", "tab_indent_error",
           "unclosed_flow", "bad_indent", "undefined_alias", "duplicate_anchor", "long_scalar",
           "int_regex_but_bad", "int_regex_but_bad_hex", "bad_later_in_order",
           "control_char", "nan_keys", "null_key", "plain_then_quoted_same_text"}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_documents_built_as_pyyaml_or_refused_cleanly(name):
    assert_same_outcome(TRICKY[name])
    assert (_ours(TRICKY[name])[0] == "refused") == (name in REFUSED)


def test_cold_and_warm_resolver_memo_agree():
    for text in TRICKY.values():
        _FastLoader._plain_tags.clear()
        cold = _ours(text)
        assert repr(_ours(text)) == repr(cold)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("**/*.yaml")) + sorted(SAMPLES.glob("fhir/*.json")),
                         ids=lambda p: p.name)
def test_samples_same_as_pyyaml(path):
    assert_same_outcome(path.read_text(encoding="utf-8"))


def test_generated_referrals_same_as_pyyaml(tmp_path):
    from priorauth.batch.generate import write_samples

    write_samples(150, tmp_path, seed=5, invalid_share=0.2)
    files = sorted(tmp_path.glob("*.*"))
    assert len(files) == 150
    for path in files:
        assert_same_outcome(path.read_bytes().decode("utf-8", "replace"))


def test_resolver_memo_stays_bounded():
    text = "".join(f"k{i}: v{i}\n" for i in range(10_000))
    assert parse_text(text, "x.yaml") == yaml.load(text, Loader=_Loader)
    assert len(_FastLoader._plain_tags) <= 4096


@pytest.mark.parametrize("text", [TRICKY["python_object"], TRICKY["python_apply"],
                                  "!!python/name:os.system\n", "a: !!python/module:os\n"])
def test_python_tags_are_refused(text):
    with pytest.raises(InputError, match="not valid YAML or JSON"):
        parse_text(text, "hostile.yaml")


def test_a_duplicate_key_that_may_be_data_is_not_named():
    # Found by the long fuzz run (bench/fuzz_long.py): a repeated key that is not field-like
    # (a name typed as a key) was quoted in the error.
    import pytest

    from priorauth.core.errors import InputError

    with pytest.raises(InputError) as err:
        parse_text("notes: x\nOBrienKey: 1\nOBrienKey: 2\n", "r.yaml")
    assert "OBrienKey" not in str(err.value) and "duplicate key" in str(err.value)
    with pytest.raises(InputError, match="'treatments'"):
        parse_text("treatments: []\ntreatments: []\n", "r.yaml")


def _mutants() -> list[str]:
    """Generated referrals with anchors, aliases, tags, document markers, directives and bare
    `&` put in at seeded random places: most are broken, in many different ways."""
    import random

    from priorauth.batch.generate import generate

    rng = random.Random(3)
    bits = ["&", "& ", "&a ", "*a", "*", "\n---\n", "\n...\n", "\n%YAML 1.1\n", "%", "!", "!!str ", "\r---\r",
            "& x\n", "\n- & \n", ": &\n", "\nz: [\n", "\n---\nb: [\n", "'", "&é", "\u2028---\u2028"]
    texts = []
    for sample in generate(40, seed=9, invalid_share=0, json_share=0):
        text = sample.data.decode("utf-8")
        for _ in range(12):
            t = text
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(t) + 1)
                t = t[:at] + rng.choice(bits) + t[at:]
            texts.append(t)
    return texts


def test_shortcuts_change_no_outcome_and_no_message(monkeypatch):
    """parse_text skips the pass over the events for a `&` that cannot start an anchor
    ("Greene & Associates") and the tag recheck for a text without `!`: the same data, and
    the same message for every refusal, as with both always done."""
    import re

    texts = [*TRICKY.values(), "a: Greene & Associates\n", "a: b & c\nd: *x\n", "a: b & c\n---\nd: [\n",
             "a: b & c\n...\nd: [\n", "a: b & c\n%TAG ! x\n---\nd: 1\n", "a: b & c\rd: &x 1\n", *_mutants()]
    shortcut = [_ours(t) for t in texts]
    assert sum(o[0] == "refused" for o in shortcut) > len(texts) // 3

    class AlwaysChecked(yamlio._Builder):
        def __init__(self, loader, aliases, tagged=True):
            super().__init__(loader, aliases, True)

    monkeypatch.setattr(yamlio, "_MAY_ANCHOR", re.compile(""))
    monkeypatch.setattr(yamlio, "_Builder", AlwaysChecked)
    assert [_ours(t) for t in texts] == shortcut


@pytest.mark.parametrize("reader", ["read_bytes", "batch"])
def test_a_file_longer_than_fstat_said_is_read_whole_and_still_bounded(tmp_path, monkeypatch, reader) -> None:
    """Reads ask for the size fstat gives (not an 8 MB buffer per file), then read on: a file
    that grew after fstat is read whole, and one that grew past the limit is refused."""
    import os

    from priorauth.batch.run import _read

    real = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*real(fd)[:6], 10, *real(fd)[7:])))
    monkeypatch.setattr(yamlio, "MAX_FILE_BYTES", 4096)
    small, big = tmp_path / "small.yaml", tmp_path / "big.yaml"
    small.write_bytes(b"x" * 3000)
    big.write_bytes(b"x" * 5000)
    if reader == "read_bytes":
        assert yamlio.read_bytes(small) == b"x" * 3000
        with pytest.raises(InputError, match="over the 4,096 bytes limit"):
            yamlio.read_bytes(big)
    else:
        assert _read((0, "small.yaml", str(small), None)) == (b"x" * 3000, None)
        data, failed = _read((1, "big.yaml", str(big), None))
        assert data is None and failed[5] == "invalid" and "over the 4,096 bytes limit" in failed[9]
