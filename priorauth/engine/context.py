"""What every leaf looks at: the referral, the policy, the vocabulary, and caches per referral."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any, Optional

from ..model.referral import Referral, Treatment
from .dosing import assess as assess_dosing
from .result import Evidence, humanize, treatment_summary
from .safety import facts as safety_facts


def _options(ctx: Context, node: Any, field: str, sep: str = " or ") -> str:
    """`muscle biopsy or emg`: a list field of the node, humanized and joined. It depends on the
    node alone, so it is made once and kept with the policy (with the node, so that its id
    cannot be taken by another object while the entry lives)."""
    memo = ctx.memo
    key = (id(node), field, sep)
    hit = memo.get(key)
    if hit is None or hit[0] is not node:
        hit = memo[key] = (node, sep.join([humanize(v) for v in getattr(node, field)]))
    return hit[1]


@dataclass
class Context:
    referral: Referral
    # The loaded criteria and the selected policy (criteria.Criteria and criteria.Policy): the
    # engine reads them through their attributes and imports nothing of the rule store.
    criteria: Any
    policy: Any
    warnings: list[str]
    # (index, treatment, generic name or None) once, so each leaf need not look names up again
    treatments: list[tuple[int, Treatment, Optional[str]]] = field(default_factory=list)
    _dosing: Any = None
    _facts: Any = None
    _label: Optional[tuple] = None  # (the label block,) once an on_label leaf has worked it out
    _members: dict = field(default_factory=dict)
    _evidence: dict = field(default_factory=dict)  # treatment index -> Evidence
    # Plain attributes, not properties: the leaves ask for them often.
    verified: frozenset = field(init=False)  # policy.verified_nodes: is_verified, once per policy
    vocab: Any = field(init=False)
    therapy: Any = field(init=False)  # the request's row of criteria/therapies.yaml
    as_of: Date = field(init=False)
    memo: dict = field(init=False)  # policy._memo (see _options)

    def __post_init__(self) -> None:
        self.verified = self.policy.verified_nodes
        self.vocab = self.criteria.vocabulary
        self.therapy = self.criteria.therapies[self.referral.request.therapy]
        self.as_of = self.referral.date
        self.memo = self.policy._memo

    def dosing(self):
        """The dosing computation, once per referral (dosing and unit-cap leaves share it)."""
        if self._dosing is None:
            limits = self.policy.dosing_node(self.referral.request.request_type)
            self._dosing = assess_dosing(self.referral, self.criteria.products, self.therapy, limits, self.warnings)
        return self._dosing

    def facts(self):
        """What safety rules look at (safety leaves and the safety screen share it)."""
        if self._facts is None:
            self._facts = safety_facts(self.referral, self.vocab)
        return self._facts

    def members(self, class_id: str) -> list[tuple[int, Treatment, str]]:
        """Treatments that are systemic members of a drug class (asked by several leaves: cached)."""
        found = self._members.get(class_id)
        if found is None:
            found = self._members[class_id] = [(i, t, g) for i, t, g in self.treatments
                                               if g and self.vocab.in_class(g, class_id, t.route)]
        return found

    def evidence(self, i: int, t: Treatment) -> Evidence:
        # Several leaves may cite the same treatment: one (immutable) Evidence serves them all.
        found = self._evidence.get(i)
        if found is None:
            found = self._evidence[i] = Evidence("treatment", i, treatment_summary(t, self.as_of))
        return found


def resolve_treatments(referral: Referral, vocab: Any, warnings: list[str]) -> list:
    """(index, treatment, generic name or None) for each treatment; unknown names are warned about."""
    resolved = []
    for i, t in enumerate(referral.treatments):
        generic = vocab.generic(t.drug)
        if generic is None:
            warnings.append(f"unknown drug name {t.drug!r} (treatments[{i}]): not counted")
        resolved.append((i, t, generic))
    return resolved


def make_context(referral: Referral, criteria: Any, policy: Any, warnings: list[str]) -> Context:
    return Context(referral, criteria, policy, warnings, resolve_treatments(referral, criteria.vocabulary, warnings))
