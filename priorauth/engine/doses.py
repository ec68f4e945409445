"""Reading a daily dose out of a treatment's free-text `dose` ("60 mg daily", "1 mg/kg a day").

This is reading how people write doses, not medical knowledge: what counts as adequate, and
each drug's prednisone equivalence, are in criteria (drugs.yaml, the policy's parameters).
A dose that is not plainly a daily amount (pulses, "x 3", per m2, weekly) reads as None, and
the caller asks for it to be documented rather than guess.
"""

from __future__ import annotations

import re
from typing import Optional

# Times a day for each way of saying it; the first amount in the text is the starting dose
# ("60 mg daily, tapered to 15 mg" started at 60).
_PER_DAY = {
    "daily": 1.0, "a day": 1.0, "per day": 1.0, "/day": 1.0, "/d": 1.0, "qd": 1.0, "once daily": 1.0,
    "every day": 1.0, "each day": 1.0, "q.d.": 1.0, "every morning": 1.0, "qam": 1.0,
    "twice daily": 2.0, "twice a day": 2.0, "bid": 2.0, "b.i.d.": 2.0,
    "three times daily": 3.0, "three times a day": 3.0, "tid": 3.0, "t.i.d.": 3.0,
    "every other day": 0.5, "alternate days": 0.5, "qod": 0.5,
}
_FREQ = "|".join(sorted((re.escape(k) for k in _PER_DAY), key=len, reverse=True))
_DOSE = re.compile(rf"(\d+(?:\.\d+)?)\s*mg(\s*/\s*kg)?\s*(?:(?:po|orally|by mouth|oral)\s+)?({_FREQ})(?![a-z])", re.I)
_NOT_DAILY = re.compile(r"\bpulse|\bx\s*\d|/\s*m2|\bweekly\b|\bmonthly\b", re.I)
MAX_TEXT = 200  # a dose is a few words: longer text is not read (bounded work)


def mg_per_kg_day(text: Optional[str], weight_kg: Optional[float]) -> Optional[float]:
    """The starting daily dose in mg per kg of actual weight, or None when it cannot be read."""
    if not text or len(text) > MAX_TEXT or _NOT_DAILY.search(text):
        return None
    m = _DOSE.search(text)
    if m is None:
        return None
    amount = float(m.group(1)) * _PER_DAY[m.group(3).lower()]
    if m.group(2):
        return amount
    return amount / weight_kg if weight_kg else None
