"""Outside formats -> Referral: a registry of readers, tried in order on the parsed document.

A new input format is one `register(Reader(...))`: a test on the parsed document and a
function that turns it into referral data (spec section 1 shape) plus import warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.errors import InputError
from ..core.yamlio import parse_text, read_text
from ..model.referral import Referral, referral_from_data

Convert = Callable[[dict, str, Optional[Path]], tuple[dict, list[str]]]


@dataclass(frozen=True)
class Reader:
    name: str
    accepts: Callable[[Any], bool]
    convert: Convert  # (document, source, criteria folder) -> (referral data, warnings)


READERS: list[Reader] = []


def register(reader: Reader) -> Reader:
    READERS.append(reader)
    return reader


def _fhir(data: dict, source: str, criteria_dir: Optional[Path]) -> tuple[dict, list[str]]:
    from .fhir import referral_data_from_bundle  # only FHIR inputs pay for this import

    return referral_data_from_bundle(data, source, criteria_dir=criteria_dir)


register(Reader("fhir", lambda d: isinstance(d, dict) and "resourceType" in d, _fhir))


def referral_from_document(data: Any, source: str,
                           criteria_dir: str | Path | None = None) -> tuple[Referral, list[str]]:
    """A parsed document in any registered format -> (referral, import warnings)."""
    warnings: list[str] = []
    for reader in READERS:
        if reader.accepts(data):
            data, warnings = reader.convert(data, source, Path(criteria_dir) if criteria_dir else None)
            break
    return referral_from_data(data, source), warnings


def read_referral(path: str | Path, text: str | None = None,
                  criteria_dir: str | Path | None = None) -> tuple[Referral, list[str]]:
    """Read one referral (YAML, JSON, or a FHIR R4 Bundle) -> (referral, import warnings).

    `text` overrides reading `path` (stdin, JSON Lines). Import warnings name what a FHIR
    bundle held that could not be mapped; YAML and JSON referrals have none. `criteria_dir`
    is the criteria folder whose drug names and code maps a FHIR import uses.
    """
    source = str(path)
    if text is None:
        text = read_text(Path(path))
    if not text.strip():
        raise InputError(f"{source}: the file is empty")
    return referral_from_document(parse_text(text, source), source, criteria_dir)


def load_referral(path: str | Path, text: str | None = None) -> Referral:
    """Read one referral file; see read_referral for the warnings of a FHIR import."""
    return read_referral(path, text)[0]
