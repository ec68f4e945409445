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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class Vial(_Strict):
    """One presentation of a product: its size (in the product's vial_unit) and its NDC."""

    size: float = Field(gt=0)
    ndc: Optional[str] = Field(default=None, pattern=r"^\d{5}-\d{4}-\d{2}$",
                               description="11-digit NDC, 5-4-2, as billed; null when not known")
    ndc_product: Optional[str] = Field(default=None, pattern=r"^\d{5}-\d{4}$",
                                       description="labeler-product NDC when only that is known")
    verified: bool = True
    source: Optional[str] = None


class Product(_Strict):
    therapy: Therapy
    therapies: list[Therapy] = Field(default=[], description="every therapy it may be requested for; empty: [therapy]")
    hcpcs: str
    hcpcs_candidate: Optional[str] = Field(default=None, description="a code expected to replace `hcpcs`, not verified")
    unit: BillingUnit
    vials: list[Vial] = []
    vial_unit: Literal["g", "mg"] = "g"
    aliases: list[str] = []
    stabilizer: Optional[str] = None
    excipients: list[str] = []
    verified: bool = True
    note: Optional[str] = None
    source: Optional[str] = None

    @field_validator("vials", mode="before")
    @classmethod
    def _bare_sizes(cls, value: Any) -> Any:
        # The table's first format listed bare sizes: still read, as sizes with no NDC.
        if isinstance(value, list):
            return [{"size": v, "verified": False} if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                    for v in value]
        return value

    @field_validator("hcpcs", "hcpcs_candidate")
    @classmethod
    def _hcpcs(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.fullmatch(r"[A-V]\d{4}", value):
            raise ValueError(f"{value!r} is not a HCPCS Level II code (letter and four digits)")
        return value

    @model_validator(mode="after")
    def _main_therapy_listed(self) -> "Product":
        if self.therapies and self.therapy not in self.therapies:
            raise ValueError(f"therapies: must include the product's therapy {self.therapy!r}")
        return self

    def usable_for(self, therapy: str) -> bool:
        return therapy in (self.therapies or (self.therapy,))


class WasteModifiers(_Strict):
    waste: str
    no_waste: str
    effective: IsoDate
    source: str
    verified: bool = True


class AmbiguousName(_Strict):
    """A name that stands for more than one product: read as `product`, with a warning."""

    product: str
    warning: str


class ProductTable(_Strict):
    products: dict[str, Product]
    waste_modifiers: Optional[WasteModifiers] = None
    ambiguous: dict[str, AmbiguousName] = {}

    @model_validator(mode="after")
    def _ambiguous_names_resolve(self) -> "ProductTable":
        for name, amb in self.ambiguous.items():
            if amb.product not in self.products:
                raise ValueError(f"ambiguous.{name}.product: {amb.product!r} is not a product of the table")
        return self

    @cached_property
    def _index(self) -> dict[str, str]:
        index = {name_key(n): self.ambiguous[n].product for n in self.ambiguous}
        index.update({name_key(n): brand for brand, p in self.products.items() for n in (brand, *p.aliases)})
        return index

    @cached_property
    def _ambiguity(self) -> dict[str, str]:
        return {name_key(n): a.warning for n, a in self.ambiguous.items()}

    def ambiguity(self, name: str) -> Optional[str]:
        """The warning for a name that stands for several products (None for an exact one)."""
        if not self._ambiguity or type(name) is not str:
            return None
        cache = self._ambiguity_cache  # asked once a referral, for the same few names
        try:
            return cache[name]
        except KeyError:
            found = self._ambiguity.get(name_key(name))
            if len(cache) < NAME_CACHE_SIZE:
                cache[name] = found
            return found

    @cached_property
    def _ambiguity_cache(self) -> dict[str, Optional[str]]:
        return {}

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


class AdminCode(_Strict):
    cpt: str = Field(pattern=r"^([0-9]{5}|[A-V][0-9]{4})$")
    description: str
    units: Literal["per_infusion_day", "per_dose", "infusion_record"]
    rule: Optional[str] = None
    note: Optional[str] = None
    source: str
    verified: bool = True


class PosCode(_Strict):
    name: str
    verified: bool = True


class PosFromSite(_Strict):
    code: str = Field(pattern=r"^[0-9]{2}$")
    verified: bool = True
    note: Optional[str] = None


class PlaceOfService(_Strict):
    source: str
    codes: dict[str, PosCode]
    from_site_of_care: dict[str, PosFromSite] = {}

    @model_validator(mode="after")
    def _known_codes(self) -> "PlaceOfService":
        for site, pos in self.from_site_of_care.items():
            if pos.code not in self.codes:
                raise ValueError(f"from_site_of_care.{site}.code: {pos.code!r} is not in codes")
        return self


class BillingTable(_Strict):
    """criteria/billing.yaml: administration codes and place of service."""

    administration: dict[Therapy, list[AdminCode]]
    home_administration: dict[Therapy, list[AdminCode]] = {}
    place_of_service: PlaceOfService


# ------------------------------------------------------------------ policy tree

IcdCode = Annotated[str, AfterValidator(normalize_icd10)]


# a tree without a dosing node (model_construct: no validator is built for it at import)
NO_LIMITS = Dosing.model_construct(id="dosing", label="dosing", type="dosing")


class Source(_Strict):
    citation: str
    url: Optional[str] = None
    verified: bool = True
    # A source with a `section` is a section of the policy's own `document` (payer policy
    # library): a criterion citing it is cited as "<document>, <section>: <citation>".
    section: Optional[str] = None
    # literature / background (a clinical trial, a non-US guideline) is never cited as the
    # payer's policy: a criterion citing it is cited as background beside the document.
    kind: Literal["policy", "literature", "background"] = "policy"


LineOfBusiness = Literal["original_medicare", "medicare_advantage", "medicaid", "commercial"]


class Document(_Strict):
    """The payer's own policy document a variant encodes (the payer policy library)."""

    number: Optional[str] = Field(default=None, description="the payer's policy number, e.g. CPB 0206")
    title: str
    date: Optional[str] = Field(default=None, description="effective or last-review date as the payer states it")
    section: Optional[str] = Field(default=None, description="the section holding this condition's criteria")
    url: Optional[str] = None
    publisher: Optional[str] = None
    verified: bool = True
    note: Optional[str] = None
    basis: list[str] = Field(default=[], description="baseline only: the payer documents whose common criteria it applies")

    def cite(self) -> str:
        if self.basis:  # the baseline: criteria common to the named payer documents
            return f"{self.title} ({'; '.join(self.basis)})"
        head = " ".join(x for x in (self.publisher, self.number) if x)
        text = f"{head}, {self.title}" if head else self.title
        if self.date:
            text += f" ({self.date})"
        return text

    def to_dict(self) -> dict:
        return {"number": self.number, "title": self.title, "date": self.date, "section": self.section,
                "url": self.url, "publisher": self.publisher, "verified": self.verified,
                "basis": list(self.basis), "citation": self.cite()}


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
    document: Optional[Document] = Field(default=None, description="the payer's own policy this variant encodes")
    plan_types: list[LineOfBusiness] = Field(
        default=[], description="lines of business this variant is for; empty: any the payer's plans do not "
                                "route to another payer's rules (criteria/payers.yaml)")
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
                "title": self.title, "sources": [s.citation for s in self.sources.values()],
                "document": self.document.to_dict() if self.document else None,
                "plan_types": list(self.plan_types)}

    def applies_to(self, plan_type: Optional[str]) -> bool:
        return not self.plan_types or plan_type in self.plan_types

    def citation(self, key: Optional[str]) -> Optional[str]:
        """The text a criterion citing source `key` cites: a section of the payer's document, or the
        source by name beside the document (literature and background are never the policy)."""
        return self._citations.get(key) if key else None

    @cached_property
    def _citations(self) -> dict[str, str]:
        doc = self.document
        out = {}
        for key, src in self.sources.items():
            if doc is None:
                out[key] = src.citation
            elif src.section:
                out[key] = f"{doc.cite()}, {src.section}: {src.citation}"
            elif src.kind == "policy":
                where = f", {doc.section}" if doc.section else ""
                out[key] = f"{doc.cite()}{where}; as applied here: {src.citation}"
            else:
                out[key] = f"{doc.cite()}; {src.kind}: {src.citation}"
        return out

    @cached_property
    def verified_nodes(self) -> frozenset[int]:
        """ids of the node objects whose rule is confirmed (see is_verified), worked out once."""
        return frozenset(id(n) for n in self.nodes() if self.is_verified(n))

    @cached_property
    def _node_fields(self) -> dict[int, tuple]:
        """(node, id, label, pathway, source, citation, verified) of each node, by id(node) (the node
        is kept, so its id stays its own): what a determination lists for it, looked up once per
        policy rather than once per referral."""
        verified = self.verified_nodes
        return {id(n): (n, n.id, n.label, n.pathway, n.source, self.citation(n.source), id(n) in verified)
                for n in self.nodes()}

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
    if "document" not in child and child.get("payer", parent.get("payer")) != parent.get("payer"):
        out.pop("document", None)  # another payer's variant names its own document, never its parent's
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
    drug_names: list[str] = Field(default=[], description="a drug whose name (or generic) contains one of these, being taken on the referral date")
    age_at_least: Optional[int] = None
    bmi_at_least: Optional[float] = None

    @cached_property
    def _checks(self) -> tuple:
        """(age_at_least, bmi_at_least, code prefixes, drug_classes, case-folded phrases): what
        safety._risk_factors asks, derived once rather than on every screen."""
        return (self.age_at_least, self.bmi_at_least, tuple(self.diagnosis_codes), self.drug_classes,
                tuple(w.casefold() for w in self.text))

    @cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(n.casefold() for n in self.drug_names)


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


