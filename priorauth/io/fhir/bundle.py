"""A FHIR R4 Bundle: checked, validated with fhir.resources, indexed; references and dates.

Only FHIR's shape lives here: no medical convention (those are the maps) and no referral
field (those are the mappers). Messages name the file, the resource (type/id) and the
field, never patient data. An id, a reference, a code or a text of the input is never
repeated (issue 16: a resource id such as `Observation/obrien-1` may carry a name): a resource
is named by its position in the bundle and its type (`entry[12] Observation`), a type only
when it is one of FHIR's own (our shape table), a status or intent only when it is one of
FHIR's codes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any, Iterable, Optional

from dateutil.parser import isoparse
from pydantic import ValidationError

from ...core.errors import InputError
from .shapes import bundle_shell_conforms, resource_conforms, table as shape_table

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ICD10CM_SYSTEMS = {"http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"}
SNOMED_SYSTEM = "http://snomed.info/sct"
LOINC_SYSTEM = "http://loinc.org"
DAYS_PER_CYCLE_URL = "https://priorauth.example.org/fhir/StructureDefinition/days-per-cycle"
BUNDLE_TYPES = {"collection", "transaction", "searchset", "document", "batch"}
#: resource types this importer reads; any other type is reported once as unused
MAPPED_TYPES = {"Patient", "Coverage", "Practitioner", "PractitionerRole", "Organization", "Condition",
                "Observation", "MedicationStatement", "MedicationRequest", "Medication", "AllergyIntolerance",
                "AdverseEvent", "Procedure", "DiagnosticReport"}
MAX_IDS_IN_WARNING = 5
#: where index_bundle keeps a resource's position in Bundle.entry (not a FHIR key: those never start "__")
ENTRY_KEY = "__entry"
#: FHIR codes of status and intent (R4B value sets): these, and only these, are repeated in messages
KNOWN_CODES = frozenset({
    "active", "inactive", "completed", "cancelled", "draft", "entered-in-error", "intended", "not-taken",
    "on-hold", "stopped", "unknown", "registered", "preliminary", "final", "amended", "corrected", "appended",
    "partial", "in-progress", "not-done", "preparation", "suspended", "revoked", "proposal", "plan", "order",
    "original-order", "reflex-order", "filler-order", "instance-order", "option", "directive", "resolved",
    "refuted", "confirmed", "unconfirmed", "provisional", "differential", "recurrence", "relapse", "remission",
})


@functools.lru_cache(maxsize=1)
def _fhir_names() -> tuple[frozenset, frozenset]:
    """(FHIR R4B resource types, FHIR element names), from our shape table."""
    shapes = shape_table()
    return (frozenset(shapes["resources"]) | MAPPED_TYPES,
            frozenset(k for t in shapes["types"].values() for k in t) | {"resourceType"})


def type_name(value: Any) -> str:
    """A resourceType fit for a message: one of FHIR's (our table), else `resource`."""
    if isinstance(value, str) and value in _fhir_names()[0]:
        return value
    return "resource"


def code_word(value: Any) -> str:
    """A status or intent fit for a message: a FHIR code we know, else `(unrecognised)`."""
    return value if isinstance(value, str) and value in KNOWN_CODES else "(unrecognised)"


def position(resource: dict) -> str:
    """`entry[12]`, or `a contained resource` (no position of its own)."""
    at = resource.get(ENTRY_KEY)
    return f"entry[{at}]" if isinstance(at, int) else "contained"


def rid(resource: dict) -> str:
    """`entry[12] MedicationRequest`: how a resource is named in messages (never its id or content)."""
    return f"{position(resource)} {type_name(resource.get('resourceType'))}"


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
    day = value[:10]
    try:
        if _DAY.fullmatch(day):  # the usual YYYY-MM-DD: the standard library, ~10x faster
            return Date.fromisoformat(day)
        return isoparse(day).date()
    except ValueError:
        return None


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


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



