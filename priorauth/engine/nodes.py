"""The policy tree's shape: the fields every node has, and the three combinators.

Leaf types are registered in `engine.leaves`; `engine.leaves.Node` is the union of all of
them and the combinators, which the criteria loader validates policy files against."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # defer_build: only the models validated at the top (Policy, Vocabulary, ...) build a
    # validator, once, when criteria load; the node models inside them never need their own.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NodeBase(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    source: Optional[str] = Field(default=None, description="key into the policy's sources")
    verified: bool = True
    note: Optional[str] = None
    document: Optional[str] = Field(default=None, description="what to add to the chart when this is unknown")
    pathway: bool = Field(default=False, description="an indication pathway, listed in pathways_met")


# "Node" is the union of combinators and every registered leaf type, built in engine.leaves
# once the leaves have registered, and set there as this module's `Node`: the combinators'
# annotations resolve to it whenever their schema is first built.
class AllOf(NodeBase):
    all_of: list["Node"] = Field(min_length=1)


class AnyOf(NodeBase):
    any_of: list["Node"] = Field(min_length=1)


class AtLeast(NodeBase):
    at_least: int = Field(ge=1)
    of: list["Node"] = Field(min_length=1)


COMBINATORS = {"all_of": AllOf, "any_of": AnyOf, "at_least": AtLeast}


def children(node: Any) -> list[Any]:
    # isinstance, not getattr: a missing attribute on a pydantic model is slow to ask for.
    if isinstance(node, AllOf):
        return node.all_of
    if isinstance(node, AnyOf):
        return node.any_of
    if isinstance(node, AtLeast):
        return node.of
    return []


def walk(node: Any):
    yield node
    for child in children(node):
        yield from walk(child)