# ------------------------------------------------------------------ payers, labels, code headers


class PayerInfo(_Strict):
    name: str
    default_plan_type: Optional[LineOfBusiness] = None
    note: Optional[str] = None


class LineInfo(_Strict):
    label: str
    prior_authorization: bool
    coverage_rules_of: Optional[str] = Field(
        default=None, description="a payer whose variants apply to this line of business when the plan's "
                                  "own payer has none for it (Medicare Advantage follows Medicare's NCDs/LCDs)")
    note: str
    source: str
    verified: bool = True


class PayerTable(_Strict):
    """criteria/payers.yaml: payer defaults and what each line of business does."""

    default_plan_type: Optional[LineOfBusiness] = None
    payers: dict[str, PayerInfo] = {}
    lines_of_business: dict[LineOfBusiness, LineInfo] = {}
    sources: dict[str, Source] = {}


class LabelIndication(_Strict):
    indication: str
    codes: list[IcdCode] = Field(min_length=1, description="ICD-10-CM codes or prefixes the indication covers")
    min_age: Optional[int] = Field(default=None, ge=0, description="age group: at least this many years")
    max_age: Optional[int] = Field(default=None, ge=0, description="age group: at most this many years")
    severity: Optional[str] = None
    since: IsoDate = Field(description="date the FDA approved this indication for this product")
    source: str
    url: Optional[str] = None
    verified: bool = True
    note: Optional[str] = None

    def age_group(self) -> str:
        if self.min_age is not None and self.max_age is None:
            return "adults" if self.min_age == 18 else f"patients aged {self.min_age} and older"
        if self.max_age is not None:
            return f"patients aged {self.min_age or 0} to {self.max_age}"
        return "all ages"

    def fits_age(self, age: int) -> bool:
        return (self.min_age is None or age >= self.min_age) and (self.max_age is None or age <= self.max_age)


