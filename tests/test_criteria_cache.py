"""The per-user cache of loaded criteria (issue 12, point 6): the same determinations as a
cold load, invalidated by any edit, never trusted when it is not ours, never a failure."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta

from priorauth.core.dates import add_months
from priorauth.core.resources import criteria_dir
from priorauth.criteria import cache
from priorauth.criteria import policy as policy_module
from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.io.readers import read_referral

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PRIORAUTH_CACHE_DIR", str(folder))
    monkeypatch.delenv("PRIORAUTH_NO_CACHE", raising=False)
    return folder


@pytest.fixture
def criteria_copy(tmp_path):
    return Path(shutil.copytree(ROOT / "criteria", tmp_path / "criteria"))


def no_cold_load(monkeypatch):
    """Make a cold load fail loudly: what loads then came from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("criteria were loaded from their files, not from the cache")

    monkeypatch.setattr(policy_module, "load_model", refuse)


def the_entry(folder: Path) -> Path:
    [entry] = folder.glob("criteria-*.pickle")
    return entry


def determinations(criteria) -> list[dict]:
    out = []
    for sample in SAMPLES:
        referral, warnings = read_referral(str(sample), None, criteria=criteria)
        out.append(determine(referral, criteria, warnings).to_dict())
    return out


def test_a_cache_hit_decides_every_sample_as_a_cold_load(cache_dir, monkeypatch):
    monkeypatch.setenv("PRIORAUTH_NO_CACHE", "1")
    cold = load_criteria()
    assert not cache_dir.exists()  # off means off: nothing written
    monkeypatch.delenv("PRIORAUTH_NO_CACHE")
    load_criteria()  # a miss: loads and writes the entry
    with monkeypatch.context() as m:
        no_cold_load(m)
        hit = load_criteria()
    assert hit is not cold and hit.root == cold.root
    assert [p.file for p in hit.policies] == [p.file for p in cold.policies]
    assert hit.policies == cold.policies and hit.vocabulary == cold.vocabulary and hit.safety == cold.safety
    assert determinations(hit) == determinations(cold)


def test_editing_a_criteria_file_invalidates_it(cache_dir, criteria_copy, monkeypatch):
    first = load_criteria(criteria_copy)
    with monkeypatch.context() as m:
        no_cold_load(m)
        load_criteria(criteria_copy)  # cached
    target = next(p for p in first.policies if "ivig" in Path(p.file).parts)
    path = Path(target.file)
    path.write_text(path.read_text(encoding="utf-8").replace(f"title: {target.title}", "title: Edited title", 1),
                    encoding="utf-8")
    edited = load_criteria(criteria_copy)
    assert "Edited title" in [p.title for p in edited.policies]
    (criteria_copy / "ivig" / "notes.txt").write_text("a new file counts too\n", encoding="utf-8")
    assert cache.load(criteria_copy)[1] is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "digest only", "not criteria"])
def test_a_damaged_entry_falls_back_to_a_normal_load(cache_dir, criteria_copy, damage):
    cold = load_criteria(criteria_copy)
    entry = the_entry(cache_dir)
    data = entry.read_bytes()
    key = data[len(cache.FORMAT):len(cache.FORMAT) + cache.DIGEST_BYTES]
    damaged = {
        "truncate": data[:len(data) // 2],
        "garbage": cache.FORMAT + key + b"\x80\x05not a pickle at all",
        "empty": b"",
        "digest only": cache.FORMAT + key,
        "not criteria": cache.FORMAT + key + __import__("pickle").dumps({"root": criteria_copy}),
    }[damage]
    entry.write_bytes(damaged)
    assert cache.load(criteria_copy) == (key, None)
    again = load_criteria(criteria_copy)
    assert again.policies == cold.policies
    assert cache.load(criteria_copy)[1] is not None  # the normal load wrote a good entry again


def test_a_damaged_entry_never_breaks_the_command_line(cache_dir, tmp_path):
    env = {**os.environ, "PRIORAUTH_CACHE_DIR": str(cache_dir)}
    sample = str(SAMPLES[0])
    cmd = [sys.executable, "-m", "priorauth", "check", sample, "--json"]
    cold = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert cold.returncode == 0
    entry = the_entry(cache_dir)
    entry.write_bytes(entry.read_bytes()[:-100])
    hurt = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert hurt.returncode == 0 and hurt.stderr == "" and hurt.stdout == cold.stdout


def test_modes_are_owner_only(cache_dir):
    load_criteria()
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(the_entry(cache_dir)).st_mode) == 0o600
    assert [p.name for p in cache_dir.iterdir()] == [the_entry(cache_dir).name]  # no temp file left


def test_an_entry_others_could_write_is_never_loaded(cache_dir, monkeypatch):
    load_criteria()
    entry = the_entry(cache_dir)
    root = load_criteria().root
    os.chmod(entry, 0o620)
    assert cache.load(root)[1] is None
    os.chmod(entry, 0o600)
    assert cache.load(root)[1] is not None
    os.chmod(cache_dir, 0o770)
    assert cache.load(root)[1] is None
    os.chmod(cache_dir, 0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(entry).st_uid + 1)
    assert cache.load(root)[1] is None


def test_an_entry_that_is_a_symlink_is_never_loaded(cache_dir, tmp_path):
    load_criteria()
    entry = the_entry(cache_dir)
    elsewhere = tmp_path / "elsewhere.pickle"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    assert cache.load(criteria_dir(None))[1] is None


def test_an_unwritable_cache_folder_is_no_failure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PRIORAUTH_CACHE_DIR", str(blocker / "cache"))
    assert load_criteria().policies


def test_the_cache_folder_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("PRIORAUTH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "priorauth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == Path.home() / ".cache" / "priorauth"


def test_check_from_the_cache_builds_no_criteria_validator(cache_dir):
    """What keeps `priorauth check` fast: a cached start builds no Policy or node validator and
    looks for no pydantic plugin and imports no dateutil, letters or service."""
    env = {**os.environ, "PRIORAUTH_CACHE_DIR": str(cache_dir)}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    code = ("import sys, runpy; sys.argv=['priorauth','check',%r,'--json']\n"
            "try:\n    runpy.run_module('priorauth', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "from priorauth.criteria.policy import Policy, Vocabulary\n"
            "from priorauth.engine.nodes import AllOf\n"
            "built=[c.__name__ for c in (Policy, Vocabulary, AllOf) if c.__pydantic_complete__]\n"
            "from pydantic.plugin import _loader\n"
            "mods=[m for m in ('dateutil', 'priorauth.letters', 'priorauth.service') if m in sys.modules]\n"
            "mods += [] if _loader._plugins is None else ['plugins looked for']\n"
            "sys.stderr.write('BUILT:%%s MODULES:%%s' %% (built, mods))") % str(SAMPLES[0])
    subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, cwd=ROOT, timeout=120, check=True)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert result.stderr.strip().endswith("BUILT:[] MODULES:[]"), result.stderr


def test_add_months_is_relativedelta():
    start = datetime.date(2023, 1, 1)
    for offset in range(0, 1500, 3):
        day = start + datetime.timedelta(days=offset)
        for months in (-25, -1, 0, 1, 2, 6, 11, 12, 13, 24):
            assert add_months(day, months) == day + relativedelta(months=months), (day, months)
