"""The synthetic referral generator (`priorauth samples generate`, priorauth/generate.py)."""

from __future__ import annotations

import json
import math
import stat
from collections import Counter

import pytest

from priorauth.engine.determination import determine
from priorauth.cli.main import cli
from priorauth.core.errors import InputError
from priorauth.batch.generate import INVALID_KINDS, SCENARIOS, generate, npi_with_check_digit
from priorauth.core.codes import npi_is_valid
from priorauth.io.readers import read_referral

PATHWAYS = {"refractory_to_steroids", "steroid_intolerance", "steroid_contraindication", "flare_on_taper",
            "first_line_failure", "rapidly_progressive", "first_line_indication"}


def _read(sample):
    """(referral, warnings) or the InputError / decode message, as a batch would see it."""
    try:
        text = sample.data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if not text.strip():
        return None, "the file is empty"
    try:
        return read_referral(sample.name, text), None
    except InputError as exc:
        return None, str(exc)


def test_same_seed_same_bytes_and_different_seed_differs():
    a = [(s.name, s.data) for s in generate(60, seed=5)]
    b = [(s.name, s.data) for s in generate(60, seed=5)]
    c = [(s.name, s.data) for s in generate(60, seed=6)]
    assert a == b
    assert [d for _, d in a] != [d for _, d in c]


def test_npi_check_digit_matches_known_valid_npis():
    assert npi_with_check_digit("123456789") == "1234567893"
    assert npi_with_check_digit("124531959") == "1245319599"
    assert all(npi_is_valid(npi_with_check_digit(f"{i:09d}")) for i in range(100000000, 100000300))


@pytest.mark.parametrize("jsonl", [False, True])
def test_every_determination_and_pathway_and_intent_holds(criteria, jsonl):
    n = 200
    seen_dets, seen_paths, payers, therapies, codes = Counter(), Counter(), set(), set(), set()
    for s in generate(n, seed=11, invalid_share=0.0, jsonl=jsonl):
        (ref, warnings), err = _read(s)
        assert err is None, (s.name, err)
        det = determine(ref, criteria, warnings)
        # The designed outcome is what the engine decides under the baseline policies (payer
        # variants, e.g. Medicare's LCDs, may legitimately decide otherwise).
        if det.policy is None or det.policy.payer == "baseline":
            assert det.determination == s.intent.split(":")[0], (s.name, s.intent, det.missing, det.reasons())
        seen_dets[det.determination] += 1
        seen_paths.update(det.pathways_met)
        payers.add(ref.coverage.payer)
        therapies.add(ref.request.therapy)
        codes.update(d.code for d in ref.diagnoses)
        assert npi_is_valid(ref.prescriber.npi)
    assert set(seen_dets) == {"meets_criteria", "missing_documentation", "not_eligible"}
    assert PATHWAYS <= set(seen_paths)
    assert {"medicare", "aetna", "bluepeak-health"} <= payers
    assert therapies == {"ivig", "rituximab"}
    assert {"G72.41", "L40.0"} & codes and {"L98.5", "L10.0", "L12.0", "M33.12"} <= codes


def test_first_records_walk_through_every_scenario():
    intents = [s.intent for s in generate(len(SCENARIOS), seed=0, invalid_share=0.0)]
    assert intents == list(SCENARIOS)


def test_names_use_apostrophes_ampersands_and_non_ascii():
    text = b"\n".join(s.data for s in generate(300, seed=2, invalid_share=0.0, jsonl=True)).decode("utf-8")
    names = [json.loads(line)["patient"]["family_name"] + " " + json.loads(line)["patient"]["given_name"]
             for line in text.splitlines()]
    orgs = [json.loads(line)["prescriber"].get("organization", "") for line in text.splitlines()]
    assert any("'" in n for n in names)
    assert any(any(ord(c) > 127 for c in n) for n in names)
    assert any("&" in o for o in orgs)


@pytest.mark.parametrize("jsonl", [False, True])
def test_invalid_share_is_exact_and_each_broken_record_fails_naming_its_field(jsonl):
    n, share = 250, 0.1
    samples = list(generate(n, seed=4, invalid_share=share, jsonl=jsonl))
    bad = [s for s in samples if s.invalid]
    assert len(bad) == math.floor(n * share)
    assert {s.intent.split(":")[1] for s in bad} == set(INVALID_KINDS)
    for s in bad:
        result, err = _read(s)
        assert result is None, f"{s.name} ({s.intent}) was accepted"
        assert s.field in err, (s.intent, s.field, err)
    for s in samples:
        if not s.invalid:
            assert _read(s)[1] is None


def test_dates_come_from_the_seed_not_the_clock(monkeypatch):
    import datetime as dt

    first = [s.data for s in generate(20, seed=9)]

    class Future(dt.date):
        @classmethod
        def today(cls):
            return cls(2031, 1, 1)

    monkeypatch.setattr(dt, "date", Future)
    assert [s.data for s in generate(20, seed=9)] == first


def test_cli_writes_files_0600_and_refuses_to_overwrite(runner, tmp_path):
    out = tmp_path / "gen"
    r = runner.invoke(cli, ["samples", "generate", "30", "-o", str(out), "--seed", "3"])
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert len(files) == 30
    assert {f.suffix for f in files} == {".yaml", ".json"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert "3 deliberately invalid" in r.output
    again = runner.invoke(cli, ["samples", "generate", "30", "-o", str(out), "--seed", "3"])
    assert again.exit_code == 2
    assert "already exists" in again.output and "Traceback" not in again.output
    assert runner.invoke(cli, ["samples", "generate", "30", "-o", str(out), "--force"]).exit_code == 0


def test_cli_jsonl(runner, tmp_path):
    r = runner.invoke(cli, ["samples", "generate", "40", "-o", str(tmp_path), "--jsonl", "--invalid-share", "0.25"])
    assert r.exit_code == 0, r.output
    target = tmp_path / "referrals.jsonl"
    lines = target.read_bytes().splitlines()
    assert len(lines) == 40
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    good = 0
    for line in lines:
        try:
            json.loads(line)
            good += 1
        except (ValueError, UnicodeDecodeError):
            pass
    assert 30 <= good < 40  # truncated JSON and latin-1 bytes do not parse; the rest does
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_rejects_bad_options(runner, tmp_path):
    r = runner.invoke(cli, ["samples", "generate", "5", "-o", str(tmp_path), "--invalid-share", "2"])
    assert r.exit_code == 2
    assert "--invalid-share" in r.output


@pytest.mark.parametrize("args", [["samples", "generate", "--help"], ["samples", "--help"]])
def test_help_ends_with_an_example(runner, args):
    r = runner.invoke(cli, args)
    assert r.exit_code == 0
    assert "Example:" in r.output
    assert "priorauth samples generate" in r.output.split("Example:")[1]
