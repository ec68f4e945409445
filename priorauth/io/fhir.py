"""FHIR R4 Bundle -> referral data (spec section 1), for `check` and `import-fhir` (issue 6).

`referral_data_from_bundle(data, source)` returns the referral as plain data plus warnings.
The bundle is validated with fhir.resources (R4B models: structure and types); the mapping
then reads the validated JSON. Every medical convention (SNOMED CT -> ICD-10-CM, LOINC ->
measure, route and outcome keywords, finding kinds) is data in `criteria/fhir/`; this module
only knows FHIR's shape. docs/fhir-mapping.md describes the mapping.

Messages name the file, the resource (type/id) and the field, never patient data: warnings
flow into determinations and errors onto a terminal.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date as Date
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from dateutil.parser import isoparse
from pydantic import BaseModel, ConfigDict, ValidationError

from ..engine.dosing import round1
from ..core.errors import CriteriaError, InputError
from ..core.codes import normalize_icd10, npi_is_valid
from ..core.yamlio import read_yaml
from ..core.resources import criteria_dir as criteria_dir_of
from ..criteria.policy import Criteria, load_criteria

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ICD10CM_SYSTEMS = {"http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"}
SNOMED_SYSTEM = "http://snomed.info/sct"
LOINC_SYSTEM = "http://loinc.org"
DAYS_PER_CYCLE_URL = "https://priorauth.example.org/fhir/StructureDefinition/days-per-cycle"
BUNDLE_TYPES = {"collection", "transaction", "searchset", "document", "batch"}
#: keys a --request file may hold (referral-format fields the EHR export may lack)
SUPPLEMENT_KEYS = {"request", "coverage", "prescriber", "date", "referral_id", "clinical_course", "diagnoses"}
#: resource types this importer reads; any other type is reported once as unused
MAPPED_TYPES = {"Patient", "Coverage", "Practitioner", "PractitionerRole", "Organization", "Condition",
                "Observation", "MedicationStatement", "MedicationRequest", "Medication", "AllergyIntolerance",
                "AdverseEvent", "Procedure", "DiagnosticReport"}
MAX_IDS_IN_WARNING = 5


# ------------------------------------------------------------------ maps (criteria/fhir/*.yaml)


class _Map(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnomedTarget(_Map):
    icd10: str
    description: str
    verified: bool = True
    names: list[str] = []


class SnomedMap(_Map):
    codes: dict[str, SnomedTarget]
    names: dict[str, SnomedTarget] = {}


class PatientField(_Map):
    field: str
    units: dict[str, float]


class AssessmentCode(_Map):
    measure: str
    elevated_finding: Optional[str] = None


class LoincMap(_Map):
    patient: dict[str, PatientField]
    assessments: dict[str, AssessmentCode]


Keywords = list[Union[str, list[str]]]


class RouteWords(_Map):
    route: str
    keywords: Keywords


class OutcomeWords(_Map):
    outcome: str
    keywords: Keywords


class MedicationMap(_Map):
    route_codes: dict[str, str]
    route_words: list[RouteWords]
    outcomes: list[OutcomeWords]
    contraindication_classes: dict[str, Keywords] = {}


class KindWords(_Map):
    kind: str
    keywords: Keywords


class Supports(_Map):
    negative: Keywords
    positive: Keywords


class Interpretation(_Map):
    positive: list[str]
    negative: list[str]


class FindingMap(_Map):
    kinds: list[KindWords]
    supports: Supports
    interpretation: Interpretation


class PayerMap(_Map):
    aliases: dict[str, str] = {}


class Matcher:
    """A keyword list from the maps, compiled: whole words, `*` suffix, all-of sub-lists."""

    def __init__(self, keywords: Keywords):
        self._groups = [[self._word(w) for w in ([k] if isinstance(k, str) else k)] for k in keywords]

    @staticmethod
    def _word(word: str) -> re.Pattern:
        stem = word.rstrip("*")
        body = r"\s+".join(re.escape(part) for part in stem.split())
        tail = r"[a-z0-9-]*" if word.endswith("*") else ""
        return re.compile(rf"(?<![a-z0-9]){body}{tail}(?![a-z0-9])", re.IGNORECASE)

    def matches(self, text: str) -> bool:
        return any(all(p.search(text) for p in group) for group in self._groups)


@dataclass(frozen=True)
class Maps:
    snomed: SnomedMap
    loinc: LoincMap
    medications: MedicationMap
    findings: FindingMap
    payers: PayerMap

    @functools.cached_property
    def route_matchers(self) -> list[tuple[str, Matcher]]:
        return [(r.route, Matcher(r.keywords)) for r in self.medications.route_words]

    @functools.cached_property
    def outcome_matchers(self) -> list[tuple[str, Matcher]]:
        return [(o.outcome, Matcher(o.keywords)) for o in self.medications.outcomes]

    @functools.cached_property
    def class_matchers(self) -> list[tuple[str, Matcher]]:
        return [(c, Matcher(k)) for c, k in self.medications.contraindication_classes.items()]

    @functools.cached_property
    def kind_matchers(self) -> list[tuple[str, Matcher]]:
        return [(k.kind, Matcher(k.keywords)) for k in self.findings.kinds]

    @functools.cached_property
    def negative(self) -> Matcher:
        return Matcher(self.findings.supports.negative)

    @functools.cached_property
    def positive(self) -> Matcher:
        return Matcher(self.findings.supports.positive)


def _load_map(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(read_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise CriteriaError(f"{path}: {problems}") from None


@functools.lru_cache(maxsize=4)
def load_maps(root: Optional[Path] = None) -> Maps:
    folder = criteria_dir_of(root) / "fhir"
    return Maps(_load_map(SnomedMap, folder / "snomed-icd10.yaml"), _load_map(LoincMap, folder / "loinc.yaml"),
                _load_map(MedicationMap, folder / "medications.yaml"), _load_map(FindingMap, folder / "findings.yaml"),
                _load_map(PayerMap, folder / "payers.yaml"))


# ------------------------------------------------------------------ small FHIR helpers


def rid(resource: dict) -> str:
    """`MedicationRequest/abc`: how a resource is named in messages (never its content)."""
    return f"{resource.get('resourceType')}/{resource.get('id') or '(no id)'}"


def texts(concept: Any) -> list[str]:
    """Human-readable words of a CodeableConcept (or a list of them): text and displays."""
    if isinstance(concept, list):
        return [t for c in concept for t in texts(c)]
    if not isinstance(concept, dict):
        return []
    out = [concept["text"]] if concept.get("text") else []
    out += [c["display"] for c in concept.get("coding") or [] if c.get("display")]
    return list(dict.fromkeys(out))  # Synthea repeats the display as the text


def codes(concept: Any, system: str | set[str]) -> list[str]:
    systems = {system} if isinstance(system, str) else system
    if isinstance(concept, list):
        return [c for item in concept for c in codes(item, systems)]
    if not isinstance(concept, dict):
        return []
    return [c["code"] for c in concept.get("coding") or [] if c.get("system") in systems and c.get("code")]


def full_date(value: Any) -> Optional[Date]:
    """The calendar date of a FHIR date/dateTime as written; None if absent or partial.

    A partial date ("2019", "2019-03") is not a day: using its first day would invent a
    start date, so callers report it instead.
    """
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return isoparse(value[:10]).date()
    except ValueError:
        return None


def first_date(*values: Any) -> Optional[Date]:
    for value in values:
        day = full_date(value)
        if day:
            return day
    return None


def period_start(period: Any) -> Any:
    return period.get("start") if isinstance(period, dict) else None


def period_end(period: Any) -> Any:
    return period.get("end") if isinstance(period, dict) else None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")


def sanitize_id(text: str) -> str:
    """A Bundle or Patient id made fit for referral_id: [A-Za-z0-9._-]{1,64}."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:64]


