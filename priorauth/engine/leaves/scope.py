"""Leaves about a policy's scope: a rule for some of its diagnoses only, and a payer that
does not cover a therapy at all."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...core.codes import normalize_icd10
from ..context import Context
from ..nodes import NodeBase
from ..result import MET, NOT_MET, Evidence, Result, _leaf
from .registry import register


class DiagnosisIn(NodeBase):
    type: Literal["diagnosis_in"]
    codes: list[str] = Field(min_length=1, description="ICD-10-CM codes or category prefixes")

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        return [normalize_icd10(c) for c in value]  # once, when the criteria load


def _prefixes(node: DiagnosisIn) -> tuple[str, ...]:
    return tuple(c.replace(".", "") for c in node.codes)


@register(DiagnosisIn, describe=lambda node, vocab: "a diagnosis of " + ", ".join(node.codes))
def _diagnosis_in(node: DiagnosisIn, ctx: Context) -> Result:
    wanted = _prefixes(node)
    for i, d in enumerate(ctx.referral.diagnoses):
        if d.code.replace(".", "").startswith(wanted):
            label = f"{d.code} {d.description}" if d.description else d.code
            return _leaf(node, MET, f"{label} is among {', '.join(node.codes)}", [Evidence("diagnosis", i, label)])
    return _leaf(node, NOT_MET, f"this applies to {', '.join(node.codes)} only")


class NotCovered(NodeBase):
    """A payer that does not cover the therapy for these diagnoses at all; `reason` says why."""

    type: Literal["not_covered"]
    reason: str = Field(min_length=1)


@register(NotCovered, describe=lambda node, vocab: f"not covered: {node.reason}")
def _not_covered(node: NotCovered, ctx: Context) -> Result:
    return _leaf(node, NOT_MET, node.reason)
