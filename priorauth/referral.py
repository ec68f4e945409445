"""The referral: what a clinic sends us, as a pydantic model (spec section 1).

This module is the single definition of the referral format: the JSON Schema
(`priorauth schema referral`), the validation errors and the README example all
come from these classes.
"""

from __future__ import annotations

import functools
import re
from datetime import date as Date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


_DATES: dict[str, Date] = {}  # text -> date: a batch meets the same dates again and again


def _iso_date(value: Any) -> Any:
    # YAML loading keeps dates as text (see _Loader), so every date takes this one
    # path; a bare number is refused rather than read as a Unix timestamp.
    if type(value) is str:
        found = _DATES.get(value)
        if found is not None:
            return found
    if isinstance(value, datetime):
        raise ValueError("expected a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, Date) or value is None:
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    try:
        # The regex has fixed the shape to YYYY-MM-DD, where the standard library's C parser
        # agrees with dateutil's isoparse and costs a tenth of it (a batch parses ~10 dates a
        # referral); dateutil stays for the looser dates of FHIR imports.
        parsed = Date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real calendar date (check day and month)") from None
    if len(_DATES) >= 8192:  # bounded, whatever the input
        _DATES.clear()
    _DATES[value] = parsed
    return parsed


IsoDate = Annotated[Date, BeforeValidator(_iso_date)]

_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


def normalize_icd10(code: str) -> str:
    """`m3312` -> `M33.12`; raises ValueError when it cannot be an ICD-10-CM code."""
    text = code.strip().upper().replace(" ", "")
    if "." not in text and len(text) > 3:
        text = f"{text[:3]}.{text[3:]}"
    if not _ICD10.match(text):
        raise ValueError("not an ICD-10-CM code (a letter, two characters, an optional dot and up to four more)")
    return text


_TEN_DIGITS = re.compile(r"\d{10}")


@functools.lru_cache(maxsize=4096)  # a batch sees the same prescribers again and again
def npi_is_valid(npi: str) -> bool:
    """Luhn check over the NPI with the card-issuer prefix 80840 (CMS NPI check-digit rule)."""
    if not _TEN_DIGITS.fullmatch(npi):
        return False
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class _Model(BaseModel):
    # A typo in a field name must fail loudly, never drop data (spec section 1).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


Text = Annotated[str, Field(min_length=1)]


class Patient(_Model):
    given_name: Text
    family_name: Text
    birth_date: IsoDate
    sex: Literal["female", "male", "other", "unknown"] = "unknown"
    weight_kg: Optional[float] = Field(default=None, gt=0, lt=700)
    height_cm: Optional[float] = Field(default=None, gt=0, lt=300)


class Coverage(_Model):
    payer: Text = Field(description="payer key, e.g. medicare or aetna; chooses the policy variant")
    plan_name: Optional[str] = None
    member_id: Text
    group_number: Optional[str] = None

    @field_validator("payer")
    @classmethod
    def _payer_key(cls, value: str) -> str:
        return value.lower()


class Prescriber(_Model):
    name: Text
    npi: str = Field(description="10-digit NPI with a valid check digit")
    specialty: Optional[str] = None
    organization: Optional[str] = None
    phone: Optional[str] = None
    fax: Optional[str] = None
    address: Optional[str] = None

    @field_validator("npi", mode="before")
    @classmethod
    def _npi(cls, value: Any) -> str:
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text is None:
            raise ValueError("NPI must be 10 digits, written as text")
        if not _TEN_DIGITS.fullmatch(text):
            raise ValueError(f"NPI must be exactly 10 digits, got {len(text)} characters")
        if not npi_is_valid(text):
            raise ValueError("NPI check digit is wrong (Luhn check with prefix 80840 fails): check for a typo")
        return text


class Diagnosis(_Model):
    code: str = Field(description="ICD-10-CM, with or without the dot (M33.12 = M3312)")
    description: Optional[str] = None
    onset_date: Optional[IsoDate] = None

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("ICD-10-CM code must be text")
        return normalize_icd10(value)


FindingKind = Literal[
    "muscle_biopsy", "emg", "muscle_mri", "muscle_enzymes", "skin_biopsy",
    "direct_immunofluorescence", "indirect_immunofluorescence", "serology",
    "clinical_exam", "other",
]
Route = Literal["oral", "iv", "im", "sc", "topical"]
Outcome = Literal["inadequate_response", "intolerance", "flare_on_taper", "response", "ongoing", "other"]


class Finding(_Model):
    kind: FindingKind
    date: Optional[IsoDate] = None
    result: Optional[str] = None
    supports_diagnosis: bool


class Treatment(_Model):
    drug: Text
    route: Optional[Route] = None
    dose: Optional[str] = None
    start_date: Optional[IsoDate] = None
    end_date: Optional[IsoDate] = Field(default=None, description="null: still taking it on the referral date")
    outcome: Optional[Outcome] = None
    details: Optional[str] = None
    # Extensions for courses of the requested therapy, so a taper attempt can be shown
    # (lower dose or longer interval than an earlier course) without parsing `dose` text.
    dose_g_per_kg: Optional[float] = Field(default=None, gt=0, description="IVIG/SCIG course: grams per kg per cycle")
    interval_weeks: Optional[float] = Field(default=None, gt=0, description="IVIG/SCIG course: weeks between cycles")

    @model_validator(mode="after")
    def _dates_in_order(self) -> "Treatment":
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class Contraindication(_Model):
    drug_class: Optional[str] = None
    drug: Optional[str] = None
    reason: Text
    documented_date: Optional[IsoDate] = None

    @model_validator(mode="after")
    def _names_something(self) -> "Contraindication":
        if not (self.drug_class or self.drug):
            raise ValueError("a contraindication needs drug_class or drug")
        return self


class Assessment(_Model):
    measure: Text
    value: float
    unit: Optional[str] = None
    date: IsoDate

    @field_validator("measure")
    @classmethod
    def _measure_key(cls, value: str) -> str:
        return value.lower().replace("-", "").replace(" ", "_")


class Request(_Model):
    therapy: Literal["ivig", "scig", "rituximab"]
    product: Text = Field(description="brand name; criteria/products.yaml gives HCPCS code and billing unit")
    request_type: Literal["initial", "continuation"] = "initial"
    dose_g_per_kg: Optional[float] = Field(default=None, gt=0)
    days_per_cycle: Optional[int] = Field(default=None, gt=0)
    interval_weeks: Optional[float] = Field(default=None, gt=0)
    cycles: Optional[int] = Field(default=None, gt=0)
    dose_mg: Optional[float] = Field(default=None, gt=0)
    doses: Optional[int] = Field(default=None, gt=0)
    start_date: Optional[IsoDate] = None
    site_of_care: Optional[Literal["home", "infusion_center", "hospital_outpatient", "physician_office"]] = None


class Referral(_Model):
    """One prior-authorization referral (spec section 1)."""

    referral_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="names the output files")
    date: IsoDate = Field(description="the 'as of' date of every computation")
    patient: Patient
    coverage: Coverage
    prescriber: Prescriber
    diagnoses: list[Diagnosis] = Field(min_length=1)
    findings: list[Finding] = []
    treatments: list[Treatment] = []
    contraindications: list[Contraindication] = []
    assessments: list[Assessment] = []
    clinical_course: Optional[Literal["stable", "active", "rapidly_progressive"]] = None
    request: Request

    @model_validator(mode="after")
    def _birth_not_after_date(self) -> "Referral":
        if self.patient.birth_date > self.date:
            raise ValueError("patient.birth_date is after the referral date")
        return self


