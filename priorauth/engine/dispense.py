"""Which vials to open for a dose: the combination that wastes least (spec rule "vials and NDCs").

Pure arithmetic on the product's vial sizes (criteria/products.yaml passes them in). The least
total at or above the dose wins; among equal totals, the fewest vials; among those, the larger
vials (so the answer is deterministic). The NGS DME MAC Hizentra notice states the same rule:
"each dose must be prepared using the combination of vial sizes that result in the least amount
of wastage for the dosage amount being administered".

Work is bounded whatever the dose. Sizes are made integers (thousandths, divided by their gcd);
with L the largest size, an optimal combination uses fewer than L vials of the other sizes
(among L of them some non-empty subset sums to a multiple of L, and that many largest vials
would make the same total with fewer vials). So all but the last ~L*L units of a large dose
are largest vials, and a small dynamic programme over at most L*L + 2L amounts finishes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache, reduce
from typing import Any, Optional, Sequence

SCALE = 1000  # sizes and doses in thousandths of their unit (1.65 g, 0.5 g are exact)
MAX_STATES = 2_000_000  # a table of sizes whose L*L exceeds this is not exact (never for real vials)


@dataclass(frozen=True, slots=True)
class Dispense:
    counts: tuple[tuple[float, int], ...]  # (vial size, count), largest size first, counts > 0
    total: float  # what the vials hold, in the sizes' unit
    exact: bool = True  # False only when MAX_STATES capped the search

    @property
    def vials(self) -> int:
        return sum(c for _, c in self.counts)


def _scaled(value: float) -> Decimal:
    return Decimal(repr(float(value))) * SCALE


def least_waste(dose: float, sizes: Sequence[float]) -> Dispense:
    """The vials that hold at least `dose` with the least left over (ties: fewest vials).

    `dose` and `sizes` share a unit (g or mg). A dose of 0 or less needs no vial."""
    return _least_waste(float(dose), _clean(sizes))


def _clean(sizes: Sequence[float]) -> tuple[float, ...]:
    """The distinct positive sizes, largest first."""
    clean = tuple(sorted({float(s) for s in sizes if s and s > 0}, reverse=True))
    if not clean:
        raise ValueError("no vial sizes to dispense from")
    return clean


@lru_cache(maxsize=8192)
def _least_waste(dose: float, sizes: tuple[float, ...]) -> Dispense:
    units, g, by_size, bound, exact = _prepared(sizes)
    target = int((_scaled(max(dose, 0.0)) / g).to_integral_value(rounding=ROUND_CEILING))
    if target <= 0:
        return Dispense((), 0.0)
    largest = units[0]
    # Largest vials for all but the last `bound` units (an optimum uses at least this many).
    bulk = max(0, (target - bound) // largest)
    rest = target - bulk * largest
    count, choice = _table(units, bound)
    # The least reachable amount from `rest` on (some multiple of the largest vial lies within
    # `largest` of it); amounts are distinct, so the first found is the least waste.
    best = next(a for a in range(rest, rest + largest) if count[a] >= 0)
    used: dict[int, int] = {largest: bulk} if bulk else {}
    a = best
    while a:
        u = choice[a]
        used[u] = used.get(u, 0) + 1
        a -= u
    counts = tuple((by_size[u], used[u]) for u in units if used.get(u))
    total = float(Decimal((bulk * largest + best) * g) / SCALE)
    return Dispense(counts, total, exact)


@lru_cache(maxsize=256)
def _prepared(sizes: tuple[float, ...]) -> tuple:
    """(units largest first, their gcd in thousandths, size by unit, table bound, exact) of a
    set of vial sizes: the same few sets serve every dose of a batch."""
    ints = []
    for s in sizes:
        v = _scaled(s)
        if v != v.to_integral_value():
            raise ValueError(f"vial size {s:g} is finer than 1/{SCALE} of its unit")
        ints.append(int(v))
    g = reduce(math.gcd, ints)
    units = tuple(i // g for i in ints)  # largest first
    bound = units[0] * units[0]
    return units, g, dict(zip(units, sizes)), min(bound, MAX_STATES), bound <= MAX_STATES


@lru_cache(maxsize=256)
def _table(units: tuple[int, ...], bound: int) -> tuple[list[int], list[int]]:
    """Fewest vials making each exact amount below bound + 2 * largest (-1: none), and the vial
    each adds last (the largest among equally few, so results do not depend on the order sizes
    are listed). One table per set of sizes serves every dose."""
    upto = bound + 2 * units[0]
    count = [-1] * upto
    choice = [0] * upto
    count[0] = 0
    for a in range(1, upto):
        best, pick = -1, 0
        for u in units:  # largest first: a tie keeps the larger vial
            if u <= a:
                c = count[a - u]
                if c >= 0 and (best < 0 or c + 1 < best):
                    best, pick = c + 1, u
        count[a], choice[a] = best, pick
    return count, choice


_TO_MG = {"g": Decimal(1000), "mg": Decimal(1)}


def dispensing(product: Any, dose: float, prescribed_units: Optional[int], modifiers: Any,
               warnings: list[str]) -> dict[str, Any]:
    """What is dispensed for one cycle (grams) or one rituximab dose (mg): the keys the
    determination's `dosing` adds beside the prescribed `billing_units_*`.

    Per cycle, not per infusion day: whole vials can be given on each day of a cycle with only
    the last one partly used (136.5 g over 5 days from Privigen: 30, 30, 30, 30 and 16.5 g of a
    20 g vial = 140 g), so the cycle's least-waste combination is what a pharmacy dispenses.
    `product` is the products.yaml row (its vials and unit), `modifiers` its table's
    waste_modifiers (JW / JZ) or None."""
    size_key, total_key = ("size_mg", "dispensed_mg") if product.vial_unit == "mg" else ("size_g", "dispensed_grams")
    if not product.vials or dose is None:
        return {"vials": None, total_key: None, "dispensed_units": None, "waste_units": None, "waste_modifier": None}
    vials = tuple((v.size, v.ndc, v.ndc_product, v.verified) for v in product.vials)
    mods = (modifiers.waste, modifiers.no_waste) if modifiers is not None else None
    counts, total, units, waste, modifier, exact = _dispense(vials, product.unit.amount, product.unit.of,
                                                             product.vial_unit, float(dose), prescribed_units, mods)
    if not exact:
        warnings.append("vial combination approximated (vial sizes too fine-grained for an exact search)")
    return {"vials": [{size_key: size, "count": count, "ndc": ndc, "ndc_product": ndc_product, "verified": verified}
                      for size, count, ndc, ndc_product, verified in counts],
            total_key: total, "dispensed_units": units, "waste_units": waste, "waste_modifier": modifier}


@lru_cache(maxsize=8192)
def _dispense(vials: tuple, unit_amount: float, unit_of: str, vial_unit: str, dose: float,
              prescribed_units: Optional[int], mods: Optional[tuple[str, str]]) -> tuple:
    """The dispensing facts for one product and dose, worked out once (a batch repeats them)."""
    # The dose in the vials' unit (a g dose from mg vials would be unusual, but is converted).
    amount = float(Decimal(repr(dose)) * _TO_MG[unit_of] / _TO_MG[vial_unit])
    sizes, by_size, unit = _product_vials(vials, unit_amount, unit_of, vial_unit)
    found = _least_waste(amount, sizes)
    counts = tuple((size, count) + by_size[size][1:] for size, count in found.counts)
    total = Decimal(repr(found.total))
    units = int((total / unit).to_integral_value(rounding=ROUND_CEILING))
    waste = max(0, units - prescribed_units) if prescribed_units is not None else None
    modifier = None
    if mods is not None and waste is not None:
        modifier = mods[0] if waste > 0 else mods[1]
    return counts, float(total), units, waste, modifier, found.exact


@lru_cache(maxsize=256)
def _product_vials(vials: tuple, unit_amount: float, unit_of: str, vial_unit: str) -> tuple:
    """(sizes for least_waste, the vial each size names, the billing unit in the vials' unit) of
    a product: they do not depend on the dose, so a batch works them out once per product."""
    by_size: dict[float, tuple] = {}
    for v in vials:  # the first listed vial of a size gives its NDC
        by_size.setdefault(v[0], v)
    unit = Decimal(repr(unit_amount)) * _TO_MG[unit_of] / _TO_MG[vial_unit]
    return _clean([v[0] for v in vials]), by_size, unit