def human_name(names: Any) -> tuple[str, str, str]:
    """(given, family, suffix) from the official (else first) HumanName."""
    names = [n for n in names or [] if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    def words(key: str) -> list[str]:  # FHIR JSON allows nulls in primitive arrays (paired with _given)
        return [w for w in name.get(key) or [] if isinstance(w, str) and w.strip()]

    return " ".join(words("given")), name.get("family") or "", ", ".join(words("suffix"))


def first_match(matchers: Iterable[tuple[str, Matcher]], text: str) -> Optional[str]:
    return next((value for value, m in matchers if m.matches(text)), None)


# ------------------------------------------------------------------ the bundle, indexed


class Notes:
    """Warnings, grouped so that 60 unmapped Observations make one line, not 60."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], list[str]] = {}
        self._single: list[str] = []

    def skip(self, resource: dict, why: str) -> None:
        key = (str(resource.get("resourceType")), why)
        self._groups.setdefault(key, []).append(str(resource.get("id") or "(no id)"))

    def add(self, message: str) -> None:
        self._single.append(message)

    def lines(self) -> list[str]:
        out = list(self._single)
        for (rtype, why), ids in self._groups.items():
            shown = ", ".join(ids[:MAX_IDS_IN_WARNING])
            more = f" and {len(ids) - MAX_IDS_IN_WARNING} more" if len(ids) > MAX_IDS_IN_WARNING else ""
            noun = f"{len(ids)} {rtype} resources" if len(ids) > 1 else rtype
            out.append(f"FHIR import: {noun} not mapped ({shown}{more}): {why}")
        return out


@dataclass
class Bundle:
    source: str
    data: dict
    resources: list[dict] = field(default_factory=list)
    index: dict[str, dict] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)  # id() of resources some mapping consumed

    def of_type(self, rtype: str) -> list[dict]:
        return [r for r in self.resources if r.get("resourceType") == rtype]

    def error(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.source}: {where}: {problem}")

    def resolve(self, ref: Any, owner: dict, fieldname: str, types: Iterable[str] = ()) -> Optional[dict]:
        """The resource a Reference points to; None when it has no `reference` to follow.

        A reference to a resource that is not in the bundle is an error: the mapping would
        otherwise attach data to nobody (a MedicationRequest of another patient).
        """
        if not isinstance(ref, dict) or not ref.get("reference"):
            return None
        target = self._lookup(ref["reference"], owner)
        if target is None:
            raise self.error(f"{rid(owner)} {fieldname}",
                             f"reference {ref['reference']!r} does not resolve to a resource in the bundle")
        types = tuple(types)
        if types and target.get("resourceType") not in types:
            raise self.error(f"{rid(owner)} {fieldname}",
                             f"refers to a {target.get('resourceType')}, expected {' or '.join(types)}")
        return target

    def _lookup(self, reference: str, owner: dict) -> Optional[dict]:
        if reference.startswith("#"):
            return next((c for c in owner.get("contained") or [] if c.get("id") == reference[1:]), None)
        if reference in self.index:
            return self.index[reference]
        parts = reference.split("/_history/")[0].rstrip("/").split("/")
        return self.index.get("/".join(parts[-2:])) if len(parts) >= 2 else None


def _check_entries(data: dict, source: str) -> None:
    """What fhir.resources cannot report well: a non-Bundle, an unknown resource type."""
    from fhir.resources.R4B import get_fhir_model_class

    rtype = data.get("resourceType")
    if rtype != "Bundle":
        raise InputError(f"{source}: resourceType: expected a FHIR Bundle (collection, transaction or searchset), "
                         f"got a {rtype!r} resource; export the patient's record as a Bundle")
    if data.get("type") not in BUNDLE_TYPES:
        raise InputError(f"{source}: Bundle.type: {data.get('type')!r} is not supported "
                         f"(use collection, transaction or searchset)")
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: Bundle.entry: the bundle holds no resources")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise InputError(f"{source}: entry[{i}].resource: missing (every entry needs a resource)")
        try:
            get_fhir_model_class(str(resource.get("resourceType")))
        except (KeyError, ValueError):
            raise InputError(f"{source}: entry[{i}].resource.resourceType: "
                             f"{resource.get('resourceType')!r} is not a FHIR R4 resource type") from None


def _validate(data: dict, source: str) -> None:
    """Structure and types through fhir.resources' R4B models (imported only here)."""
    from fhir.resources.R4B.bundle import Bundle as BundleModel

    try:
        BundleModel.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: not a valid FHIR R4 Bundle: {exc.error_count()} problem(s)"]
        for err in exc.errors(include_url=False)[:20]:
            lines.append(f"  {_where(data, err['loc'])}: {err['msg'].removeprefix('Value error, ')}")
        raise InputError("\n".join(lines)) from None
    except (KeyError, TypeError, ValueError) as exc:  # the library's own checks, outside pydantic's
        raise InputError(f"{source}: not a valid FHIR R4 Bundle ({type(exc).__name__} in fhir.resources)") from None


def _where(data: dict, loc: tuple) -> str:
    """('entry', 3, 'resource', 'status') -> 'entry[3] MedicationRequest/x: status'."""
    if len(loc) >= 3 and loc[0] == "entry" and isinstance(loc[1], int) and loc[2] == "resource":
        resource = data["entry"][loc[1]].get("resource") or {}
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc[3:]).replace(".[", "[")
        return f"entry[{loc[1]}] {rid(resource)}: {path or '(resource)'}"
    return "Bundle." + ".".join(str(p) for p in loc) if loc else "Bundle"


def index_bundle(data: dict, source: str) -> Bundle:
    bundle = Bundle(source, data)
    for entry in data["entry"]:
        search_mode = (entry.get("search") or {}).get("mode")
        resource = entry["resource"]
        if search_mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
            continue  # a searchset's messages about the search, not patient data
        if not resource.get("id") and entry.get("fullUrl"):
            # Messages name resources by type/id; a transaction entry may have only a fullUrl.
            resource = {**resource, "id": re.split(r"[:/]", entry["fullUrl"])[-1]}
        bundle.resources.append(resource)
        if entry.get("fullUrl"):
            bundle.index[entry["fullUrl"]] = resource
        if resource.get("id"):
            bundle.index[f"{resource['resourceType']}/{resource['id']}"] = resource
    return bundle


