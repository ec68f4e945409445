"""Criteria files as pydantic models: policies, the drug vocabulary and the product table.

A policy is a tree of `all_of` / `any_of` / `at_least` nodes over typed leaves. The leaf
types are the only medical *mechanisms* in Python (evaluate.py); which leaves a policy
uses, with which codes, drugs, lengths and citations, is data in `criteria/`.

A policy may `extends:` another and change only what differs: `parameters`, any top-level
field, nodes replaced by id (`replace`), fields of a node changed (`patch`), children
appended to a node (`add`), or nodes removed (`remove`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date as Date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.errors import CriteriaError
from ..core.codes import IsoDate, normalize_icd10
from ..core.resources import criteria_dir
from ..core.yamlio import read_yaml
from ..engine.leaves import Dosing, Node
from ..engine.nodes import walk
from ..model.referral import Therapy



class _Strict(BaseModel):
    # defer_build: only the models validated at the top (Policy, Vocabulary, ...) build a
    # validator, once, when criteria load; the node models inside them never need their own.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ------------------------------------------------------------------ vocabulary


class DrugClass(_Strict):
    label: str
    systemic_routes: list[str] = []
    includes: list[str] = []
    # Infusions given within this many weeks are one course, judged from its first infusion
    # (spec revision 2, rituximab courses).
    course_within_weeks: Optional[float] = Field(default=None, gt=0)


class Drug(_Strict):
    classes: list[str]
    default_route: Optional[str] = None
    # mg of prednisone per mg of this drug (systemic corticosteroids; dose adequacy)
    prednisone_equivalent: Optional[float] = Field(default=None, gt=0)
    brands: list[str] = []
    aliases: list[str] = []


def name_key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().casefold())


NAME_CACHE_SIZE = 10_000  # names remembered per vocabulary / product table (a bound on odd input)


class Vocabulary(_Strict):
    classes: dict[str, DrugClass]
    drugs: dict[str, Drug]

    @cached_property
    def _index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for generic, drug in self.drugs.items():
            for name in (generic, *drug.brands, *drug.aliases):
                index[name_key(name)] = generic
        return index

    def generic(self, name: str) -> Optional[str]:
        """Generic name for a generic, brand or alias name (case-insensitive); None if unknown."""
        # The same few names come back on every referral: remember the answer per spelling.
        cache = self._generic_cache
        try:
            return cache[name]
        except (KeyError, TypeError):
            found = self._index.get(name_key(name))
            if type(name) is str and len(cache) < NAME_CACHE_SIZE:
                cache[name] = found
            return found

    @cached_property
    def _generic_cache(self) -> dict[str, Optional[str]]:
        return {}

    @cached_property
    def _members(self) -> dict[str, frozenset[str]]:
        def expand(cid: str, seen: frozenset = frozenset()) -> frozenset[str]:
            parts = self.classes[cid].includes if cid in self.classes and cid not in seen else []
            return frozenset({cid}).union(*(expand(p, seen | {cid}) for p in parts))

        return {cid: expand(cid) for cid in self.classes}

    def members(self, class_id: str) -> frozenset[str]:
        """Classes a class stands for, itself included (steroid_sparing -> its parts)."""
        return self._members.get(class_id, frozenset({class_id}))

    def in_class(self, generic: str, class_id: str, route: Optional[str]) -> bool:
        """Is this drug, by this route, a systemic member of the class?"""
        key = (generic, class_id, route)
        found = self._in_class_cache.get(key)  # few drugs, classes and routes: remember each answer
        if found is None:
            drug = self.drugs[generic]
            route = route or drug.default_route
            wanted = self.members(class_id)
            found = any(c in wanted and route in self.classes[c].systemic_routes
                        for c in drug.classes if c in self.classes)
            if len(self._in_class_cache) < NAME_CACHE_SIZE:
                self._in_class_cache[key] = found
        return found

    @cached_property
    def _in_class_cache(self) -> dict[tuple, bool]:
        return {}

    def course_weeks(self, class_id: str) -> Optional[float]:
        """The course window of a class (or of a class it includes), or None."""
        for cid in self.members(class_id):
            c = self.classes.get(cid)
            if c is not None and c.course_within_weeks:
                return c.course_within_weeks
        return None

    def label(self, class_id: str) -> str:
        found = self._labels.get(class_id)
        return found if found is not None else class_id.replace("_", " ")

    @cached_property
    def _labels(self) -> dict[str, str]:
        return {cid: c.label for cid, c in self.classes.items()}


class TherapySpec(_Strict):
    label: str
    short: str
    dose_basis: Literal["weight", "fixed"]
    drug_class: str = Field(description="the drugs.yaml class whose treatments are earlier courses of it")

    @property
    def fixed_dose(self) -> bool:
        return self.dose_basis == "fixed"


class TherapyTable(_Strict):
    therapies: dict[Therapy, TherapySpec]


class BillingUnit(_Strict):
    amount: float = Field(gt=0)
    of: Literal["g", "mg"]


class Product(_Strict):
    therapy: Therapy
    hcpcs: str
    unit: BillingUnit
    vials: list[float] = []
    vial_unit: Literal["g", "mg"] = "g"
    aliases: list[str] = []
    stabilizer: Optional[str] = None
    verified: bool = True
    note: Optional[str] = None

    @field_validator("hcpcs")
    @classmethod
    def _hcpcs(cls, value: str) -> str:
        if not re.fullmatch(r"[A-V]\d{4}", value):
            raise ValueError(f"{value!r} is not a HCPCS Level II code (letter and four digits)")
        return value


class ProductTable(_Strict):
    products: dict[str, Product]

    @cached_property
    def _index(self) -> dict[str, str]:
        return {name_key(n): brand for brand, p in self.products.items() for n in (brand, *p.aliases)}

    def find(self, name: str) -> Optional[tuple[str, Product]]:
        cache = self._find_cache  # asked several times a referral, for the same few names
        try:
            return cache[name]
        except (KeyError, TypeError):
            brand = self._index.get(name_key(name))
            found = (brand, self.products[brand]) if brand else None
            if type(name) is str and len(cache) < NAME_CACHE_SIZE:
                cache[name] = found
            return found

    @cached_property
    def _find_cache(self) -> dict[str, Optional[tuple[str, Product]]]:
        return {}


# ------------------------------------------------------------------ policy tree

IcdCode = Annotated[str, AfterValidator(normalize_icd10)]


# a tree without a dosing node (model_construct: no validator is built for it at import)
NO_LIMITS = Dosing.model_construct(id="dosing", label="dosing", type="dosing")


class Source(_Strict):
    citation: str
    url: Optional[str] = None
    verified: bool = True


class Authorization(_Strict):
    months: int = Field(gt=0, description="length of an approval")
    reauthorization_lead_days: int = Field(default=30, ge=0, description="submit renewal this many days before the end")
    source: Optional[str] = None
    verified: bool = True


class Policy(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    therapy: Therapy
    payer: str = "baseline"
    version: str
    effective: IsoDate
    conditions: list[str] = []
    covered_codes: list[IcdCode] = Field(description="ICD-10-CM codes or prefixes (M33.1 covers M33.10-M33.19)")
    excluded_codes: list[IcdCode] = []
    sources: dict[str, Source]
    parameters: dict[str, Any] = {}
    literature: list[str] = Field(default=[], description="source keys cited as supporting literature in letters")
    criteria: Node
    continuation: Optional[Node] = Field(default=None, description="criteria for request_type continuation")
    authorization: Optional[Authorization] = None
    file: Optional[str] = None

    def covers(self, code: str) -> bool:
        # A listed code covers itself and every code below it (M33.1 -> M33.10 ... M33.19).
        return code.startswith(self._covered_prefixes) and not code.startswith(self._excluded_prefixes)

    @cached_property
    def _covered_prefixes(self) -> tuple[str, ...]:
        return tuple(self.covered_codes)

    @cached_property
    def _excluded_prefixes(self) -> tuple[str, ...]:
        return tuple(self.excluded_codes or ["~"])

    def nodes(self) -> list[Any]:
        return list(walk(self.criteria)) + (list(walk(self.continuation)) if self.continuation else [])

    def tree_for(self, request_type: str) -> Any:
        return self.continuation if request_type == "continuation" and self.continuation else self.criteria

    @cached_property
    def _dosing_nodes(self) -> dict[str, Any]:
        return {kind: next((n for n in walk(self.tree_for(kind)) if isinstance(n, Dosing)), None)
                for kind in ("initial", "continuation")}

    def dosing_node(self, request_type: str) -> Dosing:
        """The tree's dosing limits (looked up once per policy, not per referral); none: no limits."""
        return self._dosing_nodes[request_type] or NO_LIMITS

    @cached_property
    def reference(self) -> dict[str, Any]:
        """How a determination names the policy that decided it (spec section 3)."""
        return {"id": self.id, "payer": self.payer, "version": self.version, "effective": self.effective.isoformat(),
                "title": self.title, "sources": [s.citation for s in self.sources.values()]}

    @cached_property
    def verified_nodes(self) -> frozenset[int]:
        """ids of the node objects whose rule is confirmed (see is_verified), worked out once."""
        return frozenset(id(n) for n in self.nodes() if self.is_verified(n))

    @cached_property
    def _node_fields(self) -> dict[int, tuple]:
        """(node, id, label, pathway, source, verified) of each node, by id(node) (the node is kept,
        so its id stays its own): what a determination lists for it, looked up once per policy
        rather than once per referral."""
        verified = self.verified_nodes
        return {id(n): (n, n.id, n.label, n.pathway, n.source, id(n) in verified) for n in self.nodes()}

    @cached_property
    def _memo(self) -> dict:
        """Values the evaluator derives from this policy's nodes alone, kept for the next referral."""
        return {}

    def is_verified(self, node: Any) -> bool:
        """A rule is unconfirmed if marked so, or if it cites a source marked so."""
        source = self.sources.get(node.source) if node.source else None
        return node.verified and (source is None or source.verified)


