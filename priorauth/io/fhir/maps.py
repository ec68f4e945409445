"""The FHIR code maps (`criteria/fhir/*.yaml`) as pydantic models, and `load_maps(folder)`.

The maps are medical conventions kept as data: SNOMED CT -> ICD-10-CM, LOINC -> measure,
route and outcome keywords, finding kinds, payer aliases. `load_maps` reads one folder and
remembers it per path and file modification times, so a batch reads it once.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from ...core.errors import CriteriaError
from ...core.yamlio import read_yaml


class _Map(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnomedTarget(_Map):
    icd10: str
    description: str
    verified: bool = True
    names: list[str] = []


class SnomedMap(_Map):
    codes: dict[str, SnomedTarget]
    names: dict[str, SnomedTarget] = {}


class PatientField(_Map):
    field: str
    units: dict[str, float]


class AssessmentCode(_Map):
    measure: str
    elevated_finding: Optional[str] = None
    latest_only: bool = False  # keep only the most recent value on or before the referral date


class LoincMap(_Map):
    patient: dict[str, PatientField]
    assessments: dict[str, AssessmentCode]


Keywords = list[Union[str, list[str]]]


class RouteWords(_Map):
    route: str
    keywords: Keywords


class OutcomeWords(_Map):
    outcome: str
    keywords: Keywords


class MedicationMap(_Map):
    route_codes: dict[str, str]
    route_words: list[RouteWords]
    outcomes: list[OutcomeWords]
    contraindication_classes: dict[str, Keywords] = {}


class KindWords(_Map):
    kind: str
    keywords: Keywords


class Supports(_Map):
    negative: Keywords
    positive: Keywords


class Interpretation(_Map):
    positive: list[str]
    negative: list[str]


class FindingMap(_Map):
    kinds: list[KindWords]
    supports: Supports
    interpretation: Interpretation


class PayerMap(_Map):
    aliases: dict[str, str] = {}


class Matcher:
    """A keyword list from the maps, compiled: whole words, `*` suffix, all-of sub-lists.

    The single keywords make one alternation (one search per text); each all-of sub-list
    keeps a pattern per word.
    """

    def __init__(self, keywords: Keywords):
        singles = [k for k in keywords if isinstance(k, str)]
        self._any = re.compile("|".join(f"(?:{self._pattern(w)})" for w in singles), re.IGNORECASE) \
            if singles else None
        self._groups = [[re.compile(self._pattern(w), re.IGNORECASE) for w in k]
                        for k in keywords if not isinstance(k, str)]

    @staticmethod
    def _pattern(word: str) -> str:
        stem = word.rstrip("*")
        body = r"\s+".join(re.escape(part) for part in stem.split())
        tail = r"[a-z0-9-]*" if word.endswith("*") else ""
        return rf"(?<![a-z0-9]){body}{tail}(?![a-z0-9])"

    def matches(self, text: str) -> bool:
        if self._any is not None and self._any.search(text):
            return True
        return any(all(p.search(text) for p in group) for group in self._groups)


@dataclass(frozen=True)
class Maps:
    snomed: SnomedMap
    loinc: LoincMap
    medications: MedicationMap
    findings: FindingMap
    payers: PayerMap

    @functools.cached_property
    def route_matchers(self) -> list[tuple[str, Matcher]]:
        return [(r.route, Matcher(r.keywords)) for r in self.medications.route_words]

    @functools.cached_property
    def outcome_matchers(self) -> list[tuple[str, Matcher]]:
        return [(o.outcome, Matcher(o.keywords)) for o in self.medications.outcomes]

    @functools.cached_property
    def class_matchers(self) -> list[tuple[str, Matcher]]:
        return [(c, Matcher(k)) for c, k in self.medications.contraindication_classes.items()]

    @functools.cached_property
    def kind_matchers(self) -> list[tuple[str, Matcher]]:
        return [(k.kind, Matcher(k.keywords)) for k in self.findings.kinds]

    @functools.cached_property
    def negative(self) -> Matcher:
        return Matcher(self.findings.supports.negative)

    @functools.cached_property
    def positive(self) -> Matcher:
        return Matcher(self.findings.supports.positive)


def _load_map(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(read_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise CriteriaError(f"{path}: {problems}") from None



MAP_FILES = {"snomed": "snomed-icd10.yaml", "loinc": "loinc.yaml", "medications": "medications.yaml",
             "findings": "findings.yaml", "payers": "payers.yaml"}
MODELS = {"snomed": SnomedMap, "loinc": LoincMap, "medications": MedicationMap, "findings": FindingMap,
          "payers": PayerMap}
_CACHE: dict[tuple, Maps] = {}
CACHE_SIZE = 4


def _stamp(folder: str) -> tuple:
    """What a cached Maps depends on: the folder and each file's modification time and size."""
    out: list[Any] = [folder]
    for name in MAP_FILES.values():
        try:
            st = os.stat(os.path.join(folder, name))
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def load_maps(folder: str | Path) -> Maps:
    """The maps in `folder` (a criteria folder's `fhir/`), loaded once per path and mtimes.

    A batch calls this for every bundle: a hit costs five `stat` calls, no file read.
    """
    key = _stamp(os.fspath(folder))
    maps = _CACHE.get(key)
    if maps is None:
        folder = Path(folder)
        maps = Maps(**{part: _load_map(MODELS[part], folder / name) for part, name in MAP_FILES.items()})
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = maps
    return maps


def first_match(matchers: Iterable[tuple[str, Matcher]], text: str) -> Optional[str]:
    return next((value for value, m in matchers if m.matches(text)), None)