# ------------------------------------------------------------------ the whole import


@dataclass
class Context:
    bundle: Bundle
    maps: Maps
    criteria: Criteria
    notes: Notes
    patient: dict
    date: Date

    def is_patient(self, resource: dict, fieldname: str) -> bool:
        """Does this resource belong to the bundle's patient? References must resolve."""
        ref = resource.get(fieldname)
        if not isinstance(ref, dict) or not ref.get("reference"):
            return True  # one patient per bundle: an unset subject can only be theirs
        target = self.bundle.resolve(ref, resource, fieldname)
        if target is not self.patient:
            self.notes.skip(resource, f"its {fieldname} is not the bundle's Patient")
            return False
        return True


def referral_data_from_bundle(data: dict, source: str, *, supplement: Optional[dict] = None,
                              payer: Optional[str] = None, member_id: Optional[str] = None,
                              criteria_dir: Optional[Path] = None) -> tuple[dict, list[str]]:
    """A FHIR R4 Bundle (parsed JSON) -> (referral data in spec-section-1 shape, warnings).

    `supplement` holds what the bundle may lack, in referral format (`--request FILE`):
    request, coverage, prescriber, date, referral_id, clinical_course, diagnoses; each one
    given replaces what the bundle says. `payer` and `member_id` override the coverage's.
    Raises InputError (exit 2) naming the file, resource and field when the bundle is not
    valid FHIR, a reference is broken, or a required referral field has no source.
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a FHIR Bundle (a JSON object)")
    _check_entries(data, source)
    _validate(data, source)
    supplement = _check_supplement(supplement or {}, source)
    bundle = index_bundle(data, source)
    root = criteria_dir_of(criteria_dir)
    criteria = load_criteria(root)
    ctx = Context(bundle, load_maps(root), criteria, Notes(), _the_patient(bundle), Date.min)
    ctx.date = _supplement_date(supplement, source) or _bundle_date(bundle)
    return _assemble(ctx, supplement, payer, member_id)


def _supplement_date(supplement: dict, source: str) -> Optional[Date]:
    if supplement.get("date") is None:
        return None
    day = full_date(str(supplement["date"]))
    if day is None:
        raise InputError(f"{source}: request file: date: expected a date as YYYY-MM-DD")
    return day


def _check_supplement(supplement: dict, source: str) -> dict:
    unknown = sorted(set(supplement) - SUPPLEMENT_KEYS)
    if unknown:
        raise InputError(f"{source}: request file: unknown field(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(SUPPLEMENT_KEYS))})")
    return supplement


def _the_patient(bundle: Bundle) -> dict:
    patients = bundle.of_type("Patient")
    if len(patients) != 1:
        raise bundle.error("Patient", f"a referral is about one patient; the bundle holds {len(patients)} "
                                      f"Patient resources")
    bundle.used.add(id(patients[0]))
    return patients[0]


def _bundle_date(bundle: Bundle) -> Date:
    """The referral's 'as of' date: the bundle's timestamp, else its newest event date.

    Never the wall clock: the same bundle must give the same determination tomorrow.
    """
    stamp = full_date(bundle.data.get("timestamp"))
    if stamp:
        return stamp
    days = [d for r in bundle.resources for d in _event_dates(r) if d]
    if not days:
        raise bundle.error("Bundle.timestamp", "no timestamp and no dated resource: give `date:` in the request file")
    return max(days)


def _event_dates(r: dict) -> list[Optional[Date]]:
    """Dates at which something happened or was recorded (not planned validity periods)."""
    values = [r.get(k) for k in ("effectiveDateTime", "effectiveInstant", "issued", "authoredOn", "recordedDate",
                                 "onsetDateTime", "abatementDateTime", "performedDateTime", "occurrenceDateTime",
                                 "dateAsserted", "created")]
    for key in ("effectivePeriod", "performedPeriod"):
        values += [period_start(r.get(key)), period_end(r.get(key))]
    if r.get("resourceType") == "Encounter":
        values += [period_start(r.get("period")), period_end(r.get("period"))]
    return [full_date(v) for v in values]


def _assemble(ctx: Context, supplement: dict, payer: Optional[str], member_id: Optional[str]) -> tuple[dict, list[str]]:
    request_mr, request = _request(ctx, supplement)
    diagnoses = _diagnoses(ctx, supplement.get("diagnoses") or [])
    findings, assessments, weight_height = _observations(ctx)
    findings += _reports_and_procedures(ctx)
    data = {
        "referral_id": _referral_id(ctx, supplement),
        "date": ctx.date.isoformat(),
        "patient": {**_patient(ctx), **weight_height},
        "coverage": _coverage(ctx, supplement, payer, member_id),
        "prescriber": supplement.get("prescriber") or _prescriber(ctx, request_mr),
        "diagnoses": diagnoses,
        "findings": findings,
        "treatments": _treatments(ctx, exclude=request_mr),
        "contraindications": _contraindications(ctx),
        "assessments": assessments,
        "request": request,
    }
    if supplement.get("clinical_course"):
        data["clinical_course"] = supplement["clinical_course"]
    _report_unused(ctx)
    _require(ctx, data)
    return data, ctx.notes.lines()


def _require(ctx: Context, data: dict) -> None:
    """One error listing everything the referral still needs, and where to give it."""
    missing = []
    if not data["request"]:
        missing.append("request: no MedicationRequest for an infusion product (criteria/products.yaml) and no "
                       "--request file: the request is missing; give `request:` in a --request file")
    if not data["coverage"]:
        missing.append("coverage: no Coverage resource; give `coverage:` in the --request file "
                       "(or --payer and --member-id)")
    if not data["prescriber"]:
        missing.append("prescriber: no Practitioner with a valid NPI (system http://hl7.org/fhir/sid/us-npi) "
                       "requested the infusion; give `prescriber:` in the --request file")
    if not data["diagnoses"]:
        missing.append("diagnoses: no Condition has an ICD-10-CM code or a SNOMED CT code in "
                       "criteria/fhir/snomed-icd10.yaml; add one, or give `diagnoses:` in the --request file")
    if missing:
        raise InputError(f"{ctx.bundle.source}: cannot make a referral from this bundle:\n  " + "\n  ".join(missing)
                         + "\n  (`check` reads a bundle as it is: supply these with `priorauth import-fhir BUNDLE "
                           "--request FILE -o REFERRAL`, then check REFERRAL)")
    for key in ("request", "coverage", "prescriber"):
        if data[key] is None:
            del data[key]
    for key in ("findings", "treatments", "contraindications", "assessments"):
        if not data[key]:
            del data[key]


def _referral_id(ctx: Context, supplement: dict) -> str:
    if supplement.get("referral_id"):
        return str(supplement["referral_id"])
    for candidate in (ctx.bundle.data.get("id"), ctx.patient.get("id")):
        if candidate and sanitize_id(str(candidate)):
            return sanitize_id(str(candidate))
    raise ctx.bundle.error("Bundle.id", "the bundle and its Patient have no id: give `referral_id:` in the request file")


#: types only read when something refers to them (the prescriber, the payer, a drug)
SUPPORTING_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Medication"}


def _report_unused(ctx: Context) -> None:
    counts: dict[str, int] = {}
    for r in ctx.bundle.resources:
        rtype = r.get("resourceType")
        if rtype not in MAPPED_TYPES:
            counts[rtype] = counts.get(rtype, 0) + 1
        elif rtype in SUPPORTING_TYPES and id(r) not in ctx.bundle.used:
            ctx.notes.skip(r, "not the prescriber, the payer or a medication of the referral")
    for rtype, n in sorted(counts.items()):
        ctx.notes.add(f"FHIR import: {n} {rtype} resource(s) not used: the referral format has no field for them")


# ------------------------------------------------------------------ patient


def _patient(ctx: Context) -> dict:
    p = ctx.patient
    given, family, _ = human_name(p.get("name"))
    birth = full_date(p.get("birthDate"))
    if not given or not family:
        raise ctx.bundle.error(f"{rid(p)} name", "needs a given and a family name")
    if birth is None:
        raise ctx.bundle.error(f"{rid(p)} birthDate", "missing or not a full date (YYYY-MM-DD)")
    sex = p.get("gender") if p.get("gender") in ("female", "male", "other") else "unknown"
    return {"given_name": given, "family_name": family, "birth_date": birth.isoformat(), "sex": sex}


# ------------------------------------------------------------------ coverage and prescriber


def _coverage(ctx: Context, supplement: dict, payer: Optional[str], member_id: Optional[str]) -> Optional[dict]:
    coverage = dict(supplement["coverage"]) if supplement.get("coverage") else _bundle_coverage(ctx)
    if coverage is None and not (payer and member_id):
        return None
    coverage = coverage or {}
    if payer:
        coverage["payer"] = payer
    if member_id:
        coverage["member_id"] = member_id
    return coverage


def _bundle_coverage(ctx: Context) -> Optional[dict]:
    candidates = []
    for cov in ctx.bundle.of_type("Coverage"):
        if cov.get("status") not in (None, "active"):
            ctx.notes.skip(cov, f"status {cov.get('status')}")
            continue
        if not ctx.is_patient(cov, "beneficiary"):
            continue
        start, end = full_date(period_start(cov.get("period"))), full_date(period_end(cov.get("period")))
        in_force = (start is None or start <= ctx.date) and (end is None or end >= ctx.date)
        candidates.append((not in_force, cov.get("order") or 99, cov))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[:2])
    not_in_force, _, chosen = candidates[0]
    if not_in_force:
        ctx.notes.add(f"FHIR import: {rid(chosen)}: period does not cover the referral date; used all the same")
    for _, _, other in candidates[1:]:
        ctx.notes.skip(other, "another Coverage was chosen (in force on the referral date, lowest order)")
    ctx.bundle.used.add(id(chosen))
    return _coverage_fields(ctx, chosen)


def _coverage_fields(ctx: Context, cov: dict) -> dict:
    out: dict[str, Any] = {"payer": _payer_key(ctx, cov)}
    member = cov.get("subscriberId") or _member_identifier(cov)
    if member:
        out["member_id"] = member
    for cls in cov.get("class") or []:
        kind = set(codes(cls.get("type"), "http://terminology.hl7.org/CodeSystem/coverage-class"))
        if "plan" in kind:
            out["plan_name"] = cls.get("name") or cls.get("value")
        elif "group" in kind and cls.get("value"):
            out["group_number"] = cls["value"]
    return out


def _member_identifier(cov: dict) -> Optional[str]:
    idents = [i for i in cov.get("identifier") or [] if i.get("value")]
    member = [i for i in idents if "MB" in codes(i.get("type"), "http://terminology.hl7.org/CodeSystem/v2-0203")]
    return (member or idents or [{}])[0].get("value")


def _payer_key(ctx: Context, cov: dict) -> Optional[str]:
    for ref in cov.get("payor") or []:
        org = ctx.bundle.resolve(ref, cov, "payor", ("Organization", "Patient", "RelatedPerson"))
        if org is not None:
            ctx.bundle.used.add(id(org))
        name = (org or {}).get("name") or ref.get("display") or (ref.get("identifier") or {}).get("value")
        if name:
            return ctx.maps.payers.aliases.get(name.casefold().strip(), slug(name))
    ctx.notes.add(f"FHIR import: {rid(cov)} payor names no payer; give --payer")
    return None


def _prescriber(ctx: Context, request_mr: Optional[dict]) -> Optional[dict]:
    """The requester of the infusion request; else the bundle's only Practitioner with a valid NPI."""
    if request_mr is not None and request_mr.get("requester"):
        who = ctx.bundle.resolve(request_mr["requester"], request_mr, "requester", ("Practitioner", "PractitionerRole"))
        if who is not None:
            return _practitioner_fields(ctx, who)
    valid = [p for p in ctx.bundle.of_type("Practitioner") if _npi(p)]
    if len(valid) == 1:
        roles = [r for r in ctx.bundle.of_type("PractitionerRole")
                 if ctx.bundle.resolve(r.get("practitioner"), r, "practitioner") is valid[0]]
        return _practitioner_fields(ctx, roles[0] if roles else valid[0])
    if valid:
        ctx.notes.add(f"FHIR import: {len(valid)} Practitioners have a valid NPI and none requested the "
                      "infusion: give `prescriber:` in the request file")
    return None