# ------------------------------------------------------------------ loading


def _fmt(exc: ValidationError, path: Path | str) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s)"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _by_id(tree: dict, node_id: str) -> Optional[dict]:
    if tree.get("id") == node_id:
        return tree
    for key in ("all_of", "any_of", "of"):
        for child in tree.get(key) or []:
            found = _by_id(child, node_id)
            if found is not None:
                return found
    return None


def _remove(tree: dict, node_id: str) -> bool:
    for key in ("all_of", "any_of", "of"):
        kids = tree.get(key) or []
        for i, child in enumerate(kids):
            if child.get("id") == node_id:
                del kids[i]
                return True
            if _remove(child, node_id):
                return True
    return False


VARIANT_KEYS = {"extends", "replace", "add", "remove", "patch"}


def _merge(parent: dict, child: dict, path: Path) -> dict:
    """Apply a variant's changes to a copy of its parent's raw data."""
    out = copy.deepcopy(parent)
    out.pop("abstract", None)
    for key, value in child.items():
        if key in VARIANT_KEYS:
            continue
        if key in ("parameters", "sources") and isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    # A node id may stand in both trees (criteria and continuation): a change applies to each.
    trees = [t for t in (out.get("criteria"), out.get("continuation")) if isinstance(t, dict)]

    def targets(node_id: str, what: str) -> list[dict]:
        found = [n for n in (_by_id(t, node_id) for t in trees) if n is not None]
        if not found:
            raise CriteriaError(f"{path}: {what}.{node_id}: no node with that id in {child['extends']}")
        return found

    for node_id in child.get("remove") or []:
        if not any([_remove(t, node_id) for t in trees]):
            raise CriteriaError(f"{path}: remove: no node with id {node_id!r} in {child['extends']}")
    for node_id, node in (child.get("replace") or {}).items():
        for target in targets(node_id, "replace"):
            target.clear()
            target.update(copy.deepcopy(node))
    for node_id, fields in (child.get("patch") or {}).items():
        for target in targets(node_id, "patch"):
            target.update(copy.deepcopy(fields))  # e.g. a payer's own label or source for a node
    for node_id, nodes in (child.get("add") or {}).items():
        for target in targets(node_id, "add"):
            key = next((k for k in ("all_of", "any_of", "of") if k in target), None)
            if key is None:
                raise CriteriaError(f"{path}: add.{node_id}: not an all_of/any_of/at_least node")
            target[key].extend(copy.deepcopy(nodes))
    return out


