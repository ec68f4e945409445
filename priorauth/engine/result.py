"""Three-valued results (spec section 2): status, Kleene logic, evidence, and the words leaves share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date as Date
from typing import Any, Iterable, Optional, Sequence

from ..model.referral import Treatment

MET, NOT_MET, UNKNOWN = "met", "not_met", "unknown"


def kleene_all(statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    if NOT_MET in statuses:
        return NOT_MET
    return UNKNOWN if UNKNOWN in statuses else MET


def kleene_any(statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    if MET in statuses:
        return MET
    return UNKNOWN if UNKNOWN in statuses else NOT_MET


def kleene_at_least(n: int, statuses: Iterable[str]) -> str:
    if not isinstance(statuses, list):
        statuses = list(statuses)
    met = statuses.count(MET)
    if met >= n:
        return MET
    return UNKNOWN if met + statuses.count(UNKNOWN) >= n else NOT_MET


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str  # finding, treatment, diagnosis, contraindication, assessment, patient, request
    index: Optional[int]
    summary: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index, "summary": self.summary}

    @property
    def where(self) -> str:
        """`treatments[1]`: the referral field the evidence comes from."""
        return evidence_where(self.kind, self.index)


def evidence_where(kind: str, index: Optional[int]) -> str:
    """`treatments[1]`: the referral field a piece of evidence comes from."""
    field = PLURAL.get(kind, kind)
    return f"{field}[{index}]" if index is not None else field


PLURAL = {"finding": "findings", "treatment": "treatments", "diagnosis": "diagnoses",
          "contraindication": "contraindications", "assessment": "assessments"}


@dataclass(slots=True)
class Result:
    node: Any
    status: str
    reason: str
    # A leaf has no children, and most results no evidence or nothing missing: those share the
    # empty tuple rather than hold an empty list each (a batch keeps many results for the
    # garbage collector to scan).
    evidence: Sequence[Evidence] = ()
    missing: Sequence[str] = ()
    children: Sequence["Result"] = ()

    @property
    def id(self) -> str:
        return self.node.id

    def walk(self) -> list[tuple["Result", Optional[str]]]:
        """Every result depth first, with its parent's id (a list: the output walks it twice)."""
        out: list[tuple[Result, Optional[str]]] = [(self, None)]
        _walk_children(self, out)
        return out


def _walk_children(r: Result, out: list) -> None:
    node_id = r.node.id
    for c in r.children:
        out.append((c, node_id))
        if c.children:  # most results are leaves
            _walk_children(c, out)


def _leaf(node, status, reason, evidence: Optional[list] = None, missing: Optional[list] = None) -> Result:
    # The leaves pass lists made for the result, so they are kept, not copied.
    return Result(node, status, reason, evidence or (), missing or ())


def weeks_between(start: Date, end: Date) -> float:
    return round((end - start).days / 7, 1)


def lasted_at_least(start: Date, end: Date, weeks: float) -> bool:
    # Weeks are exact day counts (4 weeks = 28 days, and exactly the minimum counts);
    # calendar months and years, where day counts vary, go by core.dates.add_months.
    return (end - start).days >= round(weeks * 7)


def humanize(value: str) -> str:
    return value.replace("_", " ")


def treatment_summary(t: Treatment, as_of: Date) -> str:
    parts = [t.drug]
    if t.route:
        parts.append(t.route)
    if t.dose:
        parts.append(t.dose)
    start, stop = t.start_date, t.end_date
    if start:
        span = f"{start} to {stop or 'present'} ({weeks_between(start, stop or as_of):g} weeks)"
        parts.append(span)
    if t.outcome:
        parts.append(humanize(t.outcome))
    return ", ".join(parts)


def weeks_text(n: float) -> str:
    return f"{n:g} week{'s' if n != 1 else ''}"
