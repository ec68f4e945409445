"""Shared fixtures: the bundled criteria, a minimal valid referral to vary, a CLI runner."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.model.referral import referral_from_data

# The suite never reads or writes the user's own criteria cache: a fresh one per run, which
# the processes the tests start inherit.
os.environ["PRIORAUTH_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="priorauth-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
DATA = ROOT / "tests" / "data"
SPEC_EXAMPLES = DATA / "spec-examples"  # copies of the contract's examples

BASE = {
    "referral_id": "T-1",
    "date": "2026-11-20",
    "patient": {"given_name": "Test", "family_name": "Patient", "birth_date": "1970-01-01",
                "sex": "female", "weight_kg": 60.0, "height_cm": 165},
    "coverage": {"payer": "testpayer", "member_id": "M1"},
    "prescriber": {"name": "Doc Tor, MD", "npi": "1234567893"},
    "diagnoses": [{"code": "M33.12"}],
    "findings": [{"kind": "muscle_biopsy", "supports_diagnosis": True}],
    "treatments": [],
    "assessments": [{"measure": "creatinine", "value": 0.8, "unit": "mg/dL", "date": "2026-11-10"}],
    "request": {"therapy": "ivig", "product": "Privigen", "dose_g_per_kg": 2.0,
                "days_per_cycle": 5, "interval_weeks": 4, "cycles": 6},
}


@pytest.fixture(scope="session")
def criteria():
    return load_criteria()


def referral_data(**changes) -> dict:
    """BASE with top-level keys replaced; nested dicts are merged one level deep."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


@pytest.fixture
def decide(criteria):
    """decide(**changes) -> Determination for BASE with those changes."""

    def run(**changes):
        return determine(referral_from_data(referral_data(**changes), "test"), criteria)

    return run


def status_of(det, node_id: str) -> str:
    return next(c["status"] for c in det.criteria() if c["id"] == node_id)


@pytest.fixture
def runner():
    return CliRunner()
