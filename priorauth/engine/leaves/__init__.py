"""Every leaf type, registered, and `Node`: the union a criteria file's tree validates against.

A new leaf type is one module here (or one more `@register` in a family module): its model,
evaluate, describe and lint hooks together. Nothing else in the package lists leaf types.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from .. import nodes as _nodes
from ..nodes import COMBINATORS, AllOf, AnyOf, AtLeast
from . import continuation, diagnosis, history, limits, payer, safety, scope  # noqa: F401  (importing registers them)
from .limits import Dosing
from .registry import BY_MODEL, LEAF_TYPES, LeafType, register

__all__ = ["BY_MODEL", "LEAF_TYPES", "LeafType", "Node", "Dosing", "register"]


def _node_tag(value: Any) -> str:
    if isinstance(value, dict):
        for key in COMBINATORS:
            if key in value:
                return key
        return str(value.get("type", "missing"))
    return getattr(value, "type", None) or next(k for k in COMBINATORS if hasattr(value, k))


Node = Annotated[
    Union[
        Annotated[AllOf, Tag("all_of")],
        Annotated[AnyOf, Tag("any_of")],
        Annotated[AtLeast, Tag("at_least")],
        *[Annotated[leaf.model, Tag(name)] for name, leaf in LEAF_TYPES.items()],  # type: ignore[misc]
    ],
    Discriminator(_node_tag),
]

# The combinators' "Node" annotation resolves in engine.nodes' namespace whenever their schema
# is first built (inside Policy's, or on first direct use). No model_rebuild here: it would build
# three validators at import, which `priorauth check` never needs when the criteria come cached.
_nodes.Node = Node
