"""Issue 16: bad input and faults. Each test reproduces one defect (it failed before the fix)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from priorauth.cli.main import cli
from priorauth.core import yamlio
from priorauth.core.errors import CriteriaError, InputError
from priorauth.core.yamlio import parse_text, read_text, read_yaml
from priorauth.model.referral import referral_from_data

from .conftest import SAMPLES, SPEC_EXAMPLES, referral_data

SECRET = "Zqxjvw"  # a distinctive "patient" value: it must never reach stderr


def as_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def check(runner, tmp_path, text: str | bytes, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return runner.invoke(cli, ["check", str(path), "--json"]), path


def assert_clean_error(result, path=None, secret=SECRET):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert secret not in result.output
    if path is not None:
        assert str(path) in result.output


# ------------------------------------------------------------------ 1. the safe loader


BILLION_LAUGHS = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(9))


def test_yaml_bomb_is_refused_at_once_naming_file_and_line():
    with pytest.raises(InputError, match=r"bomb\.yaml: line 1: .*anchors and aliases"):
        parse_text(BILLION_LAUGHS, "bomb.yaml")


def test_alias_is_refused_naming_the_line():
    text = as_yaml(referral_data()) + "extra: &x 1\nmore: *x\n"
    with pytest.raises(InputError, match=r"line \d+:.*aliases"):
        parse_text(text, "r.yaml")


@pytest.mark.parametrize("tag", ["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!str", "!custom",
                                 "!!python/object/apply:os.system", "!!set", "!!null"])
def test_every_explicit_tag_is_a_clean_error_without_the_value(runner, tmp_path, tag):
    data = referral_data()
    text = as_yaml(data).replace("given_name: Test", f"given_name: {tag} {SECRET}")
    assert SECRET in text
    result, path = check(runner, tmp_path, text)
    assert_clean_error(result, path)
    assert "line 4" in result.output


@pytest.mark.parametrize("field,value", [("birth_date", "1970-01-01"), ("weight_kg", "60.0"), ("height_cm", "165")])
def test_tags_on_dates_and_numbers_are_clean_errors(runner, tmp_path, field, value):
    text = as_yaml(referral_data())
    for tag in ("!!int", "!!float", "!!bool", "!!timestamp"):
        changed = text.replace(f"{field}: '{value}'", f"{field}: {tag} {value}").replace(
            f"{field}: {value}\n", f"{field}: {tag} {value}\n")
        assert changed != text
        result, path = check(runner, tmp_path, changed)
        assert_clean_error(result, path, secret="\x00")


def test_duplicate_keys_are_an_error_naming_the_key_not_the_value(runner, tmp_path):
    text = as_yaml(referral_data(treatments=[])) + "treatments:\n- drug: " + SECRET + "\n  outcome: intolerance\n"
    result, path = check(runner, tmp_path, text)
    assert_clean_error(result, path)
    assert "duplicate key 'treatments'" in result.output
    result, path = check(runner, tmp_path, '{"referral_id": "A", "referral_id": "%s"}' % SECRET, "r.json")
    assert_clean_error(result, path)
    assert "duplicate key 'referral_id'" in result.output


def test_a_duplicate_key_that_is_data_is_not_echoed():
    with pytest.raises(InputError) as err:
        parse_text(f"{SECRET} Smith: 1\n{SECRET} Smith: 2\n", "r.yaml")
    assert SECRET not in str(err.value) and "line 2" in str(err.value)


def test_node_count_and_depth_are_bounded(monkeypatch):
    with pytest.raises(InputError, match="nested more than"):
        parse_text("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)) + "  " * 100 + "x: 1\n", "d.yaml")
    with pytest.raises(InputError, match="nested more than"):
        parse_text('{"a":' * 200 + "1" + "}" * 200, "d.json")
    monkeypatch.setattr(yamlio, "MAX_NODES", 1000)
    with pytest.raises(InputError, match="more than 1,000 values"):
        parse_text("".join(f"- {i}\n" for i in range(2000)), "n.yaml")
    with pytest.raises(InputError, match="more than 1,000 values"):
        parse_text(json.dumps({"a": list(range(2000))}), "n.json")


def test_long_integers_nan_and_infinity_are_clean_errors(runner, tmp_path):
    for text in ("a: " + "7" * 5000 + "\n", '{"a": ' + "7" * 5000 + "}", '{"a": NaN}', '{"a": -Infinity}'):
        with pytest.raises(InputError):
            parse_text(text, "x")


def test_non_utf8_file_is_a_clean_error(runner, tmp_path):
    result, path = check(runner, tmp_path, b"referral_id: X\npatient: {given_name: Ren\xe9e}\n")
    assert_clean_error(result, path)
    assert "not UTF-8" in result.output


def test_stdin_reader_refuses_non_utf8_and_oversize():
    import io

    with pytest.raises(InputError, match="not UTF-8"):
        yamlio.read_stream(io.BytesIO(b"a: \xff\n"))
    assert yamlio.read_stream(io.BytesIO("a: Zoë\n".encode())) == "a: Zoë\n"


def test_non_utf8_on_stdin_is_a_clean_error(runner):
    result = runner.invoke(cli, ["check", "-"], input=b"referral_id: X\npatient: {given_name: Ren\xe9e}\n")
    assert result.exit_code == 2 and "not UTF-8" in result.output


def test_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlio, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * 5000 + b"\n")
    with pytest.raises(InputError, match="limit"):
        read_text(big)
    # a FIFO-like file that reports no size is still cut at the limit
    real_fstat = os.fstat
    monkeypatch.setattr(yamlio.os, "fstat", lambda fd: os.stat_result((0,) * 6 + (0,) + (0,) * 3))
    with pytest.raises(InputError, match="limit"):
        read_text(big)


def test_yaml_text_over_its_limit_is_refused(monkeypatch):
    monkeypatch.setattr(yamlio, "MAX_YAML_BYTES", 100)
    with pytest.raises(InputError, match="over 100 bytes"):
        parse_text("a: " + "x" * 200 + "\n", "x.yaml")


def test_criteria_side_yaml_keeps_aliases_but_bounds_them_and_tags_are_clean(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("a: &x {b: 1}\nc: *x\n")
    data = read_yaml(f)
    assert data == {"a": {"b": 1}, "c": {"b": 1}} and data["a"] is data["c"]
    f.write_text(BILLION_LAUGHS)
    with pytest.raises(CriteriaError, match="values in one document"):
        read_yaml(f)
    f.write_text(f"a: !!int {SECRET}\n")
    with pytest.raises(CriteriaError) as err:
        read_yaml(f)
    assert "line 1" in str(err.value) and SECRET not in str(err.value)
    f.write_text("&a [1, *a]\n")
    with pytest.raises(CriteriaError, match="recursive"):
        read_yaml(f)


# ------------------------------------------------------------------ 2. impossible values


@pytest.mark.parametrize("patient,field", [
    ({"height_cm": 20}, "patient.height_cm"), ({"height_cm": 400}, "patient.height_cm"),
    ({"weight_kg": 0.1}, "patient.weight_kg"), ({"weight_kg": 900}, "patient.weight_kg"),
    ({"weight_kg": 300, "height_cm": 100}, "patient"), ({"weight_kg": 1, "height_cm": 200}, "patient"),
    ({"weight_kg": float("nan")}, "patient.weight_kg"), ({"height_cm": float("inf")}, "patient.height_cm"),
    ({"weight_kg": 1e308}, "patient.weight_kg"),
])
def test_physiologically_impossible_bodies_are_errors_naming_the_field(patient, field):
    with pytest.raises(InputError) as err:
        referral_from_data(referral_data(patient=patient), "r.yaml")
    assert f"  {field}" in str(err.value)


@pytest.mark.parametrize("changes,field", [
    ({"date": "9999-12-31"}, "date"), ({"patient": {"birth_date": "0001-01-01"}}, "patient.birth_date"),
    ({"date": "2101-01-01"}, "date"), ({"patient": {"birth_date": "1899-12-31"}}, "patient.birth_date"),
    ({"assessments": [{"measure": "ck", "value": 1e308, "date": "2026-11-01"}]}, "assessments.0.value"),
    ({"assessments": [{"measure": "ck", "value": float("nan"), "date": "2026-11-01"}]}, "assessments.0.value"),
    ({"assessments": [{"measure": "ck", "value": 2e6, "date": "2026-11-01"}]}, "assessments.0.value"),
    ({"request": {"cycles": 10 ** 14}}, "request.cycles"), ({"request": {"dose_g_per_kg": 1e300}}, "request.dose_g_per_kg"),
    ({"referral_id": "."}, "referral_id"), ({"referral_id": ".."}, "referral_id"),
    ({"patient": {"given_name": "A\x00B"}}, "patient.given_name"),
])
def test_impossible_values_are_errors_naming_the_field(changes, field):
    with pytest.raises(InputError) as err:
        referral_from_data(referral_data(**changes), "r.yaml")
    assert field in str(err.value)


def test_impossible_values_through_the_cli_have_no_traceback(runner, tmp_path):
    base = as_yaml(referral_data())
    for old, new in [("date: '2026-11-20'", "date: 9999-12-31"), ("weight_kg: 60.0", "weight_kg: 1e308"),
                     ("weight_kg: 60.0", "weight_kg: .nan"), ("weight_kg: 60.0", "weight_kg: " + "9" * 5000),
                     ("height_cm: 165", "height_cm: 12")]:
        assert old in base
        result, path = check(runner, tmp_path, base.replace(old, new))
        assert_clean_error(result, path)


@pytest.mark.parametrize("code", ["U07.1", "U09.9", "U071"])
def test_real_icd10cm_u_codes_are_accepted_and_simply_not_covered(code, criteria):
    from priorauth.engine.determination import determine

    ref = referral_from_data(referral_data(diagnoses=[{"code": code}]), "r.yaml")
    assert determine(ref, criteria).determination == "not_eligible"


def test_spec_examples_and_samples_still_validate():
    from priorauth.io.readers import read_referral

    paths = sorted(SPEC_EXAMPLES.glob("*.yaml")) + sorted(SAMPLES.glob("**/*.yaml")) + sorted(SAMPLES.glob("fhir/*.json"))
    assert len(paths) >= 20
    from priorauth.criteria.policy import load_criteria

    criteria = load_criteria()
    for path in paths:
        read_referral(path, criteria=criteria)


def test_a_short_child_with_high_bmi_never_gets_a_negative_dose(criteria):
    from priorauth.engine.determination import determine

    ref = referral_from_data(referral_data(patient={"height_cm": 60, "weight_kg": 15}), "r.yaml")
    det = determine(ref, criteria).to_dict()
    dosing = det["dosing"]
    assert dosing["dosing_weight_kg"] == 15 and dosing["weight_basis"] == "actual" and dosing["grams_per_cycle"] == 30
    assert any("not defined under 60 inches" in w for w in det["warnings"])


# ------------------------------------------------------------------ 3. letters are the user's


def _batch_input(tmp_path: Path, *names: str) -> Path:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    for name in names or ("dm-steroid-intolerance.yaml", "pm-first-line-failure.yaml"):
        (src / name).write_bytes((SAMPLES / name).read_bytes())
    return src


def _run(src, out, **kw):
    from priorauth.batch.run import run_batch

    kw.setdefault("jobs", 1)
    kw.setdefault("formats", ("md",))
    return run_batch(src, out, **kw)


def _worklist(out: Path) -> list[dict]:
    import csv

    with open(out / "worklist.csv", encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_an_edited_letter_is_never_overwritten_without_force(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    letter = out / "letters" / "S-DM-001.md"
    assert letter.exists()
    letter.write_text("signed by Dr Rao\n")
    summary = _run(src, out)
    assert letter.read_text() == "signed by Dr Rao\n"
    assert summary.letters_kept == 1
    row = next(r for r in _worklist(out) if r["referral"] == "S-DM-001")
    assert row["status"] == "done" and "letter_kept: letters/S-DM-001.md changed since written" in row["message"]
    _run(src, out, force=True)
    assert letter.read_text() != "signed by Dr Rao\n"


def test_a_letter_priorauth_did_not_write_is_kept_and_said_so(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    (out / "letters").mkdir(parents=True)
    mine = out / "letters" / "S-DM-001.md"
    mine.write_text("my own draft\n")
    _run(src, out)
    assert mine.read_text() == "my own draft\n"
    row = next(r for r in _worklist(out) if r["referral"] == "S-DM-001")
    assert "letter_kept: letters/S-DM-001.md not written by priorauth" in row["message"]


def test_the_end_of_a_run_deletes_only_unchanged_letters_it_wrote(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    appeal = out / "letters" / "appeal-S-DM-001.md"
    appeal.write_text("hand-written appeal\n")
    _run(src, out)
    assert appeal.exists()
    # a referral leaves the input: its unchanged letter goes, an edited one stays
    letters = sorted(p.name for p in (out / "letters").iterdir())
    assert "S-DM-001.md" in letters
    (src / "dm-steroid-intolerance.yaml").unlink()
    _run(src, out)
    assert not (out / "letters" / "S-DM-001.md").exists() and appeal.exists()
    _run(_batch_input(tmp_path), out)
    (out / "letters" / "S-DM-001.md").write_text("edited\n")
    (src / "dm-steroid-intolerance.yaml").unlink()
    _run(src, out)
    assert (out / "letters" / "S-DM-001.md").read_text() == "edited\n"


@pytest.mark.parametrize("second", [{"formats": ("html",)}, {"formats": ()}])
def test_formats_not_asked_for_in_a_rerun_are_left_in_place(tmp_path, second):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out, formats=("md",))
    before = {p.name: p.read_bytes() for p in (out / "letters").iterdir()}
    assert before
    _run(src, out, **second)
    after = {p.name: p.read_bytes() for p in (out / "letters").iterdir()}
    assert all(after.get(name) == data for name, data in before.items())


def test_a_symlinked_letters_folder_is_refused_and_its_target_untouched(tmp_path, runner):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "S-DM-001.md").write_text("precious\n")
    (target / "other.docx").write_text("precious\n")
    out.mkdir()
    (out / "letters").symlink_to(target)
    result = runner.invoke(cli, ["batch", str(src), "-o", str(out), "--format", "md", "-j", "1"])
    assert result.exit_code == 2 and "symbolic link" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in target.iterdir()) == ["S-DM-001.md", "other.docx"]
    assert (target / "S-DM-001.md").read_text() == "precious\n"


def test_a_symlink_inside_letters_is_never_written_through_or_deleted(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    outside = tmp_path / "outside.md"
    outside.write_text("precious\n")
    (out / "letters").mkdir(parents=True)
    (out / "letters" / "S-DM-001.md").symlink_to(outside)
    (out / "letters" / "gone.md").symlink_to(outside)
    _run(src, out)
    assert outside.read_text() == "precious\n"
    assert (out / "letters" / "S-DM-001.md").is_symlink() and (out / "letters" / "gone.md").is_symlink()
    row = next(r for r in _worklist(out) if r["referral"] == "S-DM-001")
    assert "letter_kept" in row["message"]


def test_a_symlinked_state_folder_is_refused_not_chmodded(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chmod(elsewhere, 0o755)
    out.mkdir()
    (out / ".state").symlink_to(elsewhere)
    with pytest.raises(InputError, match="symbolic link"):
        _run(src, out)
    assert (elsewhere.stat().st_mode & 0o777) == 0o755 and list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------ 4. bounded work per record


def _statuses(out: Path) -> dict[str, tuple[str, str]]:
    return {r["source"]: (r["status"], r["message"]) for r in _worklist(out)}


def test_a_yaml_bomb_in_a_batch_is_invalid_at_once_and_the_run_goes_on(tmp_path):
    import time

    src = _batch_input(tmp_path)
    levels = "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 12))
    bomb = "referral_id: BOMB\nl0: &l0 [" + ",".join(["lol"] * 10) + "]\n" + levels
    (src / "bomb.yaml").write_text(bomb * 1 + "#" * (15_000 - len(bomb)) + "\n")
    started = time.monotonic()
    _run(src, tmp_path / "out")
    assert time.monotonic() - started < 20
    st = _statuses(tmp_path / "out")
    assert st["bomb.yaml"][0] == "invalid" and "aliases" in st["bomb.yaml"][1]
    assert st["dm-steroid-intolerance.yaml"][0] == "done"


def _slow_for(monkeypatch, rid: str, action):
    from priorauth.engine import determination

    real = determination.determine

    def determine(referral, *a, **kw):
        if referral.referral_id == rid:
            action()
        return real(referral, *a, **kw)

    monkeypatch.setattr(determination, "determine", determine)


def test_a_record_over_the_time_limit_is_an_error_and_the_run_goes_on(tmp_path, monkeypatch):
    import time

    from priorauth.batch import run

    monkeypatch.setattr(run, "RECORD_SECONDS", 0.5)
    _slow_for(monkeypatch, "S-DM-001", lambda: time.sleep(30))
    started = time.monotonic()
    _run(_batch_input(tmp_path), tmp_path / "out")
    assert time.monotonic() - started < 15
    st = _statuses(tmp_path / "out")
    assert st["dm-steroid-intolerance.yaml"][0] == "error" and "limit per record" in st["dm-steroid-intolerance.yaml"][1]
    assert st["pm-first-line-failure.yaml"][0] == "done"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RLIMIT_AS bound needs Linux")
def test_a_record_over_the_memory_limit_is_an_error_and_the_run_goes_on(tmp_path, monkeypatch):
    from priorauth.batch import run

    monkeypatch.setattr(run, "RECORD_MEMORY_BYTES", 256 << 20)
    _slow_for(monkeypatch, "S-DM-001", lambda: bytearray(4 << 30))
    _run(_batch_input(tmp_path), tmp_path / "out", jobs=2)
    st = _statuses(tmp_path / "out")
    assert st["dm-steroid-intolerance.yaml"][0] == "error" and "memory" in st["dm-steroid-intolerance.yaml"][1]
    assert st["pm-first-line-failure.yaml"][0] == "done"
    import resource

    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # the caller's process unbounded


def test_an_input_file_over_the_size_limit_is_invalid_without_reading_it(tmp_path, monkeypatch):
    from priorauth.core import yamlio as y

    monkeypatch.setattr(y, "MAX_FILE_BYTES", 2000)
    src = _batch_input(tmp_path)
    (src / "huge.yaml").write_text("referral_id: HUGE\nnote: " + "x" * 5000 + "\n")
    _run(src, tmp_path / "out")
    st = _statuses(tmp_path / "out")
    assert st["huge.yaml"][0] == "invalid" and "limit" in st["huge.yaml"][1]


# ------------------------------------------------------------------ 5. faults


def _consistent(out: Path) -> None:
    """results.jsonl and worklist.csv from the same run: the done referrals agree."""
    res = [json.loads(line)["referral_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    done = [r["referral"] for r in _worklist(out) if r["status"] == "done"]
    assert sorted(res) == sorted(done)
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".next"))]


@pytest.mark.parametrize("damage", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 5000, b""])
def test_a_corrupt_manifest_is_set_aside_and_rebuilt(tmp_path, runner, damage):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    manifest = out / ".state" / "state.sqlite"
    manifest.write_bytes(damage)
    result = runner.invoke(cli, ["batch", str(src), "-o", str(out), "--format", "md", "-j", "1"])
    assert result.exit_code == 0, result.output
    if damage:
        assert "set aside" in result.output
        assert list((out / ".state").glob("state.sqlite.corrupt-*"))
    _consistent(out)
    again = runner.invoke(cli, ["batch", str(src), "-o", str(out), "--format", "md", "-j", "1", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 2


def test_an_unreadable_manifest_is_set_aside_and_rebuilt(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000")
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    os.chmod(out / ".state" / "state.sqlite", 0)
    summary = _run(src, out)
    assert summary.notes and "set aside" in summary.notes[0]


def test_a_read_only_output_folder_is_a_clean_error(tmp_path, runner):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    src, out = _batch_input(tmp_path), tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o500)
    try:
        result = runner.invoke(cli, ["batch", str(src), "-o", str(out), "-j", "1"])
    finally:
        os.chmod(out, 0o700)
    assert result.exit_code == 2 and "Traceback" not in result.output and "cannot" in result.output


@pytest.mark.parametrize("where", ["letter", "results", "worklist"])
def test_a_full_disk_is_a_clean_error_with_nothing_half_written(tmp_path, runner, monkeypatch, where):
    import errno as e

    from priorauth.batch import run

    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    before = {p: p.read_bytes() for p in (out / "results.jsonl", out / "worklist.csv")}
    full = OSError(e.ENOSPC, "No space left on device")
    if where == "letter":
        real = os.replace

        def replace(a, b, *x, **k):
            if "letters" in str(b):
                raise full
            return real(a, b, *x, **k)

        monkeypatch.setattr(run.os, "replace", replace)
    elif where == "results":
        real_write = run._Acceptor.__call__

        def call(self, chunk):
            real_write(self, chunk)
            raise full

        monkeypatch.setattr(run._Acceptor, "__call__", call)
    else:
        monkeypatch.setattr(run._Worklist, "write", lambda self, path: (_ for _ in ()).throw(full))
    (out / "letters" / "S-DM-001.md").unlink()  # something to write
    (src / "dm-steroid-intolerance.yaml").write_bytes((src / "dm-steroid-intolerance.yaml").read_bytes() + b"\n")
    result = runner.invoke(cli, ["batch", str(src), "-o", str(out), "--format", "md", "-j", "1"])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert {p: p.read_bytes() for p in before} == before  # the previous complete set stands


def test_a_kill_between_the_final_renames_is_completed_by_the_next_run(tmp_path, monkeypatch):
    from priorauth.batch import run

    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    (src / "bp-short-steroid-trial.yaml").write_bytes((SAMPLES / "bp-short-steroid-trial.yaml").read_bytes())
    real = run.os.replace
    calls = []

    def replace(a, b, *x, **k):
        if str(b).endswith(("results.jsonl", "worklist.csv")) and str(a).endswith(".next"):
            calls.append(b)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the kill, between the two renames
        return real(a, b, *x, **k)

    monkeypatch.setattr(run.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _run(src, out)
    monkeypatch.setattr(run.os, "replace", real)
    # The next start completes the switch first: then both are this input's, and agree.
    from priorauth.batch.run import _complete_switch, _State

    state = _State(out / ".state")
    _complete_switch(state, out)
    state.db.close()
    _consistent(out)
    assert len(_worklist(out)) == 3
    _run(src, out)
    _consistent(out)


def test_temp_files_and_folders_are_owner_only_whatever_the_umask(tmp_path):
    src = _batch_input(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    old = os.umask(0)
    try:
        _run(src, out)
        from priorauth.core.files import atomic_write

        atomic_write(tmp_path / "x" / "y" / "letter.md", "text", force=False)
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", out, out / "letters", out / ".state", tmp_path / "x",
              tmp_path / "x" / "y"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    for f in [p for p in out.rglob("*") if p.is_file()] + [tmp_path / "x" / "y" / "letter.md"]:
        assert f.stat().st_mode & 0o777 == 0o600, f


def test_concurrent_writes_without_force_never_overwrite_each_other(tmp_path):
    import threading

    from priorauth.core.files import atomic_write

    for attempt in range(5):
        target = tmp_path / f"letter{attempt}.docx"
        barrier = threading.Barrier(6)
        won: list[int] = []

        def write(i):
            barrier.wait()
            try:
                atomic_write(target, bytes([i]) * (2 << 20), force=False)
                won.append(i)
            except InputError:
                pass

        threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        assert target.read_bytes() == bytes([won[0]]) * (2 << 20)
        assert not list(tmp_path.glob(".*.tmp"))


def test_a_folder_or_fifo_named_like_a_referral_is_reported(tmp_path):
    src = _batch_input(tmp_path)
    (src / "x.yaml").mkdir()
    os.mkfifo(src / "pipe.yaml")
    _run(src, tmp_path / "out")
    st = _statuses(tmp_path / "out")
    assert st["x.yaml"][0] == "invalid" and "folder" in st["x.yaml"][1]
    assert st["pipe.yaml"][0] == "invalid" and "not a regular file" in st["pipe.yaml"][1]


def test_a_folder_is_read_in_name_order_whatever_the_file_system_order(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    text = (SAMPLES / "dm-steroid-intolerance.yaml").read_text()
    for name in ("zz.yaml", "mm.yaml", "aa.yaml", "b.yaml"):  # created out of order; same referral_id
        (src / name).write_text(text)
    _run(src, tmp_path / "out")
    rows = _worklist(tmp_path / "out")
    done = [r for r in rows if r["status"] == "done"]
    assert [r["source"] for r in done] == ["aa.yaml"]  # the first by name wins the referral_id
    dup = [r["source"] for r in rows if r["status"] == "invalid"]
    assert dup == ["b.yaml", "mm.yaml", "zz.yaml"]


def test_a_manifest_that_cannot_be_opened_is_set_aside_and_rebuilt(tmp_path):
    src, out = _batch_input(tmp_path), tmp_path / "out"
    _run(src, out)
    manifest = out / ".state" / "state.sqlite"
    manifest.unlink()
    manifest.mkdir()  # sqlite cannot open it (as with a file it may not read)
    summary = _run(src, out)
    assert summary.notes and "set aside" in summary.notes[0]
    _consistent(out)


@pytest.mark.parametrize("code", ["EACCES", "EROFS"])
def test_a_folder_that_cannot_be_written_is_a_clean_exit_2(tmp_path, runner, monkeypatch, code):
    import errno as e

    from priorauth.batch import run

    real = run.ensure_dir

    def ensure_dir(path):
        if Path(path).name == "letters":
            raise PermissionError(getattr(e, code), os.strerror(getattr(e, code)), str(path))
        return real(path)

    monkeypatch.setattr(run, "ensure_dir", ensure_dir)
    src, out = _batch_input(tmp_path), tmp_path / "out"
    result = runner.invoke(cli, ["batch", str(src), "-o", str(out), "-j", "1"])
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------ the same loader everywhere


def test_a_tagged_denial_file_is_a_clean_error(tmp_path, runner):
    denial = tmp_path / "denial.yaml"
    denial.write_text(f"reason: !!int {SECRET}\ndate: 2026-12-01\n")
    ref = SAMPLES / "dm-steroid-intolerance.yaml"
    result = runner.invoke(cli, ["letter", str(ref), "-o", str(tmp_path / "a.md"), "--format", "md",
                                 "--denial", str(denial)])
    assert_clean_error(result, denial)


def test_a_tagged_criteria_file_is_a_clean_error(tmp_path, runner):
    import shutil

    from priorauth.core.resources import criteria_dir

    crit = tmp_path / "criteria"
    shutil.copytree(criteria_dir(), crit)
    products = crit / "products.yaml"
    text = products.read_text()
    first = next(line for line in text.splitlines() if ": " in line and not line.lstrip().startswith("#"))
    key, _, value = first.partition(": ")
    products.write_text(text.replace(first, f"{key}: !!float {SECRET}", 1))
    result = runner.invoke(cli, ["lint", str(crit)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and SECRET not in result.output and "products.yaml" in result.output


def test_a_fhir_bundle_150_levels_deep_is_a_clean_error(tmp_path, runner):
    ext: dict = {"url": "http://example.org/leaf", "valueString": SECRET}
    for i in range(150):
        ext = {"url": f"http://example.org/{i}", "extension": [ext]}
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p", "extension": [ext]}}]}
    result, path = check(runner, tmp_path, json.dumps(bundle), "bundle.json")
    assert_clean_error(result, path)
    assert "nested more than" in result.output


def test_control_characters_are_escaped_in_the_worklist(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = referral_data(patient={"family_name": "Pa\x1b[31mtient\x07"})
    (src / "r.json").write_text(json.dumps(data))
    _run(src, tmp_path / "out", formats=())
    raw = (tmp_path / "out" / "worklist.csv").read_text(encoding="utf-8-sig")
    assert "\x1b" not in raw and "\x07" not in raw and "Pa\\x1b[31mtient\\x07" in raw
    assert "\\u001b" in (tmp_path / "out" / "results.jsonl").read_text() or "\x1b" not in \
        (tmp_path / "out" / "results.jsonl").read_text()


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"a" : 1, "a": 2}', '{"a"\n: 1, "a": 2}', '{"b": {"a": 1,"a":2}}',
                                  '{"x\\u0022": 1, "a": 2, "a": 3}', '{"q": "x\\":", "a": 1, "a": 2}'])
def test_duplicate_json_keys_are_found_however_the_json_is_written(text):
    with pytest.raises(InputError, match="duplicate key 'a'"):
        parse_text(text, "r.json")