def _npi(resource: dict) -> Optional[str]:
    return next((i["value"] for i in resource.get("identifier") or []
                 if i.get("system") == NPI_SYSTEM and npi_is_valid(str(i.get("value", "")))), None)


def _practitioner_fields(ctx: Context, who: dict) -> Optional[dict]:
    role = who if who.get("resourceType") == "PractitionerRole" else None
    person = ctx.bundle.resolve(role.get("practitioner"), role, "practitioner", ("Practitioner",)) if role else who
    npi = (person and _npi(person)) or (role and _npi(role))
    if not npi or person is None:
        ctx.notes.add(f"FHIR import: {rid(who)} (the requester) has no valid NPI "
                      f"(system {NPI_SYSTEM}): give `prescriber:` in the request file")
        return None
    for r in (person, role):
        if r is not None:
            ctx.bundle.used.add(id(r))
    given, family, suffix = human_name(person.get("name"))
    out: dict[str, Any] = {"name": " ".join(p for p in (given, family) if p) + (f", {suffix}" if suffix else ""),
                           "npi": npi}
    if role:
        specialty = texts(role.get("specialty"))
        if specialty:
            out["specialty"] = specialty[0]
        org = ctx.bundle.resolve(role.get("organization"), role, "organization", ("Organization",))
        name = (org or {}).get("name") or (role.get("organization") or {}).get("display")
        if org is not None:
            ctx.bundle.used.add(id(org))
        if name:
            out["organization"] = name
    for system in ("phone", "fax"):
        value = next((t.get("value") for r in (role or {}, person) for t in r.get("telecom") or []
                      if t.get("system") == system and t.get("value")), None)
        if value:
            out[system] = value
    return out


