"""`priorauth lint`: a criteria folder checked for shape (pydantic) and meaning.

Meaning: every drug class and finding kind a rule names exists, every node cites a named
source the policy defines (a citation that names a document), a payer's variant names the
payer's own policy document, node ids are unique, no two policies claim the same payer, line of
business, therapy, code and dates, and no node can never be met.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.leaves import LEAF_TYPES
from ..engine.nodes import AtLeast, walk
from . import policy as P
from ..core.errors import CriteriaError
from ..core.resources import criteria_dir



def lint_criteria(root: Path | None = None) -> tuple[list[str], int]:
    """Return (problems, number of policies checked); each problem names file and field."""
    root = criteria_dir(root)
    problems: list[str] = []
    try:
        vocab = P.load_model(P.Vocabulary, root / "drugs.yaml")
        problems += _vocabulary(vocab, root / "drugs.yaml")
    except CriteriaError as exc:
        return [str(exc)], 0
    products = None
    try:
        products = P.load_model(P.ProductTable, root / "products.yaml")
    except CriteriaError as exc:
        problems.append(str(exc))
    for brand, product in (products.products.items() if products else ()):
        if not product.vials:
            problems.append(f"{root / 'products.yaml'}: products.{brand}.vials: no vial sizes (nothing to dispense)")
        if not product.source:
            problems.append(f"{root / 'products.yaml'}: products.{brand}.source: no named source")
    if (root / "billing.yaml").exists():
        try:
            P.load_model(P.BillingTable, root / "billing.yaml")
        except CriteriaError as exc:
            problems.append(str(exc))
    try:
        raw = P.load_raw_policies(root)
    except CriteriaError as exc:
        return problems + [str(exc)], 0
    policies = []
    for key, (path, data) in raw.items():
        if data.get("abstract"):
            continue
        try:
            policies.append(P.build_policy(key, raw))
        except CriteriaError as exc:
            problems.append(str(exc))
    safety = P.SafetyRules(rules={})
    if (root / "safety.yaml").exists():
        try:
            safety = P.load_model(P.SafetyRules, root / "safety.yaml")
        except CriteriaError as exc:
            problems.append(str(exc))
    for rid, rule in safety.rules.items():
        for name in rule.products if products else []:
            if name not in products.products:
                problems.append(f"{root / 'safety.yaml'}: rules.{rid}.products: {name!r} is not a product of products.yaml")
        for cls in rule.when.drug_classes if rule.when else []:
            if cls not in vocab.classes:
                problems.append(f"{root / 'safety.yaml'}: rules.{rid}.when.drug_classes: unknown class {cls!r}")
    for pol in policies:
        problems += _policy(pol, vocab, safety)
    problems += _overlaps(policies)
    return problems, len(policies)


def _vocabulary(vocab: P.Vocabulary, path: Path) -> list[str]:
    out = []
    for cid, cls in vocab.classes.items():
        for part in cls.includes:
            if part not in vocab.classes:
                out.append(f"{path}: classes.{cid}.includes: unknown class {part!r}")
    seen: dict[str, str] = {}
    for generic, drug in vocab.drugs.items():
        for cid in drug.classes:
            if cid not in vocab.classes:
                out.append(f"{path}: drugs.{generic}.classes: unknown class {cid!r}")
        for name in (generic, *drug.brands, *drug.aliases):
            key = P.name_key(name)
            if key in seen and seen[key] != generic:
                out.append(f"{path}: drugs.{generic}: name {name!r} also belongs to {seen[key]!r}")
            seen[key] = generic
    return out


def _policy(pol: P.Policy, vocab: P.Vocabulary, safety: P.SafetyRules) -> list[str]:
    out = []
    where = f"{pol.file}: policy {pol.id}"
    for tree in filter(None, (pol.criteria, pol.continuation)):
        ids = [n.id for n in walk(tree)]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            out.append(f"{where}: node {dup}: id used twice in the {tree.id} tree")
    for node in pol.nodes():
        at = f"{where}: node {node.id}"
        if not node.source:
            out.append(f"{at}: source: every rule must cite a source, named in the policy's sources")
        elif node.source not in pol.sources:
            out.append(f"{at}: source: {node.source!r} is not among the policy's sources ({', '.join(pol.sources)})")
        elif not _named(pol.sources[node.source].citation):
            out.append(f"{at}: source: {node.source!r} has no citation naming a document")
        leaf = LEAF_TYPES.get(getattr(node, "type", None))
        if leaf is not None:
            out += [f"{at}: drug class {cls!r} is not defined in drugs.yaml"
                    for cls in leaf.classes(node) if cls not in vocab.classes]
            out += [f"{at}: {problem}" for problem in leaf.lint(node, vocab, safety)]
        if isinstance(node, AtLeast) and node.at_least > len(node.of):
            out.append(f"{at}: can never be met: at_least {node.at_least} of {len(node.of)} children")
    if pol.authorization and pol.authorization.source and pol.authorization.source not in pol.sources:
        out.append(f"{where}: authorization.source: {pol.authorization.source!r} is not among the policy's sources")
    if pol.payer != "baseline" and pol.document is None:
        out.append(f"{where}: document: a payer variant must name the payer's own policy "
                   f"(document: {{number, title, date, section, url}})")
    for key, src in pol.sources.items():
        if src.section and pol.document is None:
            out.append(f"{where}: sources.{key}.section: a section of no document (the policy has no `document`)")
    if not pol.covered_codes:
        out.append(f"{where}: covered_codes: empty, the policy can never apply")
    if not any(n.pathway for n in pol.nodes()):
        out.append(f"{where}: no node is marked `pathway: true`, so pathways_met would always be empty")
    return out


def _overlaps(policies: list[P.Policy]) -> list[str]:
    out = []
    for i, a in enumerate(policies):
        for b in policies[i + 1:]:
            if (a.payer, a.therapy, a.effective) != (b.payer, b.therapy, b.effective):
                continue
            if a.plan_types and b.plan_types and not set(a.plan_types) & set(b.plan_types):
                continue  # distinct lines of business (Original Medicare and Medicare Advantage)
            shared = [c for c in a.covered_codes if b.covers(c)] + [c for c in b.covered_codes if a.covers(c)]
            if shared:
                out.append(f"{b.file}: policy {b.id}: claims payer {b.payer!r}, therapy {b.therapy} and code(s) "
                           f"{', '.join(sorted(set(shared)))} from {b.effective}, as does {a.id} ({a.file})")
    return out


def _named(citation: str) -> bool:
    """A citation names its source: some words, not a placeholder."""
    text = (citation or "").strip()
    return len(text) >= 8 and text.casefold() not in {"todo", "tbd", "unknown", "source", "n/a"}