def _resolve_params(value: Any, params: dict, where: str, path: Path) -> Any:
    """Replace "$name" strings by the policy's parameter values."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in params:
            raise CriteriaError(f"{path}: {where}: unknown parameter {value!r} (parameters: {', '.join(sorted(params))})")
        return copy.deepcopy(params[name])
    if isinstance(value, dict):
        return {k: _resolve_params(v, params, f"{where}.{k}", path) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_params(v, params, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return value


NOT_POLICIES = {"fhir"}  # criteria/fhir/ holds import code maps, not policies


def _policy_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml")
                  if p.parent != root and not NOT_POLICIES & set(p.relative_to(root).parts[:-1]))


class SafetyWhen(_Strict):
    """A risk is present when any of these holds."""

    diagnosis_codes: list[IcdCode] = Field(default=[], description="ICD-10-CM codes or prefixes")
    text: list[str] = Field(default=[], description="phrases found in diagnoses, contraindications, findings, details")
    drug_classes: list[str] = Field(default=[], description="a drug of these classes being taken on the referral date")
    age_at_least: Optional[int] = None
    bmi_at_least: Optional[float] = None

    @cached_property
    def _checks(self) -> tuple:
        """(age_at_least, bmi_at_least, code prefixes, drug_classes, case-folded phrases): what
        safety._risk_factors asks, derived once rather than on every screen."""
        return (self.age_at_least, self.bmi_at_least, tuple(self.diagnosis_codes), self.drug_classes,
                tuple(w.casefold() for w in self.text))


class SafetyRequire(_Strict):
    """Evidence that must be on file: an assessment of these measures, or a finding naming them."""

    measures: list[str] = []
    text: list[str] = []
    within_days: Optional[int] = Field(default=None, gt=0)

    @cached_property
    def _phrases(self) -> tuple[str, ...]:
        return tuple(w.casefold() for w in self.text)


class SafetyRule(_Strict):
    label: str
    therapies: list[str] = []
    products: list[str] = []
    when: Optional[SafetyWhen] = None
    require: Optional[SafetyRequire] = None
    message: str
    document: Optional[str] = None
    source: str
    verified: bool = True


class SafetyRules(_Strict):
    rules: dict[str, SafetyRule]

    @cached_property
    def _applicable(self) -> dict[tuple, list[tuple[str, SafetyRule]]]:
        """The rules that apply to a (therapy, product): filled in by safety.screen_all."""
        return {}


@dataclass
class Criteria:
    """Everything in a criteria folder, loaded and validated."""

    root: Path
    vocabulary: Vocabulary
    products: ProductTable
    therapies: dict[str, TherapySpec]
    policies: list[Policy] = field(default_factory=list)
    safety: SafetyRules = field(default_factory=lambda: SafetyRules(rules={}))
    selection_cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def by_therapy(self) -> dict[str, list[Policy]]:
        out: dict[str, list[Policy]] = {}
        for p in self.policies:
            out.setdefault(p.therapy, []).append(p)
        return out

    def select_policy(self, therapy: str, codes: list[str], payer: str, on: Date) -> Optional[Policy]:
        """The policy that applies (spec section 2); None when none covers a diagnosis."""
        return select_policy(self, therapy, codes, payer, on)


def load_model(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise CriteriaError(_fmt(exc, path)) from None


def load_raw_policies(root: Path) -> dict[str, tuple[Path, dict]]:
    raw: dict[str, tuple[Path, dict]] = {}
    for path in _policy_files(root):
        data = read_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise CriteriaError(f"{path}: id: a policy file needs a mapping with a string `id`")
        key = f"{data['id']}@{data.get('version', '')}"
        if key in raw:
            raise CriteriaError(f"{path}: id: {data['id']!r} version {data.get('version')!r} is also defined in {raw[key][0]}")
        raw[key] = (path, data)
    return raw


def _resolve_raw(key: str, raw: dict[str, tuple[Path, dict]], seen: tuple[str, ...] = ()) -> dict:
    path, data = raw[key]
    parent_id = data.get("extends")
    if parent_id is None:
        return copy.deepcopy(data)
    # `extends: id` takes the parent's newest version; `extends: id@version` pins one.
    candidates = [k for k in raw if k == parent_id or k.split("@")[0] == parent_id]
    if not candidates:
        raise CriteriaError(f"{path}: extends: no policy with id {parent_id!r}")
    parent_key = max(candidates, key=lambda k: str(raw[k][1].get("effective", "")))
    if parent_key in seen:
        raise CriteriaError(f"{path}: extends: circular inheritance through {parent_id!r}")
    return _merge(_resolve_raw(parent_key, raw, seen + (key,)), data, path)


def build_policy(key: str, raw: dict[str, tuple[Path, dict]]) -> Policy:
    path = raw[key][0]
    data = _resolve_raw(key, raw)
    params = data.get("parameters") or {}
    for tree in ("criteria", "continuation"):
        if data.get(tree) is not None:
            data[tree] = _resolve_params(data[tree], params, tree, path)
    data["file"] = str(path)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise CriteriaError(_fmt(exc, path)) from None


def load_criteria(root: Path | str | None = None) -> Criteria:
    root = criteria_dir(root)
    if not root.is_dir():
        raise CriteriaError(f"{root}: criteria folder not found")
    from . import cache  # a digest-checked pickle of an earlier load of this folder (see cache.py)

    cached = cache.load(root)
    if cached is not None and cached[1] is not None:
        return cached[1]
    vocabulary = load_model(Vocabulary, root / "drugs.yaml")
    products = load_model(ProductTable, root / "products.yaml")
    therapies = load_model(TherapyTable, root / "therapies.yaml").therapies
    raw = load_raw_policies(root)
    # Abstract policies are patterns: only what extends them is complete enough to validate.
    policies = [build_policy(key, raw) for key, (_, data) in raw.items() if not data.get("abstract")]
    safety_file = root / "safety.yaml"
    safety = load_model(SafetyRules, safety_file) if safety_file.exists() else SafetyRules(rules={})
    loaded = Criteria(root, vocabulary, products, therapies, policies, safety)
    if cached is not None:
        cache.store(root, cached[0], loaded)
    return loaded


def select_policy(criteria: Criteria, therapy: str, codes: list[str], payer: str, on: Date) -> Optional[Policy]:
    """The policy for this therapy covering the first diagnosis that any policy covers.

    The payer's own variant wins over the baseline; among versions, the newest one in
    effect on the referral date.
    """
    for code in codes:
        for group in _candidates(criteria, therapy, code, payer):
            for p in group:
                if p.effective <= on:
                    return p
    return None


def _candidates(criteria: Criteria, therapy: str, code: str, payer: str) -> tuple[list[Policy], list[Policy]]:
    """(payer's policies, baseline policies) covering the code, newest first; cached, since a
    batch asks the same few questions hundreds of thousands of times."""
    key = (therapy, code, payer)
    hit = criteria.selection_cache.get(key)
    if hit is None:
        covering = sorted((p for p in criteria.by_therapy.get(therapy, ()) if p.covers(code)),
                          key=lambda p: p.effective, reverse=True)
        hit = ([p for p in covering if p.payer == payer], [p for p in covering if p.payer == "baseline"])
        criteria.selection_cache[key] = hit
    return hit