# ------------------------------------------------------------------ diagnoses


def _diagnoses(ctx: Context, given: list[dict]) -> list[dict]:
    """Supplement diagnoses first (they state the indication), then the bundle's Conditions."""
    out = [dict(d) for d in given]
    seen = {_code_key(d.get("code")) for d in out}
    for cond in ctx.bundle.of_type("Condition"):
        if not ctx.is_patient(cond, "subject") or not _condition_current(ctx, cond):
            continue
        diagnosis = _condition_diagnosis(ctx, cond)
        if diagnosis and _code_key(diagnosis["code"]) not in seen:
            seen.add(_code_key(diagnosis["code"]))
            out.append(diagnosis)
    return out


def _code_key(code: Any) -> str:
    return str(code or "").replace(".", "").upper()


def _condition_current(ctx: Context, cond: dict) -> bool:
    verification = codes(cond.get("verificationStatus"),
                         "http://terminology.hl7.org/CodeSystem/condition-ver-status")
    if set(verification) & {"refuted", "entered-in-error"}:
        ctx.notes.skip(cond, "verificationStatus refuted or entered-in-error")
        return False
    clinical = codes(cond.get("clinicalStatus"), "http://terminology.hl7.org/CodeSystem/condition-clinical")
    if "resolved" in clinical:
        ctx.notes.skip(cond, "clinicalStatus resolved: not a current diagnosis")
        return False
    return True


def _condition_diagnosis(ctx: Context, cond: dict) -> Optional[dict]:
    concept = cond.get("code") or {}
    onset = first_date(cond.get("onsetDateTime"), period_start(cond.get("onsetPeriod")))
    icd = _icd10_coding(ctx, cond, concept) or _snomed_coding(ctx, cond, concept)
    if icd is None:
        ctx.notes.skip(cond, "no ICD-10-CM coding, and no SNOMED CT code or name in criteria/fhir/snomed-icd10.yaml")
        return None
    ctx.bundle.used.add(id(cond))
    out = {"code": icd[0], "description": icd[1]}
    if onset:
        out["onset_date"] = onset.isoformat()
    return out


def _icd10_coding(ctx: Context, cond: dict, concept: dict) -> Optional[tuple[str, str]]:
    for coding in concept.get("coding") or []:
        if coding.get("system") in ICD10CM_SYSTEMS and coding.get("code"):
            try:
                code = normalize_icd10(coding["code"])
            except ValueError:
                ctx.notes.add(f"FHIR import: {rid(cond)} code: an ICD-10-CM coding is not a valid code; ignored")
                continue
            return code, coding.get("display") or concept.get("text") or code
    return None


def _snomed_coding(ctx: Context, cond: dict, concept: dict) -> Optional[tuple[str, str]]:
    words = " ".join(texts(concept)).casefold()
    for code in codes(concept, SNOMED_SYSTEM):
        target = ctx.maps.snomed.codes.get(code)
        if target and (target.verified or any(n.casefold() in words for n in target.names)):
            return normalize_icd10(target.icd10), target.description
    if not codes(concept, SNOMED_SYSTEM) and concept.get("coding"):
        return None  # coded in some other system only: names are not enough to guess from
    for name in sorted(ctx.maps.snomed.names, key=len, reverse=True):
        if re.search(rf"(?<![a-z]){re.escape(name.casefold())}(?![a-z])", words):
            target = ctx.maps.snomed.names[name]
            ctx.notes.add(f"FHIR import: {rid(cond)} mapped to {target.icd10} by its name, not its code: "
                          "check the diagnosis code")
            return normalize_icd10(target.icd10), target.description
    return None


# ------------------------------------------------------------------ observations


def _observations(ctx: Context) -> tuple[list[dict], list[dict], dict]:
    findings: list[dict] = []
    assessments: list[dict] = []
    latest: dict[str, tuple[Date, float]] = {}
    for obs in ctx.bundle.of_type("Observation"):
        if not ctx.is_patient(obs, "subject"):
            continue
        if obs.get("status") not in ("final", "amended", "corrected"):
            ctx.notes.skip(obs, f"status {obs.get('status')}: not a final result")
            continue
        loinc = codes(obs.get("code"), LOINC_SYSTEM)
        day = first_date(obs.get("effectiveDateTime"), period_start(obs.get("effectivePeriod")),
                         obs.get("effectiveInstant"), obs.get("issued"))
        patient_code = next((c for c in loinc if c in ctx.maps.loinc.patient), None)
        assess_code = next((c for c in loinc if c in ctx.maps.loinc.assessments), None)
        if patient_code:
            _body_measure(ctx, obs, ctx.maps.loinc.patient[patient_code], day, latest)
        elif assess_code:
            _assessment(ctx, obs, ctx.maps.loinc.assessments[assess_code], day, assessments, findings)
        else:
            _observation_finding(ctx, obs, day, findings)
    return findings, assessments, {name: round1(value) for name, (_, value) in latest.items()}


def _quantity(obs: dict) -> tuple[Optional[float], str]:
    q = obs.get("valueQuantity") or {}
    value = q.get("value")
    return (float(value) if isinstance(value, (int, float)) else None), str(q.get("code") or q.get("unit") or "")


def _body_measure(ctx: Context, obs: dict, spec: PatientField, day: Optional[Date],
                  latest: dict[str, tuple[Date, float]]) -> None:
    value, unit = _quantity(obs)
    if value is None or day is None:
        ctx.notes.skip(obs, "body measure without a numeric value or a full effective date")
        return
    if unit not in spec.units:
        ctx.notes.skip(obs, f"{spec.field}: unit not in criteria/fhir/loinc.yaml")
        return
    ctx.bundle.used.add(id(obs))
    if day > ctx.date:
        return  # measured after the referral's 'as of' date
    if spec.field not in latest or day >= latest[spec.field][0]:
        latest[spec.field] = (day, value * spec.units[unit])


def _assessment(ctx: Context, obs: dict, spec: AssessmentCode, day: Optional[Date],
                assessments: list[dict], findings: list[dict]) -> None:
    value, unit = _quantity(obs)
    if value is None or day is None:
        ctx.notes.skip(obs, "assessment without a numeric value or a full effective date")
        return
    ctx.bundle.used.add(id(obs))
    entry: dict[str, Any] = {"measure": spec.measure, "value": value}
    unit = (obs.get("valueQuantity") or {}).get("unit") or unit
    if unit:
        entry["unit"] = unit
    entry["date"] = day.isoformat()
    assessments.append(entry)
    if spec.elevated_finding and _interpretation(ctx, obs) is True:
        label = (texts(obs.get("code")) or [spec.measure])[0]
        findings.append({"kind": spec.elevated_finding, "date": day.isoformat(),
                         "result": " ".join(p for p in (label, f"{value:g}", unit, "(high)") if p),
                         "supports_diagnosis": True})