class Notes:
    """Warnings, grouped so that 60 unmapped Observations make one line, not 60."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], list[str]] = {}
        self._single: list[str] = []

    def skip(self, resource: dict, why: str) -> None:
        key = (type_name(resource.get("resourceType")), why)
        self._groups.setdefault(key, []).append(position(resource))

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

    by_type: dict[str, list[dict]] = field(default_factory=dict)

    def of_type(self, rtype: str) -> list[dict]:
        return list(self.by_type.get(rtype, ()))

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
                             "its reference does not resolve to a resource in the bundle")
        types = tuple(types)
        if types and target.get("resourceType") not in types:
            raise self.error(f"{rid(owner)} {fieldname}",
                             f"refers to a {type_name(target.get('resourceType'))}, expected {' or '.join(types)}")
        return target

    def _lookup(self, reference: str, owner: dict) -> Optional[dict]:
        if reference.startswith("#"):
            return next((c for c in owner.get("contained") or [] if c.get("id") == reference[1:]), None)
        if reference in self.index:
            return self.index[reference]
        parts = reference.split("/_history/")[0].rstrip("/").split("/")
        return self.index.get("/".join(parts[-2:])) if len(parts) >= 2 else None


def check_entries(data: dict, source: str) -> None:
    """What fhir.resources cannot report well: a non-Bundle, an unknown resource type."""
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        raise InputError(f"{source}: resourceType: expected a FHIR Bundle (collection, transaction or searchset), "
                         f"got a {type_name(rtype)}; export the patient's record as a Bundle")
    if data.get("type") not in BUNDLE_TYPES:
        got = data.get("type") if data.get("type") in ("history", "message", "batch-response",
                                                        "transaction-response", "subscription-notification") else None
        raise InputError(f"{source}: Bundle.type: {repr(got) + ' is' if got else 'that type is'} not supported "
                         f"(use collection, transaction or searchset)")
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: Bundle.entry: the bundle holds no resources")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise InputError(f"{source}: entry[{i}].resource: missing (every entry needs a resource)")
        if str(resource.get("resourceType")) in _fhir_names()[0]:
            continue  # an R4B resource type: no need to ask the library
        from fhir.resources.R4B import get_fhir_model_class

        try:
            get_fhir_model_class(str(resource.get("resourceType")))
        except (KeyError, ValueError):
            raise InputError(f"{source}: entry[{i}].resource.resourceType: "
                             "not a FHIR R4 resource type") from None


def validate(data: dict, source: str) -> None:
    """Structure and types through fhir.resources' R4B models (imported only here).

    A bundle that `shapes` finds certainly valid is not handed to the library (its import
    and model building alone take ~0.4 s). Otherwise the Bundle is validated without its
    entries' resources, and each resource with its own model class: the same checks, in
    under half the time of validating the whole Bundle (whose `entry.resource` is a
    polymorphic Resource that the library resolves and validates again for every entry).
    """
    shell = {**data, "entry": [{k: v for k, v in entry.items() if k != "resource"} for entry in data["entry"]]}
    if bundle_shell_conforms(shell) and all(resource_conforms(e["resource"]) for e in data["entry"]):
        return  # certainly valid (shapes.py): fhir.resources would accept it, and is not imported
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.bundle import Bundle as BundleModel

    parts = [((), BundleModel, shell)]
    parts += [(("entry", i, "resource"), get_fhir_model_class(entry["resource"]["resourceType"]), entry["resource"])
              for i, entry in enumerate(data["entry"])]
    count, problems = 0, []
    for prefix, model, value in parts:
        try:
            model.model_validate(value)
        except ValidationError as exc:
            count += exc.error_count()
            problems += [(prefix + tuple(err["loc"]), _scrub(err)) for err in exc.errors(include_url=False)]
        except (KeyError, TypeError, ValueError) as exc:  # the library's own checks, outside pydantic's
            raise InputError(f"{source}: not a valid FHIR R4 Bundle ({type(exc).__name__} in fhir.resources)") from None
    if count:
        lines = [f"{source}: not a valid FHIR R4 Bundle: {count} problem(s)"]
        lines += [f"  {_where(data, loc)}: {msg.removeprefix('Value error, ')}" for loc, msg in problems[:20]]
        raise InputError("\n".join(lines))


def _scrub(err: dict) -> str:
    """pydantic's message for one problem, without the value it was given (it may be data)."""
    msg = str(err.get("msg") or "invalid")
    given = err.get("input")
    if isinstance(given, (str, int, float)) and not isinstance(given, bool) and str(given) and str(given) in msg:
        msg = msg.replace(str(given), "(the value)")
    if isinstance(given, str):
        for word in re.findall(r"[^\s'\"]{4,}", given):
            msg = msg.replace(word, "(the value)")
    return msg


