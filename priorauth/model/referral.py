"""The referral: what a clinic sends us, as a pydantic model (spec section 1).

This module is the single definition of the referral format: the JSON Schema
(`priorauth schema referral`), the validation errors and the README example all
come from these classes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..core.codes import _TEN_DIGITS, IsoDate, normalize_icd10, npi_is_valid
from ..core.errors import InputError


class _Model(BaseModel):
    # A typo in a field name must fail loudly, never drop data (spec section 1). NaN and
    # infinity are no quantity anyone means (and poison every computation downstream).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, allow_inf_nan=False)


# Physiological bounds (issue 16): outside them a value is a typo or a unit mix-up (inches,
# pounds, grams), and it would give a negative ideal body weight or an absurd dose.
HEIGHT_CM = (30.0, 250.0)
WEIGHT_KG = (0.5, 400.0)
BMI = (8.0, 120.0)
MAX_QUANTITY = 1_000_000  # no dose, count, interval or assessment value is larger

# Text fields never hold NUL or lone surrogates (no keyboard types them; they break CSV,
# JSON and terminals). Other control characters are let through: letters strip them and
# the worklist escapes them.
_CONTROL = re.compile("[\x00\ud800-\udfff]")


def _control_characters(data: Any) -> Optional[str]:
    """The path of the first text holding a control character, or None (iterative walk)."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        if type(value) is str:
            if _CONTROL.search(value):
                return where or "(top level)"
        elif type(value) is dict:
            for k, v in value.items():
                if type(k) is str and _CONTROL.search(k):
                    return where or "(top level)"
                stack.append((v, f"{where}.{_loc_part(k)}" if where else _loc_part(k)))
        elif type(value) is list:
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(value))
    return None


Text = Annotated[str, Field(min_length=1)]


class Patient(_Model):
    given_name: Text
    family_name: Text
    birth_date: IsoDate
    sex: Literal["female", "male", "other", "unknown"] = "unknown"
    weight_kg: Optional[float] = Field(default=None, ge=WEIGHT_KG[0], le=WEIGHT_KG[1])
    height_cm: Optional[float] = Field(default=None, ge=HEIGHT_CM[0], le=HEIGHT_CM[1])

    @model_validator(mode="after")
    def _bmi_possible(self) -> "Patient":
        if self.weight_kg is not None and self.height_cm is not None:
            bmi = self.weight_kg / (self.height_cm / 100) ** 2
            if not BMI[0] <= bmi <= BMI[1]:
                raise ValueError(f"weight_kg and height_cm give a BMI outside {BMI[0]:g}-{BMI[1]:g}: "
                                 f"check both (units: kg and cm)")
        return self


class Coverage(_Model):
    payer: Text = Field(description="payer key, e.g. medicare or aetna; chooses the policy variant")
    plan_name: Optional[str] = None
    member_id: Text
    group_number: Optional[str] = None
    # Revision 2. No plan_type for payer `medicare` means Original Medicare (spec section 1);
    # criteria/payers.yaml says so as data, the model only records what was sent.
    plan_type: Optional[Literal["original_medicare", "medicare_advantage", "medicaid", "commercial"]] = None
    benefit: Optional[Literal["medical", "pharmacy"]] = Field(default=None, description="which benefit pays for the drug")

    @field_validator("payer")
    @classmethod
    def _payer_key(cls, value: str) -> str:
        return value.lower()


def _checked_npi(value: Any) -> str:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None:
        raise ValueError("NPI must be 10 digits, written as text")
    if not _TEN_DIGITS.fullmatch(text):
        raise ValueError(f"NPI must be exactly 10 digits, got {len(text)} characters")
    if not npi_is_valid(text):
        raise ValueError("NPI check digit is wrong (Luhn check with prefix 80840 fails): check for a typo")
    return text


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
        return _checked_npi(value)


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
    dose_g_per_kg: Optional[float] = Field(default=None, gt=0, le=MAX_QUANTITY,
                                           description="IVIG/SCIG course: grams per kg per cycle")
    interval_weeks: Optional[float] = Field(default=None, gt=0, le=MAX_QUANTITY,
                                            description="IVIG/SCIG course: weeks between cycles")

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
    value: Optional[float] = Field(default=None, ge=-MAX_QUANTITY, le=MAX_QUANTITY)
    unit: Optional[str] = None
    date: IsoDate
    result: Optional[Text] = Field(default=None, description="qualitative result (negative, positive, reactive, nonreactive, text)")

    @model_validator(mode="after")
    def _value_or_result(self) -> "Assessment":
        if self.value is None and self.result is None:
            raise ValueError("an assessment needs a value or a result")
        return self

    @field_validator("measure")
    @classmethod
    def _measure_key(cls, value: str) -> str:
        return value.lower().replace("-", "").replace(" ", "_")