def _interpretation(ctx: Context, obs: dict) -> Optional[bool]:
    found = set(codes(obs.get("interpretation"),
                      "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"))
    if found & set(ctx.maps.findings.interpretation.positive):
        return True
    if found & set(ctx.maps.findings.interpretation.negative):
        return False
    return None


def _observation_finding(ctx: Context, obs: dict, day: Optional[Date], findings: list[dict]) -> None:
    """An Observation outside loinc.yaml is a finding only when its name gives a kind (serology)."""
    name = " ".join(texts(obs.get("code")))
    kind = first_match(ctx.maps.kind_matchers, name)
    if kind is None:
        ctx.notes.skip(obs, "code not in criteria/fhir/loinc.yaml and names no finding kind")
        return
    value, unit = _quantity(obs)
    value_text = " ".join([obs.get("valueString") or ""] + texts(obs.get("valueCodeableConcept"))
                          + ([f"{value:g} {unit}".strip()] if value is not None else []))
    supports = _interpretation(ctx, obs)
    if supports is None:
        supports = _supports(ctx, value_text)
    if supports is None:
        ctx.notes.add(f"FHIR import: {rid(obs)}: its interpretation or value does not say whether it supports "
                      "the diagnosis: supports_diagnosis set to false")
    ctx.bundle.used.add(id(obs))
    findings.append(_finding(kind, day, " ".join(p for p in (name, value_text.strip()) if p), bool(supports)))


def _finding(kind: str, day: Optional[Date], result: str, supports: bool) -> dict:
    out: dict[str, Any] = {"kind": kind}
    if day:
        out["date"] = day.isoformat()
    if result:
        out["result"] = result[:300]
    out["supports_diagnosis"] = supports
    return out


def _supports(ctx: Context, text: str) -> Optional[bool]:
    """Does a conclusion support the diagnosis? Negative phrases win; None: it does not say."""
    if not text.strip():
        return None
    if ctx.maps.negative.matches(text):
        return False
    return True if ctx.maps.positive.matches(text) else None


# ------------------------------------------------------------------ reports and procedures


FINAL_REPORT = {"final", "amended", "corrected", "appended"}


def _reports_and_procedures(ctx: Context) -> list[dict]:
    out: list[dict] = []
    reported: set[int] = set()  # DiagnosticReports already made into findings
    for report in ctx.bundle.of_type("DiagnosticReport"):
        finding = _report_finding(ctx, report)
        if finding:
            reported.add(id(report))
            out.append(finding)
    for proc in ctx.bundle.of_type("Procedure"):
        finding = _procedure_finding(ctx, proc, reported)
        if finding:
            out.append(finding)
    return out


def _report_finding(ctx: Context, report: dict) -> Optional[dict]:
    if not ctx.is_patient(report, "subject"):
        return None
    kind = first_match(ctx.maps.kind_matchers, " ".join(texts(report.get("code"))))
    if kind is None:
        ctx.notes.skip(report, "its code names no finding kind in criteria/fhir/findings.yaml")
        return None
    if report.get("status") not in FINAL_REPORT:
        ctx.notes.skip(report, f"status {report.get('status')}: not a final report")
        return None
    conclusion = " ".join([report.get("conclusion") or ""] + texts(report.get("conclusionCode"))).strip()
    day = first_date(report.get("effectiveDateTime"), period_start(report.get("effectivePeriod")), report.get("issued"))
    ctx.bundle.used.add(id(report))
    return _finding(kind, day, conclusion, _judged(ctx, report, conclusion))


def _judged(ctx: Context, resource: dict, conclusion: str) -> bool:
    supports = _supports(ctx, conclusion)
    if supports is None:
        ctx.notes.add(f"FHIR import: {rid(resource)}: no conclusion saying whether it supports the diagnosis: "
                      "supports_diagnosis set to false")
    return bool(supports)


def _procedure_finding(ctx: Context, proc: dict, reported: set[int]) -> Optional[dict]:
    if not ctx.is_patient(proc, "subject"):
        return None
    kind = first_match(ctx.maps.kind_matchers, " ".join(texts(proc.get("code"))))
    if kind is None:
        ctx.notes.skip(proc, "its code names no finding kind in criteria/fhir/findings.yaml")
        return None
    reports = [ctx.bundle.resolve(r, proc, "report", ("DiagnosticReport",)) for r in proc.get("report") or []]
    if any(id(r) in reported for r in reports if r is not None):
        ctx.bundle.used.add(id(proc))
        return None  # its DiagnosticReport already says what it found
    if proc.get("status") != "completed":
        ctx.notes.skip(proc, f"status {proc.get('status')}: not completed")
        return None
    outcome = " ".join(texts(proc.get("outcome")) + [n.get("text") or "" for n in proc.get("note") or []]).strip()
    day = first_date(proc.get("performedDateTime"), period_start(proc.get("performedPeriod")))
    ctx.bundle.used.add(id(proc))
    return _finding(kind, day, outcome, _judged(ctx, proc, outcome))


# ------------------------------------------------------------------ medications


ACTIVE = {"active", "intended", "on-hold", "draft"}
ENDED = {"completed", "stopped"}


@dataclass
class Med:
    """What one MedicationStatement or MedicationRequest says, before it becomes a treatment."""

    resource: dict
    text: str
    dosages: list[dict]
    start: Optional[Date]
    end: Optional[Date]
    reason: str


def _medication_text(ctx: Context, resource: dict) -> str:
    if resource.get("medicationCodeableConcept"):
        return " ".join(texts(resource["medicationCodeableConcept"]))
    med = ctx.bundle.resolve(resource.get("medicationReference"), resource, "medicationReference", ("Medication",))
    if med is None:
        return (resource.get("medicationReference") or {}).get("display") or ""
    ctx.bundle.used.add(id(med))
    ingredients = [t for i in med.get("ingredient") or [] for t in texts(i.get("itemCodeableConcept"))]
    return " ".join(texts(med.get("code")) + ingredients + texts(med.get("form")))


