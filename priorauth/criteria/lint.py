"""`priorauth lint`: a criteria folder checked for shape (pydantic) and meaning.

Meaning: every drug class and finding kind a rule names exists, every node cites a
source the policy defines, node ids are unique, no two policies claim the same payer,
therapy, code and dates, and no node can never be met.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from . import policy as P
from ..core.errors import CriteriaError
from ..core.resources import criteria_dir
from ..model.referral import FindingKind

FINDING_KINDS = set(get_args(FindingKind))


def lint_criteria(root: Path | None = None) -> tuple[list[str], int]:
    """Return (problems, number of policies checked); each problem names file and field."""
    root = criteria_dir(root)
    problems: list[str] = []
    try:
        vocab = P.load_model(P.Vocabulary, root / "drugs.yaml")
        problems += _vocabulary(vocab, root / "drugs.yaml")
    except CriteriaError as exc:
        return [str(exc)], 0
    try:
        P.load_model(P.ProductTable, root / "products.yaml")
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


def _class_has_drugs(vocab: P.Vocabulary, class_id: str) -> bool:
    wanted = vocab.members(class_id)
    return any(set(d.classes) & wanted for d in vocab.drugs.values())


def _policy(pol: P.Policy, vocab: P.Vocabulary, safety: P.SafetyRules) -> list[str]:
    out = []
    where = f"{pol.file}: policy {pol.id}"
    for tree in filter(None, (pol.criteria, pol.continuation)):
        ids = [n.id for n in P.walk(tree)]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            out.append(f"{where}: node {dup}: id used twice in the {tree.id} tree")
    for node in pol.nodes():
        at = f"{where}: node {node.id}"
        if not node.source:
            out.append(f"{at}: source: every rule must cite a source")
        elif node.source not in pol.sources:
            out.append(f"{at}: source: {node.source!r} is not among the policy's sources ({', '.join(pol.sources)})")
        for cls in _classes_named(node):
            if cls not in vocab.classes:
                out.append(f"{at}: drug class {cls!r} is not defined in drugs.yaml")
            elif isinstance(node, (P.DrugTrial, P.TherapyOngoing)) and not _class_has_drugs(vocab, cls):
                out.append(f"{at}: can never be met: no drug in drugs.yaml belongs to class {cls!r}")
        if isinstance(node, P.FindingLeaf):
            for kind in node.kinds:
                if kind not in FINDING_KINDS:
                    out.append(f"{at}: kinds: unknown finding kind {kind!r} (known: {', '.join(sorted(FINDING_KINDS))})")
        if isinstance(node, P.DrugTrial) and node.drug_class in vocab.classes:
            wanted = vocab.members(node.drug_class)
            n_drugs = sum(1 for d in vocab.drugs.values() if set(d.classes) & wanted)
            if node.min_distinct > n_drugs:
                out.append(f"{at}: can never be met: needs {node.min_distinct} different drugs, "
                           f"class {node.drug_class!r} has {n_drugs}")
        if isinstance(node, P.SafetyLeaf) and node.rule not in safety.rules:
            out.append(f"{at}: rule: {node.rule!r} is not a rule of safety.yaml")
        if isinstance(node, P.AtLeast) and node.at_least > len(node.of):
            out.append(f"{at}: can never be met: at_least {node.at_least} of {len(node.of)} children")
        if isinstance(node, P.Dosing) and node.days_per_cycle and node.days_per_cycle[0] > node.days_per_cycle[1]:
            out.append(f"{at}: days_per_cycle: minimum above maximum, can never be met")
    if pol.authorization and pol.authorization.source and pol.authorization.source not in pol.sources:
        out.append(f"{where}: authorization.source: {pol.authorization.source!r} is not among the policy's sources")
    if not pol.covered_codes:
        out.append(f"{where}: covered_codes: empty, the policy can never apply")
    if not any(n.pathway for n in pol.nodes()):
        out.append(f"{where}: no node is marked `pathway: true`, so pathways_met would always be empty")
    return out


def _classes_named(node) -> list[str]:
    if isinstance(node, (P.DrugTrial, P.ContraindicationLeaf, P.PriorCourse, P.Improvement, P.TaperAttempt)):
        return [node.drug_class]
    if isinstance(node, P.TherapyOngoing):
        return list(node.drug_classes)
    return []


def _overlaps(policies: list[P.Policy]) -> list[str]:
    out = []
    for i, a in enumerate(policies):
        for b in policies[i + 1:]:
            if (a.payer, a.therapy, a.effective) != (b.payer, b.therapy, b.effective):
                continue
            shared = [c for c in a.covered_codes if b.covers(c)] + [c for c in b.covered_codes if a.covers(c)]
            if shared:
                out.append(f"{b.file}: policy {b.id}: claims payer {b.payer!r}, therapy {b.therapy} and code(s) "
                           f"{', '.join(sorted(set(shared)))} from {b.effective}, as does {a.id} ({a.file})")
    return out