class LabelTable(_Strict):
    """criteria/labels.yaml: FDA-labelled indications by product (brand as in products.yaml)."""

    labels: dict[str, list[LabelIndication]] = {}

    @cached_property
    def _index(self) -> dict[str, str]:
        return {name_key(b): b for b in self.labels}

    def for_product(self, brand: str) -> Optional[list[LabelIndication]]:
        key = self._index.get(name_key(brand))
        return self.labels[key] if key else None


class CodeHeader(_Strict):
    title: str
    billable: list[IcdCode] = Field(min_length=1, description="the billable codes under this header")
    source: str
    verified: bool = True


class HeaderTable(_Strict):
    """criteria/icd10-headers.yaml: ICD-10-CM category headers that are not billable."""

    headers: dict[str, CodeHeader] = {}
    sources: dict[str, Source] = {}

    @field_validator("headers")
    @classmethod
    def _keys(cls, value: dict) -> dict:
        return {normalize_icd10(k): v for k, v in value.items()}

    def header(self, code: str) -> Optional[CodeHeader]:
        return self.headers.get(code)


@dataclass
class Criteria:
    """Everything in a criteria folder, loaded and validated."""

    root: Path
    vocabulary: Vocabulary
    products: ProductTable
    therapies: dict[str, TherapySpec]
    policies: list[Policy] = field(default_factory=list)
    safety: SafetyRules = field(default_factory=lambda: SafetyRules(rules={}))
    billing: Optional[BillingTable] = None  # criteria/billing.yaml (none: no billing block)
    payers: PayerTable = field(default_factory=PayerTable)
    labels: LabelTable = field(default_factory=LabelTable)
    headers: HeaderTable = field(default_factory=HeaderTable)
    selection_cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def by_therapy(self) -> dict[str, list[Policy]]:
        out: dict[str, list[Policy]] = {}
        for p in self.policies:
            out.setdefault(p.therapy, []).append(p)
        return out

    def select_policy(self, therapy: str, codes: list[str], payer: str, on: Date,
                      plan_type: Optional[str] = None) -> Optional[Policy]:
        """The policy that applies (spec section 2); None when none covers a diagnosis."""
        return select_policy(self, therapy, codes, payer, on, plan_type)

    def plan_type(self, payer: str, plan_type: Optional[str] = None) -> Optional[str]:
        """The line of business: the referral's plan_type, else the payer's default (payer
        `medicare` alone means Original Medicare), else the table's default."""
        if plan_type:
            return plan_type
        info = self.payers.payers.get(payer)
        if info is not None and info.default_plan_type:
            return info.default_plan_type
        return self.payers.default_plan_type

    def prior_authorization(self, payer: str, plan_type: Optional[str] = None) -> Optional[dict]:
        """Whether the line of business does prior authorization, as the determination states it."""
        lob = self.plan_type(payer, plan_type)
        line = self.payers.lines_of_business.get(lob) if lob else None
        if line is None:
            return None
        src = self.payers.sources.get(line.source)
        return {"required": line.prior_authorization, "line_of_business": lob, "label": line.label,
                "note": line.note, "source": src.citation if src else line.source,
                "verified": line.verified and (src is None or src.verified),
                "explicit_plan_type": bool(plan_type)}


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
    billing_file = root / "billing.yaml"
    billing = load_model(BillingTable, billing_file) if billing_file.exists() else None
    tables = {name: load_model(model, root / file) if (root / file).exists() else model()
              for name, model, file in OPTIONAL_TABLES}
    loaded = Criteria(root, vocabulary, products, therapies, policies, safety, billing=billing, **tables)
    if cached is not None:
        cache.store(root, cached[0], loaded)
    return loaded


