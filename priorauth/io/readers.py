"""Outside formats -> Referral: a registry of readers, tried in order on the parsed document.

A new input format is one `register(Reader(...))`: a test on the parsed document and a
function that turns it into referral data (spec section 1 shape) plus import warnings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import InputError
from ..core.yamlio import parse_text, read_text
from ..model.referral import Referral, referral_from_data

Convert = Callable[[dict, str, Any], tuple[dict, list[str]]]


@dataclass(frozen=True)
class Reader:
    """`convert(document, source, criteria)`: `criteria` is the caller's loaded criteria
    (duck-typed: `.root`, `.vocabulary`, `.products`) or None; a reader loads none itself."""

    name: str
    accepts: Callable[[Any], bool]
    convert: Convert  # (document, source, criteria) -> (referral data, warnings)


READERS: list[Reader] = []


def register(reader: Reader) -> Reader:
    READERS.append(reader)
    return reader


def _fhir(data: dict, source: str, criteria: Any) -> tuple[dict, list[str]]:
    from .fhir import load_maps, referral_data_from_bundle  # only FHIR inputs pay for this import

    if criteria is None:
        raise InputError(f"{source}: a FHIR bundle is read with the criteria's drug names and code maps, "
                         "and none were given (pass the loaded criteria: read_referral(..., criteria=...))")
    return referral_data_from_bundle(data, source, maps=load_maps(os.path.join(criteria.root, "fhir")),
                                     vocabulary=criteria.vocabulary, products=criteria.products)


register(Reader("fhir", lambda d: isinstance(d, dict) and "resourceType" in d, _fhir))


def referral_from_document(data: Any, source: str, criteria: Any = None) -> tuple[Referral, list[str]]:
    """A parsed document in any registered format -> (referral, import warnings)."""
    warnings: list[str] = []
    for reader in READERS:
        if reader.accepts(data):
            data, warnings = reader.convert(data, source, criteria)
            break
    return referral_from_data(data, source), warnings


def read_referral(path: str | Path, text: str | None = None, *,
                  criteria: Any = None) -> tuple[Referral, list[str]]:
    """Read one referral (YAML, JSON, or a FHIR R4 Bundle) -> (referral, import warnings).

    `text` overrides reading `path` (stdin, JSON Lines). Import warnings name what a FHIR
    bundle held that could not be mapped; YAML and JSON referrals have none. `criteria` is the
    caller's loaded criteria (duck-typed: `.root`, `.vocabulary`, `.products`): a FHIR import
    uses its drug names and the code maps in `root/fhir`; a FHIR bundle without it is an
    InputError. Nothing here loads criteria.
    """
    source = str(path)
    if text is None:
        text = read_text(Path(path))
    if not text.strip():
        raise InputError(f"{source}: the file is empty")
    return referral_from_document(parse_text(text, source), source, criteria)


def load_referral(path: str | Path, text: str | None = None, *, criteria: Any = None) -> Referral:
    """Read one referral file; see read_referral for the warnings of a FHIR import."""
    return read_referral(path, text, criteria=criteria)[0]
