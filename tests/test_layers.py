"""The package's layout rules (issue: one package in layers that only look down).

- no import circle among modules at load time;
- each subpackage imports only the layers below it (lazy imports inside functions count too);
- the data source (`io`) never depends on the rule store (`criteria`);
- every leaf type is one registration, and every node type a policy file can use is one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "priorauth"

# Which subpackages each layer may import (besides itself). Top-level modules (api, __init__,
# __main__) sit above everything.
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "engine": {"core", "model"},
    "criteria": {"core", "model", "engine"},
    "io": {"core", "model"},  # readers are handed the vocabulary: no rule store below them
    "letters": {"core", "model", "engine", "criteria"},
    "batch": {"core", "model", "engine", "criteria", "io", "letters"},
    "service": {"core", "model", "engine", "criteria", "io", "letters", "batch", "api"},
    "cli": {"core", "model", "engine", "criteria", "io", "letters", "batch", "service", "api"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, *, module_level: bool) -> set[str]:
    """Modules of the package that `name` imports (resolved), at load time or anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if module_level and isinstance(node, (ast.If, ast.Try)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        else:
            inner = [node]
        for n in inner:
            if isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name.startswith("priorauth")}
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[:len(parts) - (n.level - 1)]
                    base = ".".join(parts + ([n.module] if n.module else []))
                else:
                    base = n.module or ""
                if base.startswith("priorauth"):
                    found.add(base)
                    found |= {f"{base}.{a.name}" for a in n.names}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else None


def test_no_import_circle_at_load_time():
    mods = modules()
    graph = {m: {t for t in imports(m, p, module_level=True) if t in mods and t != m} for m, p in mods.items()}
    # Tarjan's strongly connected components, iteratively small enough to recurse here.
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_layers_only_look_down():
    wrong = []
    for m, p in modules().items():
        mine = layer(m)
        if mine is None:
            continue  # priorauth, priorauth.api, priorauth.__main__: the top
        assert mine in ALLOWED, f"{m}: subpackage {mine!r} has no place in ALLOWED"
        for target in imports(m, p, module_level=False):
            theirs = layer(target) or ("api" if target.startswith("priorauth.api") else None)
            if theirs and theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{m} imports {target}")
    assert wrong == []


def test_the_layer_test_sees_a_wrong_import(tmp_path):
    # The rule must be able to fail: an engine module importing the rule store is caught.
    fake = tmp_path / "x.py"
    fake.write_text("from ..criteria.policy import load_criteria\n")
    found = imports("priorauth.engine.x", fake, module_level=False)
    assert "priorauth.criteria.policy" in found and "criteria" not in ALLOWED["engine"]


def test_every_leaf_type_is_one_complete_registration():
    from priorauth.engine.leaves import BY_MODEL, LEAF_TYPES, Node
    from priorauth.engine.nodes import NodeBase

    assert LEAF_TYPES, "no leaf registered"
    for name, leaf in LEAF_TYPES.items():
        assert issubclass(leaf.model, NodeBase), name
        assert leaf.name == name and BY_MODEL[leaf.model] is leaf
        for hook in (leaf.evaluate, leaf.describe, leaf.lint, leaf.classes):
            assert callable(hook), name
    # The union a policy file validates against holds exactly the registered leaves.
    tags = {getattr(a, "__metadata__", [None])[0].tag for a in Node.__origin__.__args__}
    assert tags == set(LEAF_TYPES) | {"all_of", "any_of", "at_least"}


def test_every_leaf_in_the_bundled_criteria_is_registered(criteria):
    from priorauth.engine.leaves import BY_MODEL
    from priorauth.engine.nodes import COMBINATORS

    used = {type(n) for p in criteria.policies for n in p.nodes()}
    assert used - set(COMBINATORS.values()) <= set(BY_MODEL)


def test_a_second_registration_of_a_leaf_type_is_refused():
    from priorauth.engine.leaves import LEAF_TYPES, register

    leaf = next(iter(LEAF_TYPES.values()))
    with pytest.raises(ValueError, match="registered twice"):
        register(leaf.model, describe=leaf.describe)(leaf.evaluate)


@pytest.mark.parametrize("module", ["check", "letter", "batch", "fhir", "criteria", "main", "common"])
def test_any_command_module_imports_first(module):
    # A fresh interpreter importing one command module before anything else must work.
    run = subprocess.run([sys.executable, "-c", f"import priorauth.cli.{module}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