# Tables beside the policies, each optional (a criteria folder without one behaves as before).
OPTIONAL_TABLES = (("payers", PayerTable, "payers.yaml"), ("labels", LabelTable, "labels.yaml"),
                   ("headers", HeaderTable, "icd10-headers.yaml"))


def select_policy(criteria: Criteria, therapy: str, codes: list[str], payer: str, on: Date,
                  plan_type: Optional[str] = None) -> Optional[Policy]:
    """The policy for this therapy covering the first diagnosis that any policy covers.

    The payer's own variant for the line of business wins; a line of business that follows
    another payer's rules (Medicare Advantage: Medicare's NCDs and LCDs, criteria/payers.yaml)
    takes that payer's variant for it next; then the baseline. Among versions, the newest one
    in effect on the referral date. `plan_type` None: the payer's default line of business.
    """
    lob = criteria.plan_type(payer, plan_type)
    for code in codes:
        for group in _candidates(criteria, therapy, code, payer, lob):
            for p in group:
                if p.effective <= on:
                    return p
    return None


def _covering(criteria: Criteria, policy: Policy, code: str) -> bool:
    """A policy covers a code, or, for a non-billable category header, one of its billable codes
    (diagnosis_covered then asks for the billable code)."""
    if policy.covers(code):
        return True
    header = criteria.headers.header(code)
    return header is not None and any(policy.covers(c) for c in header.billable)


def _candidates(criteria: Criteria, therapy: str, code: str, payer: str,
                lob: Optional[str] = None) -> tuple[list[Policy], ...]:
    """(payer's policies, policies of the payer whose rules the line of business follows,
    baseline policies) covering the code, newest first; cached, since a batch asks the same
    few questions hundreds of thousands of times."""
    key = (therapy, code, payer, lob)
    hit = criteria.selection_cache.get(key)
    if hit is None:
        covering = sorted((p for p in criteria.by_therapy.get(therapy, ()) if _covering(criteria, p, code)),
                          key=lambda p: p.effective, reverse=True)
        line = criteria.payers.lines_of_business.get(lob) if lob else None
        rules_of = line.coverage_rules_of if line else None
        if rules_of:
            # A Medicare Advantage plan follows Medicare's coverage rules: a payer's own
            # commercial variant does not apply unless it names this line of business.
            # (The rules' own payer: a variant naming no line of business applies to all of them.)
            own = [p for p in covering if p.payer == payer and (lob in p.plan_types or
                                                                 (payer == rules_of and not p.plan_types))]
            other = [p for p in covering if p.payer == rules_of and p.applies_to(lob)] if rules_of != payer else []
        else:
            own = [p for p in covering if p.payer == payer and p.applies_to(lob)]
            other = []
        hit = (own, other, [p for p in covering if p.payer == "baseline"])
        criteria.selection_cache[key] = hit
    return hit