# ---------------------------------------------------------------- loading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (no `!!python` tags) that leaves dates as text for the model to judge."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _NotPlain(Exception):
    """The document needs PyYAML's full constructor (aliases, merge keys, tags, ...)."""


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
# Scalar tags the fast path builds, always with PyYAML's own constructor so values are
# identical; every other tag (binary, timestamp, set, omap, value, merge, python/..., !foo)
# goes the full path, which builds it or raises the same ConstructorError as ever.
_PLAIN_SCALARS = frozenset(("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"))
_MAX_DEPTH = 64  # deeper documents take the full (iterative) path instead of recursing here


class _FastLoader(_Loader):  # type: ignore[misc,valid-type]
    """_Loader with shortcuts for plain documents (batch runs parse thousands of referrals).

    Past the C parser, PyYAML spends its time in Python: a resolver call with regexes per
    scalar, and a constructor with a generator per collection and bookkeeping per node.
    A referral is plain maps, lists and scalars, so construct_document builds it directly
    and hands anything else, and any failure, to the unchanged PyYAML path: same data,
    same errors. Subclasses must not add resolvers (the memo below would go stale).
    """

    _plain_tags: dict[str, str] = {}  # plain scalar text -> its resolved tag

    def resolve(self, kind, value, implicit):
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        if not implicit[0]:
            # What BaseResolver.resolve returns for a scalar that is not plain (quoted,
            # block) when no path resolvers exist; saves its work for every quoted date.
            return self.DEFAULT_SCALAR_TAG
        # A plain scalar's tag depends on its text alone, and referrals repeat the same
        # texts (sex, payer, true, units...). Short texts only and a bounded memo, so
        # hostile input cannot grow memory.
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= 64:
                if len(self._plain_tags) >= 4096:
                    self._plain_tags.clear()
                self._plain_tags[value] = tag
        return tag

    def construct_document(self, node):
        try:
            return self._plain(node, set(), 0)
        except Exception:  # noqa: BLE001
            # _NotPlain, or a constructor error (`!!int x`, `0x_`...): the full path
            # decides, so the data or the exception is PyYAML's, raised in PyYAML's order
            # (it builds nested collections last, so its first error may differ from ours).
            return super().construct_document(node)

    def _plain(self, node, seen: set, depth: int):
        # `seen` holds every node built so far: meeting one again means an alias (a shared
        # or recursive object), which PyYAML's path builds as such.
        if node in seen or depth > _MAX_DEPTH:
            raise _NotPlain
        seen.add(node)
        tag = node.tag
        if type(node) is yaml.ScalarNode:
            if tag == _STR:
                return node.value
            if tag in _PLAIN_SCALARS:
                return self.yaml_constructors[tag](self, node)
            raise _NotPlain
        if tag == _MAP and type(node) is yaml.MappingNode:
            data = {}
            for key_node, value_node in node.value:
                # Scalar keys only: collection keys are unhashable (PyYAML raises), and
                # `<<` (merge) and `=` (value) keys have their own tags, so not _STR or
                # _PLAIN_SCALARS: all of them go the full path.
                if type(key_node) is not yaml.ScalarNode:
                    raise _NotPlain
                # str keys and values inline (most nodes of a referral): same as _plain().
                if key_node.tag == _STR and key_node not in seen:
                    seen.add(key_node)
                    key = key_node.value
                else:
                    key = self._plain(key_node, seen, depth)
                if value_node.tag == _STR and type(value_node) is yaml.ScalarNode and value_node not in seen:
                    seen.add(value_node)
                    value = value_node.value
                else:
                    value = self._plain(value_node, seen, depth + 1)
                # As in PyYAML: a repeated key keeps its first place and takes the last value.
                data[key] = value
            return data
        if tag == _SEQ and type(node) is yaml.SequenceNode:
            return [self._plain(child, seen, depth + 1) for child in node.value]
        raise _NotPlain