def _loc_word(p: Any) -> str:
    """A step of an error's location: an index, a FHIR element name, else `(unknown key)` (a key
    of the input that is no FHIR element may be anything)."""
    if isinstance(p, int):
        return f"[{p}]"
    return p if isinstance(p, str) and p in _fhir_names()[1] else "(unknown key)"


def _where(data: dict, loc: tuple) -> str:
    """('entry', 3, 'resource', 'status') -> 'entry[3] MedicationRequest: status'."""
    if len(loc) >= 3 and loc[0] == "entry" and isinstance(loc[1], int) and loc[2] == "resource":
        resource = data["entry"][loc[1]].get("resource") or {}
        path = ".".join(_loc_word(p) for p in loc[3:]).replace(".[", "[")
        return f"entry[{loc[1]}] {type_name(resource.get('resourceType'))}: {path or '(resource)'}"
    return "Bundle." + ".".join(_loc_word(p) for p in loc).replace(".[", "[") if loc else "Bundle"


def index_bundle(data: dict, source: str) -> Bundle:
    bundle = Bundle(source, data)
    for at, entry in enumerate(data["entry"]):
        search_mode = (entry.get("search") or {}).get("mode")
        resource = entry["resource"]
        if search_mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
            continue  # a searchset's messages about the search, not patient data
        # A copy that knows its position (messages name resources by it, never by their id).
        resource = {**resource, ENTRY_KEY: at}
        if not resource.get("id") and entry.get("fullUrl"):
            # a transaction entry may have only a fullUrl: `Type/id` references find it by that id
            resource["id"] = re.split(r"[:/]", entry["fullUrl"])[-1]
        bundle.resources.append(resource)
        bundle.by_type.setdefault(resource.get("resourceType"), []).append(resource)
        if entry.get("fullUrl"):
            bundle.index[entry["fullUrl"]] = resource
        if resource.get("id"):
            bundle.index[f"{resource['resourceType']}/{resource['id']}"] = resource
    return bundle



def bundle_date(bundle: Bundle) -> Date:
    """The referral's 'as of' date: the bundle's timestamp, else its newest event date.

    Never the wall clock: the same bundle must give the same determination tomorrow.
    """
    stamp = full_date(bundle.data.get("timestamp"))
    if stamp:
        return stamp
    days = [d for r in bundle.resources for d in event_dates(r) if d]
    if not days:
        raise bundle.error("Bundle.timestamp", "no timestamp and no dated resource: give `date:` in the request file")
    return max(days)


def event_dates(r: dict) -> list[Optional[Date]]:
    """Dates at which something happened or was recorded (not planned validity periods)."""
    values = [r.get(k) for k in ("effectiveDateTime", "effectiveInstant", "issued", "authoredOn", "recordedDate",
                                 "onsetDateTime", "abatementDateTime", "performedDateTime", "occurrenceDateTime",
                                 "dateAsserted", "created")]
    for key in ("effectivePeriod", "performedPeriod"):
        values += [period_start(r.get(key)), period_end(r.get(key))]
    if r.get("resourceType") == "Encounter":
        values += [period_start(r.get("period")), period_end(r.get("period"))]
    return [full_date(v) for v in values]




def the_patient(bundle: Bundle) -> dict:
    """The bundle's one Patient (a referral is about one person)."""
    patients = bundle.of_type("Patient")
    if len(patients) != 1:
        raise bundle.error("Patient", f"a referral is about one patient; the bundle holds {len(patients)} "
                                      f"Patient resources")
    bundle.used.add(id(patients[0]))
    return patients[0]
