"""Validators shared by every input format: ISO dates, ICD-10-CM code shape, NPI check digit."""

from __future__ import annotations

import functools
import re
from datetime import date as Date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


_DATES: dict[str, Date] = {}
YEARS = (1900, 2100)  # a date outside is a typo (0001-01-01, 9999-12-31), never a clinical fact


def _in_range(day: Date) -> Date:
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise ValueError(f"a date between {YEARS[0]} and {YEARS[1]} is expected")
    return day
  # text -> date: a batch meets the same dates again and again


def _iso_date(value: Any) -> Any:
    # YAML loading keeps dates as text (see _Loader), so every date takes this one
    # path; a bare number is refused rather than read as a Unix timestamp.
    if type(value) is str:
        found = _DATES.get(value)
        if found is not None:
            return found
    if isinstance(value, datetime):
        raise ValueError("expected a date (YYYY-MM-DD), not a date and time")
    if value is None:
        return value
    if isinstance(value, Date):
        return _in_range(value)
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    try:
        # The regex has fixed the shape to YYYY-MM-DD, where the standard library's C parser
        # agrees with dateutil's isoparse and costs a tenth of it (a batch parses ~10 dates a
        # referral); dateutil stays for the looser dates of FHIR imports.
        parsed = Date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real calendar date (check day and month)") from None
    _in_range(parsed)
    if len(_DATES) >= 8192:  # bounded, whatever the input
        _DATES.clear()
    _DATES[value] = parsed
    return parsed


IsoDate = Annotated[Date, BeforeValidator(_iso_date)]

# Every letter: U is the WHO's emergency chapter, in ICD-10-CM since 2020 (U07.1 COVID-19,
# U09.9 post-COVID condition). A real code that no policy covers is simply not covered.
_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


def normalize_icd10(code: str) -> str:
    """`m3312` -> `M33.12`; raises ValueError when it cannot be an ICD-10-CM code."""
    text = code.strip().upper().replace(" ", "")
    if "." not in text and len(text) > 3:
        text = f"{text[:3]}.{text[3:]}"
    if not _ICD10.match(text):
        raise ValueError("not an ICD-10-CM code (a letter, two characters, an optional dot and up to four more)")
    return text


_TEN_DIGITS = re.compile(r"\d{10}")


@functools.lru_cache(maxsize=4096)  # a batch sees the same prescribers again and again
def npi_is_valid(npi: str) -> bool:
    """Luhn check over the NPI with the card-issuer prefix 80840 (CMS NPI check-digit rule)."""
    if not _TEN_DIGITS.fullmatch(npi):
        return False
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