def parse_text(text: str, source: str) -> Any:
    """YAML or JSON text -> plain data. JSON is valid YAML, but a JSON parser is much faster."""
    if text.lstrip().startswith("{"):
        try:
            return orjson.loads(text)  # a JSON Lines batch parses one per record: ~3x json.loads
        except orjson.JSONDecodeError:
            pass  # fall through: YAML flow mappings also start with '{' (and NaN is YAML's to judge)
    try:
        return yaml.load(text, Loader=_FastLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}:{where} not valid YAML or JSON: {problem}") from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the referral"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        # Messages never carry the rejected value (our validators and pydantic's default
        # messages name the field and the rule): it may be protected health information.
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def referral_from_data(data: Any, source: str) -> Referral:
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping of referral fields, got {type(data).__name__}")
    try:
        return Referral.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, source)) from None


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None


def read_referral(path: str | Path, text: str | None = None,
                  criteria_dir: str | Path | None = None) -> tuple[Referral, list[str]]:
    """Read one referral (YAML, JSON, or a FHIR R4 Bundle) -> (referral, import warnings).

    `text` overrides reading `path` (stdin, JSON Lines). Import warnings name what a FHIR
    bundle held that could not be mapped; YAML and JSON referrals have none. `criteria_dir`
    is the criteria folder whose drug names and code maps a FHIR import uses.
    """
    source = str(path)
    if text is None:
        text = read_text(Path(path))
    if not text.strip():
        raise InputError(f"{source}: the file is empty")
    data = parse_text(text, source)
    warnings: list[str] = []
    if isinstance(data, dict) and "resourceType" in data:
        from .fhir import referral_data_from_bundle  # only FHIR inputs pay for this import

        data, warnings = referral_data_from_bundle(data, source, criteria_dir=criteria_dir)
    return referral_from_data(data, source), warnings


def load_referral(path: str | Path, text: str | None = None) -> Referral:
    """Read one referral file; see read_referral for the warnings of a FHIR import."""
    return read_referral(path, text)[0]
