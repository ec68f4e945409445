"""What every mapper is handed: the indexed bundle, the maps, the drug names, the warnings.

The mappers load nothing: the drug vocabulary and the product table come from the caller
(duck-typed: `vocabulary.drugs` with `.brands`/`.aliases` and `vocabulary.generic(name)`;
`products.products` with `.aliases` and `products.find(name) -> (brand, product)`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date as Date
from typing import Any, Optional

from .bundle import Bundle, Notes
from .maps import Maps


@dataclass
class Context:
    bundle: Bundle
    maps: Maps
    vocabulary: Any
    products: Any
    notes: Notes
    patient: dict
    date: Date

    def is_patient(self, resource: dict, fieldname: str) -> bool:
        """Does this resource belong to the bundle's patient? References must resolve."""
        ref = resource.get(fieldname)
        if not isinstance(ref, dict) or not ref.get("reference"):
            return True  # one patient per bundle: an unset subject can only be theirs
        target = self.bundle.resolve(ref, resource, fieldname)
        if target is not self.patient:
            self.notes.skip(resource, f"its {fieldname} is not the bundle's Patient")
            return False
        return True

    def generic_in(self, text: str) -> Optional[str]:
        """The generic of the first vocabulary name (generic, brand, alias) in a text."""
        found = drug_pattern(self.vocabulary).search(text)
        return self.vocabulary.generic(found.group(1)) if found else None

    def product_in(self, text: str) -> Optional[tuple[str, Any]]:
        """(brand, product) of the first infusion product named in a text."""
        found = product_pattern(self.products).search(text)
        return self.products.find(found.group(1)) if found else None


def names_pattern(names: Any) -> re.Pattern:
    # Longest first so "mycophenolate mofetil" wins over its alias "mycophenolate".
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in n.split()) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


_PATTERNS: dict[int, tuple[Any, re.Pattern]] = {}


def _cached(owner: Any, names) -> re.Pattern:
    """One compiled pattern per vocabulary or product table object (kept alive with it)."""
    hit = _PATTERNS.get(id(owner))
    if hit is None or hit[0] is not owner:
        if len(_PATTERNS) > 16:
            _PATTERNS.clear()
        hit = _PATTERNS[id(owner)] = (owner, names_pattern(tuple(names())))
    return hit[1]


def drug_pattern(vocabulary: Any) -> re.Pattern:
    return _cached(vocabulary, lambda: (n for g, d in vocabulary.drugs.items() for n in (g, *d.brands, *d.aliases)))


def product_pattern(products: Any) -> re.Pattern:
    return _cached(products, lambda: (n for b, p in products.products.items() for n in (b, *p.aliases)))
