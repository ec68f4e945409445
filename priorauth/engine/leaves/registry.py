"""The leaf registry: a leaf type is one `LeafType` holding everything about it.

`model` is the pydantic model a criteria file's node validates against (its `type` literal
names it), `evaluate` decides met / not met / unknown, `describe` says in one sentence what
the chart must show (`priorauth explain`), `lint` finds what can never work in a policy
(`priorauth lint`), `classes` names the drug classes the node refers to, and `fit` says,
for a criterion that failed on something the prescriber can change (a dose, a product, a
specialty), the change that would meet it (the determination's `would_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

Messages = list[str]


def _nothing(*_: Any) -> list:
    return []


@dataclass(frozen=True)
class LeafType:
    model: type
    evaluate: Callable[[Any, Any], Any]  # (node, Context) -> Result
    describe: Callable[[Any, Any], str]  # (node, Vocabulary) -> sentence
    lint: Callable[[Any, Any, Any], Messages] = _nothing  # (node, Vocabulary, SafetyRules) -> problems
    classes: Callable[[Any], list[str]] = _nothing  # (node) -> drug classes it names
    fit: Optional[Callable[[Any, Any], Optional[dict]]] = None  # (node, Context) -> {"change", "text"} or None

    @property
    def name(self) -> str:
        return self.model.model_fields["type"].annotation.__args__[0]


LEAF_TYPES: dict[str, LeafType] = {}  # type name -> leaf type
BY_MODEL: dict[type, LeafType] = {}  # model class -> leaf type (the evaluator's lookup)


def register(model: type, *, describe: Callable, lint: Callable = _nothing, classes: Callable = _nothing,
             fit: Optional[Callable] = None):
    """Decorator for a leaf's evaluate function: registers the whole leaf type."""

    def add(evaluate: Callable) -> Callable:
        leaf = LeafType(model, evaluate, describe, lint, classes, fit)
        if leaf.name in LEAF_TYPES:
            raise ValueError(f"leaf type {leaf.name!r} registered twice")
        LEAF_TYPES[leaf.name] = leaf
        BY_MODEL[model] = leaf
        return evaluate

    return add


def drug_class(node: Any) -> list[str]:
    return [node.drug_class]
