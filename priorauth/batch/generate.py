"""Synthetic referrals for tests, demos and benchmarks (`priorauth samples generate`).

Seeded and reproducible: the same (n, seed, invalid_share) gives the same bytes, and every
date is relative to a base date drawn from the seed, never today. The mix covers every
determination and every indication pathway of the baseline policies (the first records
walk through every scenario once, so even a small N has them all), several payers and
products, names with apostrophes, ampersands and non-ASCII letters, and a share of
deliberately broken records (bad YAML, an unknown field, an impossible date, a treatment
that ends before it starts, non-UTF-8 bytes, an empty file, an NPI with a wrong check
digit) that a batch must report and step over.

Nothing here is real patient data; the names are invented.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date as Date, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from ..core.errors import InputError
from ..core.files import atomic_write, ensure_dir

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class Sample:
    """One generated record: a file (folder output) or a line (JSON Lines output)."""

    name: str  # file name in the folder, e.g. GEN-1-000042.yaml
    data: bytes  # file content, or one JSON Lines line without its newline
    referral_id: Optional[str]  # None when the record is too broken to carry one
    intent: str  # "meets_criteria:refractory_to_steroids", "invalid:bad_npi", ...
    field: Optional[str] = None  # for invalid records: what the error message must name

    @property
    def invalid(self) -> bool:
        return self.intent.startswith("invalid:")


# ------------------------------------------------------------------ vocabulary

GIVEN = ["Maria", "Samuel", "Ruth", "Amara", "Gerald", "Harriet", "Siobhán", "Zoë", "José", "Łukasz",
         "Søren", "Chloé", "Nguyễn Thị", "Aisha", "Björn", "Mary-Kate", "D'Arcy", "Renée", "Thomas", "Priya",
         "Kwame", "Ingrid", "Mateo", "Yuki", "Fatima", "Olumide", "Grace", "Henrik", "Élodie", "Noor"]
FAMILY = ["Lopez", "O'Brien", "Kowalski", "Nwosu", "Kowalczyk", "Osei", "Müller", "Nuñez", "D'Angelo",
          "García-Márquez", "Ødegaard", "Smith", "Johnson", "Nakamura", "Al-Rashid", "Dubois", "Okafor",
          "MacLeod", "Van der Berg", "Abara", "Şahin", "Lindqvist", "O'Neill", "Chen", "Papadopoulos"]
PRESCRIBERS = [
    ("Anita Rao, MD", "rheumatology", "Lakeside Rheumatology"),
    ("Daniel Okafor, MD", "neurology", "Northside Neuromuscular Clinic"),
    ("Priya Natarajan, MD", "dermatology", "Riverside Dermatology & Skin Surgery"),
    ("Thomas Greene, MD", "dermatology", "Greene & Associates Dermatology"),
    ("Helen Marsh, MD", "pediatric rheumatology", "Children's Hospital of the Lakes"),
    ("Zoë Ferreira-Lund, DO", "rheumatology", "St. Agnes' Infusion & Arthritis Center"),
]
PAYERS = [  # (key, plan names, member id pattern)
    ("medicare", ["Medicare Part B"], "{d}{A}{A}{d}-{A}{A}{d}-{A}{A}{d}{d}"),
    ("aetna", ["Aetna Choice POS II", "Aetna Open Access"], "W{d}{d}{d}{d}{d}{d}{d}{d}{d}"),
    ("bluepeak-health", ["BluePeak Choice PPO", "BluePeak Kids CHIP"], "BPK-{d}{d}{d}{d}{d}-{d}{d}"),
    ("lakeshore-mutual", ["Lakeshore Mutual Silver PPO"], "LSM-{d}{d}{d}{d}-{d}{d}{d}{d}"),
    ("cigna", ["Cigna Open Access Plus"], "U{d}{d}{d}{d}{d}{d}{d}{d}"),
]
IVIG_PRODUCTS = ["Privigen", "Gamunex-C", "Octagam 10%", "Gammagard Liquid", "Panzyga", "Gammaplex",
                 "Bivigam", "Flebogamma DIF"]
RITUXIMAB_PRODUCTS = ["Rituxan", "Truxima", "Ruxience", "Riabni"]
SITES = ["infusion_center", "home", "hospital_outpatient", "physician_office"]

MYOSITIS = [("M33.12", "Dermatomyositis with myopathy"), ("M33.10", "Dermatomyositis, organ involvement unspecified"),
            ("M33.11", "Dermatomyositis with respiratory involvement"), ("M33.13", "Dermatomyositis without myopathy"),
            ("M33.20", "Polymyositis, organ involvement unspecified"), ("M33.22", "Polymyositis with myopathy"),
            ("M33.90", "Dermatopolymyositis, unspecified")]
JUVENILE = [("M33.02", "Juvenile dermatomyositis with myopathy"), ("M33.00", "Juvenile dermatomyositis, organ involvement unspecified")]
BLISTERING = [("L10.0", "Pemphigus vulgaris"), ("L10.2", "Pemphigus foliaceus"), ("L12.0", "Bullous pemphigoid"),
              ("L12.1", "Cicatricial (mucous membrane) pemphigoid"), ("L12.30", "Acquired epidermolysis bullosa, unspecified")]
SCLEROMYXEDEMA = ("L98.5", "Mucinosis of the skin (scleromyxedema)")
UNCOVERED = [("G72.41", "Inclusion body myositis"), ("L40.0", "Psoriasis vulgaris"), ("L93.0", "Discoid lupus erythematosus")]

MYOSITIS_FINDINGS = [("muscle_biopsy", "perifascicular atrophy with perivascular inflammation"),
                     ("muscle_enzymes", "CK 4,850 U/L, aldolase 22 U/L"),
                     ("emg", "fibrillations and short, small polyphasic motor units"),
                     ("muscle_mri", "symmetric edema of the thigh muscles"),
                     ("serology", "anti-Mi-2 positive")]
BLISTER_FINDINGS = [("skin_biopsy", "subepidermal blister with eosinophils"),
                    ("direct_immunofluorescence", "linear IgG and C3 along the basement membrane zone")]
STEROIDS = ["prednisone", "prednisolone", "methylprednisolone", "Medrol", "Deltasone"]
SPARING = ["methotrexate", "azathioprine", "mycophenolate mofetil", "CellCept", "Imuran", "tacrolimus", "cyclosporine"]


def npi_with_check_digit(body9: str) -> str:
    """A valid NPI from 9 digits: the Luhn check digit over the prefix 80840 (CMS rule)."""
    digits = [int(d) for d in "80840" + body9]
    total = 0
    for i, d in enumerate(reversed(digits)):  # the check digit will sit at position 0
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body9 + str((10 - total % 10) % 10)


# ------------------------------------------------------------------ scenarios


class _Builder:
    """Builds one referral dict; every random choice comes from the seeded rng."""

    def __init__(self, rng: random.Random, referral_id: str, base: Date):
        self.rng = rng
        self.id = referral_id
        self.date = base + timedelta(days=rng.randint(0, 330))

    def day(self, days_before: int) -> str:
        return (self.date - timedelta(days=days_before)).isoformat()

    def after(self, days: int) -> str:
        return (self.date + timedelta(days=days)).isoformat()

    def member_id(self, pattern: str) -> str:
        out = pattern
        while "{d}" in out or "{A}" in out:
            out = out.replace("{d}", str(self.rng.randint(0, 9)), 1)
            out = out.replace("{A}", self.rng.choice("ACDEFGHJKMNPQRTUVWXY"), 1)
        return out

    def base(self, diagnosis: tuple[str, str], child: bool = False) -> dict:
        rng = self.rng
        age = rng.randint(5, 15) if child else rng.randint(22, 88)
        height = rng.randint(110, 165) if child else rng.randint(150, 195)
        bmi = rng.uniform(14, 22) if child else rng.choice([rng.uniform(19, 29), rng.uniform(30, 42)])
        # Sex other/unknown only below BMI 30: above it, dosing needs ideal body weight, which
        # needs female or male (the missing_documentation:sex scenario covers that case).
        sex = rng.choice(["female", "male"] * 4 + (["other", "unknown"] if bmi < 30 else []))
        weight = round(bmi * (height / 100) ** 2, 1)
        payer, plans, pattern = rng.choice(PAYERS)
        name, specialty, org = rng.choice(PRESCRIBERS)
        coverage = {"payer": payer, "plan_name": rng.choice(plans), "member_id": self.member_id(pattern)}
        if payer != "medicare" and rng.random() < 0.5:
            coverage["group_number"] = f"{rng.randint(0, 9999999):07d}"
        prescriber = {"name": name, "npi": npi_with_check_digit(f"{rng.randint(1, 2)}{rng.randint(0, 99999999):08d}"),
                      "specialty": specialty}
        if rng.random() < 0.7:
            prescriber["organization"] = org
        if rng.random() < 0.5:
            prescriber["phone"] = f"555-{rng.randint(100, 999):04d}"
            prescriber["fax"] = f"555-{rng.randint(100, 999):04d}"
        code, description = diagnosis
        return {
            "referral_id": self.id,
            "date": self.date.isoformat(),
            "patient": {
                "given_name": rng.choice(GIVEN), "family_name": rng.choice(FAMILY),
                "birth_date": self.day(age * 365 + rng.randint(0, 364)), "sex": sex,
                "weight_kg": weight, "height_cm": float(height),
            },
            "coverage": coverage,
            "prescriber": prescriber,
            "diagnoses": [{"code": code if rng.random() < 0.8 else code.replace(".", ""),
                           "description": description, "onset_date": self.day(rng.randint(200, 900))}],
            "findings": [],
            "treatments": [],
            # Renal function before IVIG (safety screening): most referrals have a recent one.
            "assessments": [{"measure": "creatinine", "value": round(rng.uniform(0.6, 1.3), 2), "unit": "mg/dL",
                             "date": self.day(rng.randint(2, 25))}] if rng.random() < 0.9 else [],
            "clinical_course": rng.choice(["active", "active", "stable"]),
            "request": self.ivig(),
        }

    def ivig(self, dose: float = 2.0, interval: float = 4, days: Optional[int] = None) -> dict:
        rng = self.rng
        return {"therapy": "ivig", "product": rng.choice(IVIG_PRODUCTS), "request_type": "initial",
                "dose_g_per_kg": dose, "days_per_cycle": days or rng.choice([2, 3, 4, 5]),
                "interval_weeks": interval, "cycles": rng.choice([3, 4, 6]),
                "start_date": self.after(rng.randint(5, 21)), "site_of_care": rng.choice(SITES)}

    def rituximab(self, ref: dict) -> dict:
        # Hepatitis B screening before rituximab (boxed warning; a Medicare criterion)
        when = self.day(self.rng.randint(5, 120))
        ref["assessments"] += [{"measure": "hbsag", "value": 0, "unit": "negative", "date": when},
                               {"measure": "anti_hbc", "value": 0, "unit": "negative", "date": when}]
        return {"therapy": "rituximab", "product": self.rng.choice(RITUXIMAB_PRODUCTS), "request_type": "initial",
                "dose_mg": 1000, "doses": 2, "start_date": self.after(self.rng.randint(5, 21)),
                "site_of_care": "infusion_center"}

    def confirm(self, ref: dict, kinds: list[tuple[str, str]], count: int = 2) -> None:
        for kind, result in self.rng.sample(kinds, min(count, len(kinds))):
            ref["findings"].append({"kind": kind, "date": self.day(self.rng.randint(150, 400)),
                                    "result": result, "supports_diagnosis": True})

    def trial(self, drug: str, outcome: Optional[str], weeks: Optional[float], ended: bool = True,
              dated: bool = True, route: Optional[str] = None, ago: Optional[int] = None) -> dict:
        rng = self.rng
        t: dict[str, Any] = {"drug": drug}
        if route:
            t["route"] = route
        t["dose"] = rng.choice(["1 mg/kg daily", "60 mg daily", "20 mg weekly", "1 g twice daily", "150 mg daily"])
        if dated:
            end_ago = ago if ago is not None else rng.randint(10, 60)
            start_ago = end_ago + int(round((weeks or rng.randint(4, 30)) * 7))
            t["start_date"] = self.day(start_ago)
            t["end_date"] = self.day(end_ago) if ended else None
        if outcome:
            t["outcome"] = outcome
        if outcome in ("inadequate_response", "intolerance", "flare_on_taper") and rng.random() < 0.6:
            t["details"] = {"inadequate_response": "no strength gain; CK still above 2,000 U/L",
                            "intolerance": "steroid-induced diabetes & vertebral fracture",
                            "flare_on_taper": "new erosions each time the dose fell below 20 mg daily"}[outcome]
        return t


def _myositis_or_blistering(b: _Builder) -> tuple[dict, list]:
    if b.rng.random() < 0.5:
        juvenile = b.rng.random() < 0.15
        ref = b.base(b.rng.choice(JUVENILE if juvenile else MYOSITIS), child=juvenile)
        return ref, MYOSITIS_FINDINGS
    return b.base(b.rng.choice(BLISTERING)), BLISTER_FINDINGS


def _s_refractory(b):
    ref, kinds = _myositis_or_blistering(b)
    b.confirm(ref, kinds)
    ref["treatments"].append(b.trial(b.rng.choice(STEROIDS), "inadequate_response", b.rng.randint(6, 30)))
    return ref


def _s_intolerance(b):
    ref, kinds = _myositis_or_blistering(b)
    b.confirm(ref, kinds)
    ref["treatments"].append(b.trial("prednisone", "intolerance", b.rng.randint(1, 10)))
    return ref


def _s_contraindication(b):
    ref, kinds = _myositis_or_blistering(b)
    b.confirm(ref, kinds)
    ref["contraindications"] = [{"drug_class": "systemic_corticosteroids",
                                 "reason": "avascular necrosis of the femoral head; orthopedics advises no steroids",
                                 "documented_date": b.day(b.rng.randint(10, 90))}]
    return ref


def _s_flare(b):
    ref, kinds = _myositis_or_blistering(b)
    b.confirm(ref, kinds)
    ref["treatments"].append(b.trial("prednisone", "flare_on_taper", b.rng.randint(8, 40), ended=False))
    return ref


def _s_first_line_failure(b):
    ref, kinds = _myositis_or_blistering(b)
    b.confirm(ref, kinds)
    ref["treatments"].append(b.trial("prednisone", "ongoing", 20, ended=False))
    ref["treatments"].append(b.trial(b.rng.choice(SPARING), b.rng.choice(["inadequate_response", "intolerance"]),
                                     b.rng.randint(13, 30), route="oral"))
    return ref


def _s_rapidly_progressive(b):
    ref = b.base(b.rng.choice(BLISTERING))
    b.confirm(ref, BLISTER_FINDINGS)
    ref["clinical_course"] = "rapidly_progressive"
    ref["treatments"].append(b.trial("prednisone", "ongoing", 3, ended=False, ago=0))
    ref["request"]["interval_weeks"] = b.rng.choice([2, 3, 4])
    return ref


def _s_scleromyxedema(b):
    ref = b.base(SCLEROMYXEDEMA)
    b.confirm(ref, [("skin_biopsy", "dermal mucin deposition with fibroblast proliferation")], 1)
    return ref


def _s_rituximab_pv(b):
    ref = b.base(BLISTERING[0])
    b.confirm(ref, BLISTER_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", "ongoing", 6, ended=False))
    ref["request"] = b.rituximab(ref)
    # Rituximab in PV needs a documented moderate-to-severe severity (issue 13); no draw from
    # the seed's stream, so the other records stay as they were.
    ref["assessments"].append({"measure": "pdai", "value": 30, "unit": "points", "date": b.day(7)})
    return ref


def _s_rituximab_myositis(b):
    ref = b.base(b.rng.choice(MYOSITIS))
    b.confirm(ref, MYOSITIS_FINDINGS)
    ref["treatments"].append(b.trial("methotrexate", "inadequate_response", b.rng.randint(13, 40), route="sc"))
    ref["request"] = b.rituximab(ref)
    return ref


def _s_missing_biopsy(b):
    ref = b.base(b.rng.choice(BLISTERING))
    ref["findings"].append({"kind": "serology", "date": b.day(60), "result": "anti-desmoglein 3 ELISA 168 U/mL",
                            "supports_diagnosis": True})
    ref["treatments"].append(b.trial("prednisone", "flare_on_taper", 20, ended=False))
    return ref


def _s_missing_start_date(b):
    ref = b.base(b.rng.choice(MYOSITIS))
    b.confirm(ref, MYOSITIS_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", "inadequate_response", None, dated=False))
    return ref


def _s_missing_weight(b):
    ref = _s_refractory(b)
    del ref["patient"]["weight_kg"]
    return ref


def _s_missing_sex(b):
    ref = _s_refractory(b)
    ref["patient"].update(sex="unknown", height_cm=165.0, weight_kg=98.0)  # BMI 36: adjusted weight needs sex
    return ref


def _s_missing_outcome(b):
    ref = b.base(b.rng.choice(MYOSITIS))
    b.confirm(ref, MYOSITIS_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", None, 12))
    return ref


def _s_uncovered(b):
    ref = b.base(b.rng.choice(UNCOVERED))
    ref["findings"].append({"kind": "muscle_biopsy", "date": b.day(100), "result": "rimmed vacuoles",
                            "supports_diagnosis": True})
    ref["treatments"].append(b.trial("prednisone", "inadequate_response", 12))
    return ref


def _s_dose_above_limit(b):
    ref = _s_refractory(b)
    ref["request"]["dose_g_per_kg"] = b.rng.choice([2.5, 3.0])
    return ref


def _s_short_trial(b):
    ref = b.base(b.rng.choice(BLISTERING))
    b.confirm(ref, BLISTER_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", "inadequate_response", 2))
    return ref


def _s_interval_too_short(b):
    ref = b.base(b.rng.choice(MYOSITIS))
    b.confirm(ref, MYOSITIS_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", "inadequate_response", 16))
    ref["request"]["interval_weeks"] = 2
    return ref


def _s_no_prior_failure(b):
    ref = b.base(b.rng.choice(MYOSITIS))
    b.confirm(ref, MYOSITIS_FINDINGS)
    ref["treatments"].append(b.trial("prednisone", "response", 20))
    ref["treatments"].append(b.trial("hydroxychloroquine", "other", 10))
    return ref


# intent -> (builder, weight). The intent names the designed outcome; determine() is the truth.
SCENARIOS: dict[str, tuple[Callable[[_Builder], dict], int]] = {
    "meets_criteria:refractory_to_steroids": (_s_refractory, 12),
    "meets_criteria:steroid_intolerance": (_s_intolerance, 6),
    "meets_criteria:steroid_contraindication": (_s_contraindication, 4),
    "meets_criteria:flare_on_taper": (_s_flare, 6),
    "meets_criteria:first_line_failure": (_s_first_line_failure, 8),
    "meets_criteria:rapidly_progressive": (_s_rapidly_progressive, 5),
    "meets_criteria:first_line_indication": (_s_scleromyxedema, 3),
    "meets_criteria:rituximab_pemphigus": (_s_rituximab_pv, 4),
    "meets_criteria:rituximab_myositis": (_s_rituximab_myositis, 3),
    "missing_documentation:biopsy": (_s_missing_biopsy, 6),
    "missing_documentation:trial_start_date": (_s_missing_start_date, 5),
    "missing_documentation:weight": (_s_missing_weight, 4),
    "missing_documentation:trial_outcome": (_s_missing_outcome, 3),
    "missing_documentation:sex_for_adjusted_weight": (_s_missing_sex, 1),
    "not_eligible:not_covered": (_s_uncovered, 6),
    "not_eligible:dose_above_limit": (_s_dose_above_limit, 5),
    "not_eligible:short_steroid_trial": (_s_short_trial, 4),
    "not_eligible:interval_too_short": (_s_interval_too_short, 3),
    "not_eligible:no_failed_therapy": (_s_no_prior_failure, 3),
}

# Broken records: kind -> what the error message must name.
INVALID_KINDS = {
    "bad_yaml": "line",
    "unknown_field": "patient.middle_name",
    "bad_date": "patient.birth_date",
    "end_before_start": "treatments.0",
    "non_utf8": "UTF-8",
    "empty": "empty",
    "bad_npi": "prescriber.npi",
}


def _break(kind: str, ref: dict, b: _Builder, as_json: bool, jsonl: bool) -> bytes | None:
    """Spoil a good referral dict the way `kind` says; bytes for the text-level kinds."""
    if kind == "unknown_field":
        ref["patient"]["middle_name"] = "Q."
    elif kind == "bad_date":
        ref["patient"]["birth_date"] = b.rng.choice(["1971-02-30", "14/03/1971", "1968-13-01"])
    elif kind == "end_before_start":
        ref["treatments"].insert(0, {"drug": "prednisone", "start_date": b.day(30), "end_date": b.day(90),
                                     "outcome": "inadequate_response"})
    elif kind == "bad_npi":
        npi = ref["prescriber"]["npi"]
        ref["prescriber"]["npi"] = npi[:-1] + str((int(npi[-1]) + 1) % 10)
    elif kind == "non_utf8":
        ref["patient"]["given_name"] = "Zoë"
        return _dump(ref, as_json).decode("utf-8").encode("latin-1", errors="replace")
    elif kind == "empty":
        # A JSON Lines record cannot be an empty line (blank lines are skipped): use []
        return b"[]" if jsonl else b""
    elif kind == "bad_yaml":
        text = _dump(ref, as_json).decode("utf-8")
        if as_json:
            return text[: len(text) // 2].encode("utf-8")  # a truncated JSON object
        return text.replace("patient:", "patient: [unclosed", 1).encode("utf-8")
    return None


def _dump(ref: dict, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(ref, ensure_ascii=False).encode("utf-8")
    return yaml.dump(ref, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120).encode("utf-8")


def generate(n: int, seed: int = 0, invalid_share: float = 0.1, jsonl: bool = False,
             json_share: float = 0.2) -> Iterator[Sample]:
    """Yield `n` synthetic referrals, reproducibly from `seed` (a generator: constant memory).

    About `invalid_share` of them are broken (exactly floor(n * share), evenly spread).
    Folder output mixes YAML and JSON files (`json_share`); `jsonl` yields JSON lines.
    """
    if not 0 <= invalid_share <= 1:
        raise ValueError("invalid_share must be between 0 and 1")
    rng = random.Random(seed)
    base = Date(2026, 1, 5) + timedelta(days=rng.randint(0, 60))
    intents = list(SCENARIOS)
    weights = [w for _, w in SCENARIOS.values()]
    kinds = list(INVALID_KINDS)
    bad_seen = 0
    for i in range(n):
        referral_id = f"GEN-{seed}-{i:06d}"
        b = _Builder(rng, referral_id, base)
        broken = int((i + 1) * invalid_share) > int(i * invalid_share)
        # The first records walk through every scenario once, so small N covers them all.
        intent = intents[i] if i < len(intents) else rng.choices(intents, weights)[0]
        ref = SCENARIOS[intent][0](b)
        as_json = jsonl or rng.random() < json_share
        name = f"{referral_id}.{'json' if as_json else 'yaml'}"
        if not broken:
            yield Sample(name, _dump(ref, as_json), referral_id, intent)
            continue
        kind = kinds[bad_seen % len(kinds)]
        bad_seen += 1
        data = _break(kind, ref, b, as_json, jsonl)
        if data is None:
            data = _dump(ref, as_json)
        survives = kind not in ("bad_yaml", "non_utf8", "empty")
        field = "expected a mapping" if kind == "empty" and jsonl else INVALID_KINDS[kind]
        yield Sample(name, data, referral_id if survives else None, f"invalid:{kind}", field)


def write_samples(n: int, out: Path | str, seed: int = 0, invalid_share: float = 0.1, jsonl: bool = False,
                  force: bool = False) -> dict:
    """Write generated referrals into `out` (one file each, or `out/referrals.jsonl`).

    Returns counts by intent. Existing files are kept unless `force`.
    """
    out = ensure_dir(Path(out))
    counts: dict[str, int] = {}
    samples = generate(n, seed, invalid_share, jsonl)
    if jsonl:
        from .run import atomic_stream

        target = out / "referrals.jsonl"
        if target.exists() and not force:
            raise InputError(f"{target}: already exists (use --force to overwrite)")
        with atomic_stream(target) as fh:
            for s in samples:
                fh.write(s.data + b"\n")
                counts[s.intent] = counts.get(s.intent, 0) + 1
        return counts
    for s in samples:
        atomic_write(out / s.name, s.data, force=force)
        counts[s.intent] = counts.get(s.intent, 0) + 1
    return counts