class ClinicalSummary(_Model):
    """Revision 2: the prescriber's own words for the letter's history section."""
    history: Optional[str] = None
    goal: Optional[str] = None
    organ_involvement: list[Text] = []


class Facility(_Model):
    """Revision 2: where the drug is given and billed."""
    name: Text
    npi: Optional[str] = None
    tin: Optional[str] = None
    address: Optional[str] = None
    phone: Optional[str] = None
    fax: Optional[str] = None

    @field_validator("npi", mode="before")
    @classmethod
    def _npi(cls, value: Any) -> Optional[str]:
        return None if value is None else _checked_npi(value)


# The contract's therapies (spec section 1); criteria/therapies.yaml says how each is dosed.
Therapy = Literal["ivig", "scig", "rituximab"]


class Request(_Model):
    therapy: Therapy
    product: Text = Field(description="brand name; criteria/products.yaml gives HCPCS code and billing unit")
    request_type: Literal["initial", "continuation"] = "initial"
    dose_g_per_kg: Optional[float] = Field(default=None, gt=0, le=MAX_QUANTITY)
    days_per_cycle: Optional[int] = Field(default=None, gt=0, le=MAX_QUANTITY)
    interval_weeks: Optional[float] = Field(default=None, gt=0, le=MAX_QUANTITY)
    cycles: Optional[int] = Field(default=None, gt=0, le=MAX_QUANTITY)
    dose_mg: Optional[float] = Field(default=None, gt=0, le=MAX_QUANTITY)
    doses: Optional[int] = Field(default=None, gt=0, le=MAX_QUANTITY)
    start_date: Optional[IsoDate] = None
    site_of_care: Optional[Literal["home", "infusion_center", "hospital_outpatient", "physician_office"]] = None
    servicing_facility: Optional[Facility] = None
    place_of_service: Optional[str] = Field(default=None, pattern=r"^[0-9]{2}$",
                                            description="CMS place-of-service code: 11 office, 12 home, 19/22 hospital outpatient")


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
    clinical_summary: Optional[ClinicalSummary] = None
    request: Request

    @field_validator("referral_id")
    @classmethod
    def _not_a_folder_name(cls, value: str) -> str:
        if value.strip(".") == "":
            raise ValueError("must not be only dots (it names the output files)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        try:
            # One C pass for the common case: orjson refuses unpaired surrogates and writes
            # NUL as \u0000; only then (or for data it cannot write) walk to name the field.
            clean = b"\\u0000" not in orjson.dumps(data)
        except TypeError:
            clean = False
        where = None if clean else _control_characters(data)
        if where is not None:
            raise ValueError(f"{where}: contains a NUL or an unpaired surrogate character: remove it")
        return data

    @model_validator(mode="after")
    def _birth_not_after_date(self) -> "Referral":
        if self.patient.birth_date > self.date:
            raise ValueError("patient.birth_date is after the referral date")
        return self


# ---------------------------------------------------------------- loading


_FIELD_LIKE = re.compile(r"[a-z][a-z0-9_]{0,40}\Z")


def _loc_part(part: Any) -> str:
    """A step of an error's location: indexes and field-like keys as they are; an unknown key
    that does not look like a field name (it may be a patient's name) is not repeated."""
    if isinstance(part, int) or (isinstance(part, str) and _FIELD_LIKE.match(part)):
        return str(part)
    return "(an unknown key)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the referral"]
    for err in exc.errors(include_url=False):
        loc = ".".join(_loc_part(p) for p in err["loc"]) or "(top level)"
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
