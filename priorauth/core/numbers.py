"""Rounding as a pharmacy does it: half up, never banker's rounding."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

_TENTH = Decimal("0.1")


def round1(x: float) -> float:
    """Round half up to 0.1 (not banker's rounding: 136.45 g is 136.5 g)."""
    text = repr(x)  # the shortest decimal that reads back as x: what is rounded
    if type(x) is float:
        whole, dot, frac = text.partition(".")
        if dot and "e" not in frac:
            # Plain "-123.456" (a few calls a referral, and Decimal is slow): the tenths, plus
            # one when the next digit is 5 or more, away from zero as ROUND_HALF_UP does.
            # int / int is correctly rounded, as float(Decimal) is: the same float.
            tenths = abs(int(whole)) * 10 + int(frac[0]) + (len(frac) > 1 and frac[1] >= "5")
            return -(tenths / 10) if whole[0] == "-" else tenths / 10
    return float(Decimal(text).quantize(_TENTH, rounding=ROUND_HALF_UP))

