"""The README's promises: the annotated referral is valid, its first commands are the real ones."""

from __future__ import annotations

import re

import yaml

from priorauth.model.referral import referral_from_data

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_annotated_referral_example_is_a_valid_referral():
    section = README.split("## The referral", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    ref = referral_from_data(yaml.safe_load(block), "README.md")
    assert ref.referral_id == "S-DM-001" and ref.prescriber.npi == "1234567893"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert re.search(r"priorauth (batch|check) \"?samples", first_block[0]) and "pip install" in first_block[0]
    ci = (ROOT / ".ci/run").read_text()
    assert first_block[1] in ci