def _med(ctx: Context, r: dict) -> Med:
    if r["resourceType"] == "MedicationStatement":
        dosages = r.get("dosage") or []
        start = first_date(r.get("effectiveDateTime"), period_start(r.get("effectivePeriod")))
        end = full_date(period_end(r.get("effectivePeriod")))
        reason = " ".join(texts(r.get("statusReason")))
    else:
        dosages = r.get("dosageInstruction") or []
        bounds = [((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") for d in dosages]
        validity = (r.get("dispenseRequest") or {}).get("validityPeriod")
        start = first_date(*[period_start(b) for b in bounds], period_start(validity), r.get("authoredOn"))
        end = first_date(*[period_end(b) for b in bounds], period_end(validity))
        reason = " ".join(texts(r.get("statusReason")))
    return Med(r, _medication_text(ctx, r), dosages, start, end, reason)


def _treatments(ctx: Context, exclude: Optional[dict]) -> list[dict]:
    out = []
    for r in ctx.bundle.resources:
        if r.get("resourceType") not in ("MedicationStatement", "MedicationRequest") or r is exclude:
            continue
        if not ctx.is_patient(r, "subject"):
            continue
        treatment = _treatment(ctx, r)
        if treatment:
            out.append(treatment)
    return out


def _treatment(ctx: Context, r: dict) -> Optional[dict]:
    status = r.get("status")
    if status in ("entered-in-error", "cancelled", "not-taken"):
        ctx.notes.skip(r, f"status {status}: never taken")
        return None
    if r.get("resourceType") == "MedicationRequest" and r.get("intent") in ("proposal", "option"):
        ctx.notes.skip(r, f"intent {r.get('intent')}: proposed, not prescribed")
        return None
    med = _med(ctx, r)
    generic = _generic_in(ctx, med.text)
    if generic is None:
        ctx.notes.skip(r, "its medication names no drug in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(r))
    out: dict[str, Any] = {"drug": generic}
    route = _route(ctx, med)
    if route:
        out["route"] = route
    dose = _dose_text(med.dosages)
    if dose:
        out["dose"] = dose
    try:
        out.update(_span(ctx, med, status))
    except _NoDates:
        ctx.notes.skip(r, f"status {status} with no date at all: cannot tell when it was taken")
        return None
    outcome = _outcome(ctx, med, out)
    if outcome:
        out["outcome"] = outcome
    out["details"] = "; ".join(p for p in (med.text, f"status {status}",
                                           f"reason: {med.reason}" if med.reason else "") if p)[:300]
    return out


@functools.lru_cache(maxsize=8)
def _name_pattern(names: tuple[str, ...]) -> re.Pattern:
    # Longest first so "mycophenolate mofetil" wins over its alias "mycophenolate".
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in n.split()) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _generic_in(ctx: Context, text: str) -> Optional[str]:
    """The generic of the first vocabulary name (generic, brand, alias) in a medication text."""
    vocab = ctx.criteria.vocabulary
    names = tuple(n for g, d in vocab.drugs.items() for n in (g, *d.brands, *d.aliases))
    found = _name_pattern(names).search(text)
    return vocab.generic(found.group(1)) if found else None


def _route(ctx: Context, med: Med) -> Optional[str]:
    for dosage in med.dosages:
        concept = dosage.get("route") or {}
        for code in codes(concept, SNOMED_SYSTEM):
            if code in ctx.maps.medications.route_codes:
                return ctx.maps.medications.route_codes[code]
        route = first_match(ctx.maps.route_matchers, " ".join(texts(concept)))
        if route:
            return route
    return first_match(ctx.maps.route_matchers, med.text)


def _dose_text(dosages: list[dict]) -> Optional[str]:
    parts = []
    for d in dosages:
        if d.get("text"):
            parts.append(d["text"])
            continue
        quantity = next((dr.get("doseQuantity") for dr in d.get("doseAndRate") or [] if dr.get("doseQuantity")), None)
        repeat = (d.get("timing") or {}).get("repeat") or {}
        words = []
        if quantity and quantity.get("value") is not None:
            words.append(f"{quantity['value']:g} {quantity.get('unit') or quantity.get('code') or 'dose unit(s)'}")
        if repeat.get("frequency") and repeat.get("period") and repeat.get("periodUnit"):
            words.append(_frequency(repeat))
        if words:
            parts.append(" ".join(words))
    return "; ".join(parts) or None


class _NoDates(Exception):
    """A stopped medication with no date: recording it would read as still taken."""


PERIOD_WORDS = {"h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}


def _frequency(repeat: dict) -> str:
    unit = PERIOD_WORDS.get(repeat["periodUnit"], repeat["periodUnit"])
    every = f"every {repeat['period']:g} {unit}s" if repeat["period"] != 1 else f"every {unit}"
    return f"{repeat['frequency']:g} time(s) {every}" if repeat["frequency"] != 1 else every


def _span(ctx: Context, med: Med, status: Optional[str]) -> dict:
    """start_date and end_date, with the conventions docs/fhir-mapping.md lists."""
    r = med.resource
    out: dict[str, Any] = {}
    if med.start:
        out["start_date"] = med.start.isoformat()
    else:
        ctx.notes.add(f"FHIR import: {rid(r)}: no full start date (effective, boundsPeriod, validityPeriod, "
                      "authoredOn): trial length unknown")
    end = med.end
    if end and end > ctx.date:
        end = None  # a planned end after the referral date: still being taken on that date
    if end is None and status in (None, "unknown"):
        ctx.notes.add(f"FHIR import: {rid(r)}: status unknown and no end date: taken to be still taken")
    if end is None and status in ENDED:
        # The referral format cannot say "ended on an unknown day" (null means still taking
        # it), so a known earlier day stands in: the start (the trial counts as 0 weeks), or
        # without one the day it was recorded as stopped (its length is then unknown).
        end = med.start or first_date(r.get("dateAsserted"), r.get("authoredOn"))
        if end is None:
            raise _NoDates()
        ctx.notes.add(f"FHIR import: {rid(r)}: status {status} but no end date: end_date set to the "
                      f"{'start date' if med.start else 'date it was recorded'}; document when it was stopped")
    if med.start and end and end < med.start:
        ctx.notes.add(f"FHIR import: {rid(r)}: end date before start date: end date dropped")
        end = med.start if status in ENDED else None
    out["end_date"] = end.isoformat() if end else None
    return out


def _outcome(ctx: Context, med: Med, treatment: dict) -> Optional[str]:
    """statusReason decides (a drug still taken can have flared on taper); else active -> ongoing."""
    outcome = first_match(ctx.maps.outcome_matchers, med.reason) if med.reason else None
    if outcome:
        return outcome
    if treatment.get("end_date") is None and med.resource.get("status") in ACTIVE:
        return "ongoing"
    if med.reason:
        ctx.notes.add(f"FHIR import: {rid(med.resource)}: statusReason matches no outcome in "
                      "criteria/fhir/medications.yaml: outcome unknown")
    return None


# ------------------------------------------------------------------ contraindications


def _contraindications(ctx: Context) -> list[dict]:
    out = []
    for allergy in ctx.bundle.of_type("AllergyIntolerance"):
        item = _allergy(ctx, allergy)
        if item:
            out.append(item)
    for event in ctx.bundle.of_type("AdverseEvent"):
        item = _adverse_event(ctx, event)
        if item:
            out.append(item)
    return out


def _drug_or_class(ctx: Context, text: str) -> Optional[dict]:
    generic = _generic_in(ctx, text)
    if generic:
        return {"drug": generic}
    drug_class = first_match(ctx.maps.class_matchers, text)
    return {"drug_class": drug_class} if drug_class else None


def _allergy(ctx: Context, allergy: dict) -> Optional[dict]:
    if not ctx.is_patient(allergy, "patient"):
        return None
    verification = codes(allergy.get("verificationStatus"),
                         "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification")
    clinical = codes(allergy.get("clinicalStatus"),
                     "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical")
    if set(verification) & {"refuted", "entered-in-error"} or set(clinical) & {"resolved", "inactive"}:
        ctx.notes.skip(allergy, "refuted, entered in error, resolved or inactive")
        return None
    substance = " ".join(texts(allergy.get("code")) + [t for r in allergy.get("reaction") or []
                                                       for t in texts(r.get("substance"))])
    what = _drug_or_class(ctx, substance)
    if what is None:
        ctx.notes.skip(allergy, "names no drug or drug class in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(allergy))
    manifestations = [t for r in allergy.get("reaction") or [] for t in texts(r.get("manifestation"))]
    reason = allergy.get("type") or "allergy"
    if manifestations:
        reason += ": " + ", ".join(dict.fromkeys(manifestations))
    out = {**what, "reason": reason}
    day = first_date(allergy.get("recordedDate"), allergy.get("onsetDateTime"))
    if day:
        out["documented_date"] = day.isoformat()
    return out


def _adverse_event(ctx: Context, event: dict) -> Optional[dict]:
    if not ctx.is_patient(event, "subject"):
        return None
    if event.get("actuality") == "potential":
        ctx.notes.skip(event, "a potential event, not one that happened")
        return None
    suspects = []
    for s in event.get("suspectEntity") or []:
        target = ctx.bundle.resolve(s.get("instance"), event, "suspectEntity.instance")
        if target is None:
            suspects.append((s.get("instance") or {}).get("display") or "")
        elif target.get("resourceType") == "Medication":
            suspects.append(" ".join(texts(target.get("code"))))
        else:
            suspects.append(_medication_text(ctx, target) if "medicationCodeableConcept" in target
                            or "medicationReference" in target else " ".join(texts(target.get("code"))))
    what = _drug_or_class(ctx, " ".join(suspects))
    if what is None:
        ctx.notes.skip(event, "its suspect entity names no drug in criteria/drugs.yaml")
        return None
    ctx.bundle.used.add(id(event))
    out = {**what, "reason": "adverse event: " + (", ".join(texts(event.get("event"))) or "not described")}
    day = first_date(event.get("date"), event.get("recordedDate"))
    if day:
        out["documented_date"] = day.isoformat()
    return out


# ------------------------------------------------------------------ the request


def _request(ctx: Context, supplement: dict) -> tuple[Optional[dict], Optional[dict]]:
    """(the MedicationRequest that is the request, request data); the request file wins."""
    candidates = [r for r in ctx.bundle.of_type("MedicationRequest")
                  if r.get("status") in ACTIVE and r.get("intent") != "option" and _product_in(ctx, r)]
    candidates.sort(key=lambda r: full_date(r.get("authoredOn")) or Date.min, reverse=True)
    if supplement.get("request"):
        for r in candidates:
            ctx.notes.add(f"FHIR import: {rid(r)} not used as the request: the request file gives it")
        return (candidates[0] if candidates else None), dict(supplement["request"])
    if not candidates:
        return None, None
    chosen = candidates[0]
    for other in candidates[1:]:
        ctx.notes.add(f"FHIR import: {rid(other)}: an older infusion order; {rid(chosen)} is the request")
    if not ctx.is_patient(chosen, "subject"):
        raise ctx.bundle.error(f"{rid(chosen)} subject", "the infusion request is for another patient")
    ctx.bundle.used.add(id(chosen))
    return chosen, _request_fields(ctx, chosen)


def _product_in(ctx: Context, r: dict) -> Optional[tuple[str, Any]]:
    products = ctx.criteria.products
    names = tuple(n for brand, p in products.products.items() for n in (brand, *p.aliases))
    found = _name_pattern(names).search(_medication_text(ctx, r))
    return products.find(found.group(1)) if found else None


def _request_fields(ctx: Context, r: dict) -> dict:
    brand, product = _product_in(ctx, r)
    out: dict[str, Any] = {"therapy": product.therapy, "product": brand,
                           "request_type": "continuation" if r.get("priorPrescription") else "initial"}
    dosage = (r.get("dosageInstruction") or [{}])[0]
    if len(r.get("dosageInstruction") or []) > 1:
        ctx.notes.add(f"FHIR import: {rid(r)}: only the first dosageInstruction is read")
    parsed = _structured_dose(ctx, r, dosage, product.therapy)
    for key, value in _text_dose(dosage.get("text") or "", product.therapy).items():
        if key in parsed and parsed[key] != value:
            ctx.notes.add(f"FHIR import: {rid(r)}: dosageInstruction text and structure disagree on {key}; "
                          "the structured value is used")
        parsed.setdefault(key, value)
    out.update(parsed)
    start = first_date(period_start((r.get("dispenseRequest") or {}).get("validityPeriod")),
                       period_start(((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")))
    if start:
        out["start_date"] = start.isoformat()
    return out


def _structured_dose(ctx: Context, r: dict, dosage: dict, therapy: str) -> dict:
    out: dict[str, Any] = {}
    quantity = next((dr.get("doseQuantity") for dr in dosage.get("doseAndRate") or [] if dr.get("doseQuantity")), {})
    unit = str(quantity.get("code") or quantity.get("unit") or "").replace(" ", "").lower()
    if quantity.get("value") is not None:
        if unit == "g/kg":
            out["dose_g_per_kg"] = float(quantity["value"])
        elif unit == "mg" and therapy == "rituximab":
            out["dose_mg"] = float(quantity["value"])
        else:
            ctx.notes.add(f"FHIR import: {rid(r)}: doseQuantity unit is not g/kg (IVIG) or mg (rituximab): ignored")
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    weeks = {"wk": 1, "d": 1 / 7}.get(repeat.get("periodUnit"))
    if repeat.get("period") and weeks and repeat.get("frequency", 1) == 1:
        out["interval_weeks"] = round(float(repeat["period"]) * weeks, 2)
    if repeat.get("count"):
        out["doses" if therapy == "rituximab" else "cycles"] = int(repeat["count"])
    days = next((e.get("valueInteger") for e in dosage.get("extension") or [] if e.get("url") == DAYS_PER_CYCLE_URL), None)
    if days:
        out["days_per_cycle"] = int(days)
    return out


_TEXT_DOSE = {
    "dose_g_per_kg": r"(\d+(?:\.\d+)?)\s*g\s*/\s*kg",
    "days_per_cycle": r"over\s+(\d+)\s+(?:consecutive\s+)?days?",
    "interval_weeks": r"every\s+(\d+(?:\.\d+)?)\s+weeks?",
    "cycles": r"(\d+)\s+cycles?",
    "dose_mg": r"(\d+(?:\.\d+)?)\s*mg\b",
    "doses": r"(\d+)\s+doses?",
}


def _text_dose(text: str, therapy: str) -> dict:
    """The dosageInstruction.text convention, e.g. '2 g/kg over 5 days every 4 weeks for 6 cycles'."""
    wanted = ("dose_mg", "doses", "interval_weeks") if therapy == "rituximab" else \
        ("dose_g_per_kg", "days_per_cycle", "interval_weeks", "cycles")
    out: dict[str, Any] = {}
    for key in wanted:
        found = re.search(_TEXT_DOSE[key], text, re.IGNORECASE)
        if found:
            number = float(found.group(1))
            out[key] = int(number) if key in ("days_per_cycle", "cycles", "doses") else number
    return out
