"""FHIR R4 resources (plain dicts) -> the typed PatientRecord (clinical spec §3, §8, §9.5).

Codes are matched, units converted and dates parsed here, once. A resource or value that cannot be used is reported
in `PatientRecord.rejected` with a reason and never raises: resources of other kinds, and Observations with codes the
engine does not read, are simply not ours and are skipped silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

from service.clinical import codes
from service.clinical.equations import CREATININE_UMOL_PER_MG_DL, Sex
from service.clinical.kfre import MG_G_PER_MG_MMOL
from service.clinical.medications import (
    ATC_COMBINATIONS,
    ATC_TO_INGREDIENT,
    RXCUI_TO_INGREDIENT,
    DrugClass,
    class_of,
    classes_from_atc,
    ingredients_from_product,
    ingredients_from_text,
)
from service.clinical.record import (
    BloodPressure,
    Comparator,
    ConditionFact,
    LabValue,
    MedicationFact,
    PatientRecord,
    ProcedureFact,
    Rejected,
    ReportedEgfr,
    UrineKind,
    UrineTest,
    UrineUnit,
)
from service.clinical.thresholds import SiteCode

Resource = dict[str, Any]

COUNTED_OBSERVATION_STATUS = frozenset({"final", "amended", "corrected", "preliminary"})
COUNTED_MEDICATION_STATUS = frozenset({"active", "on-hold"})
# Physiologically impossible values are refused with the reason "implausible" and nothing is made from them
# (issue #13: creatinine 1e-300 mg/dL gave eGFR 3×10^92). The bounds, in canonical units, are set wide on purpose so
# that no real result is lost; beyond them a value is a unit or transcription error (µmol/L sent as mg/dL, a
# ratio in mg/mg sent as mg/g). Creatinine 0.1–40 mg/dL: issue #13's bounds; below 0.1 no measurable muscle
# metabolism, above 40 beyond any reported survivable uraemia. The others follow the same rule: at least an order
# of magnitude past the critical values of clinical laboratories (potassium 1–10 mmol/L, HbA1c 3–20 %, height
# 30–250 cm, reported eGFR up to 250, urine ratios up to 100 g/g). A team decision (issue #13), not a guideline.
PLAUSIBLE = {
    "creatinine": (0.1, 40.0),  # mg/dL
    "cystatin": (0.1, 15.0),  # mg/L
    "egfr": (0.1, 250.0),  # mL/min/1.73 m²
    "height": (30.0, 250.0),  # cm
    # renal dosing RD-2.4: the heaviest and lightest weights on record are beyond these (the spec's D6 proposes
    # 25-350 kg for a site to decide; these only refuse what cannot be a body weight, as for the others)
    "weight": (0.2, 700.0),  # kg
    "potassium": (1.0, 10.0),  # mmol/L
    "hba1c": (3.0, 20.0),  # % (NGSP)
    "albumin": (0.5, 7.0),  # g/dL
    "phosphate": (0.3, 25.0),  # mg/dL
    "calcium": (2.0, 25.0),  # mg/dL
    "bicarbonate": (2.0, 60.0),  # mmol/L
    "ratio": (0.0, 100_000.0),  # urine ACR/PCR in mg/g (mg/mmol × 8.84 compared)
    # [2.1] blood pressure in mm Hg: beyond these no live reading (same rule as above; a team decision, issue #20)
    "systolic": (30.0, 300.0),
    "diastolic": (10.0, 200.0),
}
BP_UNITS = frozenset({"mm[hg]", "mmhg"})  # §9.5: mm[Hg] (UCUM) or mmHg; other units ignored
COUNTED_PROCEDURE_STATUS = frozenset({"completed", "in-progress"})
BIRTH_YEAR_MIN = 1880  # nobody alive was born earlier (oldest verified human lifespan: 122 years)


def plausible(quantity: str, value: float) -> bool:
    low, high = PLAUSIBLE[quantity]
    return low <= value <= high


CYSTATIN_NMOL_PER_MG = 74.9  # spec §3.1: nmol/L ÷ 74.9 = mg/L
HBA1C_IFCC_SLOPE, HBA1C_IFCC_INTERCEPT = 10.929, 2.15  # NGSP % = mmol/mol / 10.929 + 2.15 (to verify)
PHOSPHATE_MG_DL_PER_MMOL_L = 3.097  # to verify (spec §3.1)
CALCIUM_MG_DL_PER_MMOL_L = 4.008  # to verify (spec §3.1)
MG_PER_G = 1000.0


class AdapterError(ValueError):
    """The input cannot be read as one patient's Bundle (the CLI exits 2 with this message)."""


def text(value: Any) -> str | None:
    """The value if it is a string, else None: input values are looked up in sets and dicts, and a list or an
    object from a malformed resource must not raise there."""
    return value if isinstance(value, str) else None


UCUM_ANNOTATION = re.compile(r"\{[^}]*\}")


@lru_cache(maxsize=1024)  # a site sends a handful of unit strings, hundreds of times per patient
def normalise_unit(unit: str) -> str:
    """Spec §3.2.2: lower-case, no spaces, µ/μ -> u, UCUM annotations in braces removed (mg/g{creat} -> mg/g)."""
    unit = UCUM_ANNOTATION.sub("", unit)
    return unit.lower().replace(" ", "").replace("µ", "u").replace("μ", "u")


def parse_date(value: Any) -> date | None:
    """The calendar date of a FHIR date/dateTime (first 10 characters, no time-zone conversion); partial -> None."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def parse_partial_date(value: Any) -> date | None:
    """Patient.birthDate or deceasedDateTime; a partial date takes the first day of the missing part (S3, S19)."""
    if not isinstance(value, str):
        return None
    for pad in ("", "-01", "-01-01"):
        candidate = value[:10] + pad
        if len(candidate) == 10:
            try:
                return date.fromisoformat(candidate)
            except ValueError:
                return None
    return None


def as_list(value: Any) -> list[Any]:
    """A FHIR array as a list; anything else (a number, a boolean, an object where an array belongs) as empty
    (issue #21: a `coding` that was a number gave a 500 and aborted `ckd-cds screen`)."""
    return value if isinstance(value, list) else []


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in as_list(concept.get("coding")) if isinstance(c, dict)]


SiteCodeMap = dict[tuple[str, str], str]


def site_code_map(site_codes: Iterable[SiteCode]) -> SiteCodeMap:
    """(system, local code) -> LOINC, from the configuration's `site_codes` (contract D-03)."""
    return {(s.system, s.code): s.loinc for s in site_codes}


def loinc_codes(observation: Resource, site_codes: SiteCodeMap | None = None) -> list[str]:
    """LOINC codes of an Observation: system http://loinc.org or no system (spec §9.5), or a site's local code."""
    out = []
    for c in _codings(observation.get("code")):
        code, system = c.get("code"), c.get("system")
        if not isinstance(code, str):
            continue
        if system in (codes.LOINC, None):
            out.append(code)
        elif site_codes and (str(system), code) in site_codes:
            out.append(site_codes[(str(system), code)])
    return out


def reader_code(observation: Resource, site_codes: SiteCodeMap | None = None) -> str | None:
    """The first of `loinc_codes(observation)` that the engine reads (OBSERVATION_READERS), or None; the same
    answer in one pass, without building the list (it runs for every Observation of every call)."""
    concept = observation.get("code")
    if not isinstance(concept, dict):
        return None
    for c in as_list(concept.get("coding")):
        if not isinstance(c, dict):
            continue
        code = c.get("code")
        if not isinstance(code, str):
            continue
        system = c.get("system")
        if system in (codes.LOINC, None):
            if code in OBSERVATION_READERS:
                return code
        elif site_codes and (str(system), code) in site_codes:
            mapped = site_codes[(str(system), code)]
            if mapped in OBSERVATION_READERS:
                return mapped
    return None


def observation_datetime(obs: Resource) -> Any:
    """effectiveDateTime, else effectivePeriod.start, else issued (S2): the first present, as written."""
    raw = obs.get("effectiveDateTime")
    if raw is None:
        period = obs.get("effectivePeriod")
        raw = period.get("start") if isinstance(period, dict) else None
        if raw is None:
            raw = obs.get("issued")
    return raw


def observation_date(obs: Resource) -> date | None:
    """The calendar date of `observation_datetime` (S2)."""
    raw = observation_datetime(obs)
    return None if raw is None else parse_date(raw)


TIME_OF_DAY = re.compile(r"T([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d|60))?")


def time_of_day(value: Any) -> str | None:
    """[2.1] S2: the time of day of a dateTime as written, "hh:mm:ss" (seconds 00 when absent, fractions and the
    time-zone offset ignored, as for the date); None for a date without a time."""
    if not isinstance(value, str) or len(value) <= 10:
        return None
    match = TIME_OF_DAY.match(value, 10)
    if match is None:
        return None
    return f"{match[1]}:{match[2]}:{match[3] or '00'}"


class Quantity(NamedTuple):  # a tuple: made 200 times per chart, twice for converted values
    value: float
    unit: str | None  # normalised
    comparator: Comparator | None


def read_quantity(obs: Resource) -> Quantity | str:
    """valueQuantity as a Quantity, or the reason it cannot be used."""
    q = obs.get("valueQuantity")
    if not isinstance(q, dict) or "value" not in q:
        return "no_value"
    value = q["value"]
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "not_numeric"
    if not math.isfinite(value) or value <= 0:
        return "non_positive"
    raw_unit = q.get("code")
    if not isinstance(raw_unit, str):
        raw_unit = q.get("unit")
    unit = normalise_unit(raw_unit) if isinstance(raw_unit, str) and raw_unit.strip() else None
    if "comparator" not in q:
        return Quantity(float(value), unit, None)
    try:
        comparator = Comparator(q["comparator"])
    except ValueError:
        return "bad_comparator"
    return Quantity(float(value), unit, comparator)


# Unit -> factor to the canonical unit, per quantity (spec §3.1).
CREATININE_UNITS = {"mg/dl": 1.0, "umol/l": 1 / CREATININE_UMOL_PER_MG_DL, "mmol/l": 1000 / CREATININE_UMOL_PER_MG_DL}
CYSTATIN_UNITS = {"mg/l": 1.0, "nmol/l": 1 / CYSTATIN_NMOL_PER_MG}
HEIGHT_UNITS = {"cm": 1.0, "m": 100.0, "in": 2.54, "[in_i]": 2.54, "mm": 0.1}
# renal dosing RD-2.4: kg (the default when no unit is sent), g, pounds and ounces (exact avoirdupois factors)
WEIGHT_UNITS = {
    "kg": 1.0,
    "g": 0.001,
    "[lb_av]": 0.45359237,
    "lb": 0.45359237,
    "lbs": 0.45359237,
    "[oz_av]": 0.028349523125,
    "oz": 0.028349523125,
}
POTASSIUM_UNITS = {"mmol/l": 1.0, "meq/l": 1.0}
ALBUMIN_UNITS = {"g/dl": 1.0, "g/l": 0.1}
PHOSPHATE_UNITS = {"mg/dl": 1.0, "mmol/l": PHOSPHATE_MG_DL_PER_MMOL_L}
CALCIUM_UNITS = {"mg/dl": 1.0, "mmol/l": CALCIUM_MG_DL_PER_MMOL_L}
BICARBONATE_UNITS = {"mmol/l": 1.0, "meq/l": 1.0}
HBA1C_UNITS = {"%": 1.0}
# Urine ratios: unit -> (classified unit, factor). mg/mmol is classified natively (spec §3.3).
RATIO_UNITS = {
    "mg/g": (UrineUnit.MG_G, 1.0),
    "ug/mg": (UrineUnit.MG_G, 1.0),
    "mg/mg": (UrineUnit.MG_G, MG_PER_G),
    "g/g": (UrineUnit.MG_G, MG_PER_G),
    "mg/mmol": (UrineUnit.MG_MMOL, 1.0),
}
# 5804-0 as a quantity in mg/dL: band floors (inclusive) -> grade (spec §9.5).
DIPSTICK_MG_DL_BANDS = ((300.0, "3+"), (100.0, "2+"), (30.0, "1+"), (15.0, "trace"), (0.0, "negative"))


class RecordBuilder:
    """Accumulates one patient's resources into a PatientRecord."""

    def __init__(self, patient_id: str | None, patient_refs: set[str], site_codes: SiteCodeMap | None = None) -> None:
        self.record = PatientRecord()
        self.patient_id = patient_id
        self.patient_refs = patient_refs
        self.site_codes = site_codes
        self._count = 0

    # -- helpers -------------------------------------------------------------------------------------------
    def _label(self, resource: Resource) -> str:
        rid = resource.get("id")
        kind = resource.get("resourceType", "Resource")
        return f"{kind}/{rid}" if isinstance(rid, str) else f"{kind}#{self._count}"

    def reject(self, resource: Resource, why: str) -> None:
        self.record.rejected.append(Rejected(resource=self._label(resource), why=why))

    def is_other_patient(self, resource: Resource) -> bool:
        """True when subject (or patient) references a Patient that is not this one (spec §9.5)."""
        subject = resource.get("subject") or resource.get("patient")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(ref, str) or not self.patient_refs:
            return False
        ref = ref.split("/_history/", 1)[0]  # a version-specific reference names the same patient (issue #21)
        return ref not in self.patient_refs and not any(ref.endswith("/" + r) for r in self.patient_refs)

    # -- resources -----------------------------------------------------------------------------------------
    def add(self, resource: Any, medications: dict[str, Resource]) -> None:
        self._count += 1
        if not isinstance(resource, dict):
            return
        kind = resource.get("resourceType")
        if kind not in ("Observation", "Condition", "MedicationRequest", "Procedure"):
            return
        if self.is_other_patient(resource):
            self.reject(resource, "other_patient")
        elif kind == "Procedure":
            self.add_procedure(resource)
        elif kind == "Observation":
            self.add_observation(resource)
        elif kind == "Condition":
            self.add_condition(resource)
        else:
            self.add_medication_request(resource, medications)

    def add_observation(self, obs: Resource) -> None:
        code = reader_code(obs, self.site_codes)
        if code is None:
            return  # not a code the engine reads
        if text(obs.get("status")) not in COUNTED_OBSERVATION_STATUS:
            return self.reject(obs, "status")
        if obs.get("dataAbsentReason") is not None:
            return self.reject(obs, "data_absent")
        when = observation_date(obs)
        if when is None:
            return self.reject(obs, "bad_date")
        if self.record.birth_date is not None and when < self.record.birth_date:
            return self.reject(obs, "before_birth")
        why = OBSERVATION_READERS[code](self, obs, code, when)
        if why is not None:
            self.reject(obs, why)

    def add_condition(self, cond: Resource) -> None:
        concepts: set[codes.ConditionConcept] = set()
        stages: set[str] = set()
        named: list[str] = []
        for coding in _codings(cond.get("code")):
            code, system = coding.get("code"), coding.get("system")
            if not isinstance(code, str):
                continue
            stage = None
            if system == codes.ICD10CM:
                concepts |= codes.icd10_concepts(code)
                stage = codes.ICD10_STAGES.get(codes.normalise_icd10(code))
            elif system == codes.SNOMED:
                concepts |= codes.snomed_concepts(code)
                stage = codes.SNOMED_STAGES.get(code)
            if stage is not None:
                stages.add(stage)
                display = text(coding.get("display"))
                named.append(f"{code} {display}" if display else code)
        if not concepts:
            return
        period = cond.get("onsetPeriod")
        self.record.conditions.append(
            ConditionFact(
                concepts=frozenset(concepts),
                counted=condition_counts(cond),
                onset_datetime=parse_date(cond.get("onsetDateTime")),
                onset_period_start=parse_date(period.get("start")) if isinstance(period, dict) else None,
                recorded=parse_date(cond.get("recordedDate")),
                stages=frozenset(stages),
                code_text="; ".join(named),
                refuted=condition_refuted(cond),
            )
        )

    def add_procedure(self, proc: Resource) -> None:
        """[2.1] S13, §9.5: SNOMED CT dialysis and kidney transplant Procedures, completed or in progress."""
        status = text(proc.get("status"))
        if status not in COUNTED_PROCEDURE_STATUS:
            return
        found = {c.get("code") for c in _codings(proc.get("code")) if c.get("system") == codes.SNOMED}
        kind = (
            "transplant"
            if found & codes.TRANSPLANT_PROCEDURES
            else "dialysis"
            if found & codes.DIALYSIS_PROCEDURES
            else None
        )
        if kind is None:
            return
        period = proc.get("performedPeriod")
        period = period if isinstance(period, dict) else {}
        self.record.procedures.append(ProcedureFact(
            kind=kind, status=status, performed=parse_date(proc.get("performedDateTime")),
            start=parse_date(period.get("start")), end=parse_date(period.get("end")),
        ))  # fmt: skip

    def add_medication_request(self, req: Resource, medications: dict[str, Resource]) -> None:
        if text(req.get("status")) not in COUNTED_MEDICATION_STATUS:
            return
        fact = medication_fact(request_concept(req, medications))
        if fact is None:
            return
        authored = parse_date(req.get("authoredOn"))
        rid = req.get("id") if isinstance(req.get("id"), str) else None
        self.record.medications.append(dataclasses.replace(fact, authored=authored, request_id=rid))


def condition_counts(cond: Resource) -> bool:
    """A Condition counts unless inactive/resolved or entered-in-error/refuted (S13)."""
    clinical = {text(c.get("code")) for c in _codings(cond.get("clinicalStatus"))}
    verification = {text(c.get("code")) for c in _codings(cond.get("verificationStatus"))}
    return not (clinical & {"inactive", "resolved"} or verification & {"entered-in-error", "refuted"})


def condition_refuted(cond: Resource) -> bool:
    verification = {text(c.get("code")) for c in _codings(cond.get("verificationStatus"))}
    return bool(verification & {"entered-in-error", "refuted"})


def request_concept(req: Resource, medications: dict[str, Resource]) -> Any:
    """A MedicationRequest's drug: its medicationCodeableConcept, else the code of the Medication it references."""
    concept = req.get("medicationCodeableConcept")
    return resolve_medication(req, medications) if concept is None else concept


def resolve_medication(req: Resource, medications: dict[str, Resource]) -> Any:
    """The code of a referenced Medication: contained (#id) or elsewhere in the Bundle."""
    ref = req.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        for contained in as_list(req.get("contained")):
            if isinstance(contained, dict) and contained.get("id") == target[1:]:
                return contained.get("code")
        return None
    med = medications.get(target) or medications.get(target.rsplit("/", 1)[-1])
    return med.get("code") if med else None


def medication_fact(concept: Any) -> MedicationFact | None:
    """Ingredients and classes, in the order of §7.3: RxNorm IN, then ATC, then names in displays or text."""
    if not isinstance(concept, dict):
        return None
    codings = _codings(concept)
    ingredients = {RXCUI_TO_INGREDIENT[c["code"]] for c in codings if _is(c, codes.RXNORM, RXCUI_TO_INGREDIENT)}
    if not ingredients:  # [2.1] §7.3: product codes through the offline table, never as if they were ingredients
        for c in codings:
            if c.get("system") == codes.RXNORM and isinstance(c.get("code"), str):
                ingredients |= ingredients_from_product(c["code"])
    classes: set[DrugClass] = set()
    if not ingredients:
        for c in codings:
            if c.get("system") == codes.ATC and isinstance(c.get("code"), str):
                code = c["code"].upper()
                ingredient = ATC_TO_INGREDIENT.get(code)
                ingredients |= {ingredient} if ingredient else set(ATC_COMBINATIONS.get(code, ()))
                classes |= classes_from_atc(c["code"])
    texts = [c.get("display") for c in codings] + [concept.get("text")]
    text = " ".join(t for t in texts if isinstance(t, str))
    if not ingredients and not classes:
        ingredients = ingredients_from_text(text)
    classes |= {class_of(i) for i in ingredients}
    if not classes:
        return None
    return MedicationFact(ingredients=frozenset(ingredients), classes=frozenset(classes), text=text)


def _is(coding: dict[str, Any], system: str, table: dict[str, str]) -> bool:
    return coding.get("system") == system and text(coding.get("code")) in table


# --- Observation readers: each returns None when the value was added, or the reason it was not ---------------
ObservationReader = Callable[[RecordBuilder, Resource, str, date], str | None]


def _converted(obs: Resource, code: str, units: dict[str, float]) -> Quantity | str:
    """The value in the canonical unit (value and comparator; `unit` is the unit it was sent in, or the code's
    default unit when none was sent)."""
    q = read_quantity(obs)
    if isinstance(q, str):
        return q
    unit = q.unit or codes.DEFAULT_UNIT.get(code)
    factor = units.get(unit) if unit is not None else None
    if factor is None:
        return "unknown_unit"
    return Quantity(q.value * factor, unit, q.comparator)


def _lab(
    target: Callable[[PatientRecord], list[LabValue]], units: dict[str, float], quantity: str
) -> ObservationReader:
    def read(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
        q = _converted(obs, code, units)
        if isinstance(q, str):
            return q
        if not plausible(quantity, q.value):
            return "implausible"
        target(builder.record).append(LabValue(date=when, value=q.value, comparator=q.comparator))
        return None

    return read


def read_creatinine(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
    units = CREATININE_UNITS
    if code in codes.CREATININE_EITHER and read_quantity_unit(obs) is None:
        return "unknown_unit"  # 35203-9 (mass or moles) needs its unit (spec §3.2.4)
    q = _converted(obs, code, units)
    if isinstance(q, str):
        return q
    if not plausible("creatinine", q.value):
        return "implausible"
    builder.record.creatinine.append(LabValue(date=when, value=q.value, comparator=q.comparator,
                                              time=time_of_day(observation_datetime(obs)),
                                              whole_blood=code in codes.CREATININE_WHOLE_BLOOD))  # fmt: skip
    return None


def read_quantity_unit(obs: Resource) -> str | None:
    q = read_quantity(obs)
    return None if isinstance(q, str) else q.unit


def read_reported_egfr(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
    q = read_quantity(obs)  # any unit string: the LOINC code fixes the meaning (spec §3.1)
    if isinstance(q, str):
        return q
    if not plausible("egfr", q.value):
        return "implausible"
    builder.record.reported_egfr.append(
        ReportedEgfr(
            date=when,
            value=q.value,
            equation=codes.EGFR_REPORTED[code],
            comparator=q.comparator,
            time=time_of_day(observation_datetime(obs)),
        )
    )
    return None


def read_hba1c(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
    q = read_quantity(obs)
    if isinstance(q, str):
        return q
    if code in codes.HBA1C_IFCC:
        if q.unit != "mmol/mol":
            return "unknown_unit"
        value = q.value / HBA1C_IFCC_SLOPE + HBA1C_IFCC_INTERCEPT
    elif q.unit in HBA1C_UNITS:
        value = q.value
    else:
        return "unknown_unit"
    if not plausible("hba1c", value):
        return "implausible"
    builder.record.hba1c.append(LabValue(date=when, value=value, comparator=q.comparator))
    return None


def _ratio(kind: UrineKind) -> ObservationReader:
    def read(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
        q = read_quantity(obs)
        if isinstance(q, str):
            return q
        if q.unit not in RATIO_UNITS:
            return "unknown_unit"  # urine ratios have no default unit (spec §3.2.4)
        unit, factor = RATIO_UNITS[q.unit]
        if not plausible("ratio", q.value * factor * (MG_G_PER_MG_MMOL if unit is UrineUnit.MG_MMOL else 1.0)):
            return "implausible"
        test = UrineTest(date=when, kind=kind, value=q.value * factor, unit=unit, comparator=q.comparator)
        builder.record.urine.append(test)
        return None

    return read


def dipstick_grade(obs: Resource, code: str) -> str | None:
    """§8.2 parsing order: answer codes, then text, then each display, then valueString; 5804-0 may be mg/dL."""
    concept = obs.get("valueCodeableConcept")
    for coding in _codings(concept):
        answer = text(coding.get("code"))
        if answer in codes.DIPSTICK_ANSWER_CODES:
            return codes.DIPSTICK_ANSWER_CODES[answer]
    candidates: list[Any] = []
    if isinstance(concept, dict):
        candidates = [concept.get("text")] + [c.get("display") for c in _codings(concept)]
    candidates.append(obs.get("valueString"))
    for candidate in candidates:
        if isinstance(candidate, str):
            key = re.sub(r"\s*\(qualifier value\)$", "", candidate.strip().lower())
            if key in codes.DIPSTICK_TEXT:
                return codes.DIPSTICK_TEXT[key]
    if code in codes.DIPSTICK_MG_DL and "valueQuantity" in obs:
        q = read_quantity(obs)
        if isinstance(q, Quantity) and q.unit == "mg/dl":
            return next(grade for floor, grade in DIPSTICK_MG_DL_BANDS if q.value >= floor)
    return None


def read_dipstick(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
    grade = dipstick_grade(obs, code)
    if grade is None:
        return "unrecognised_dipstick"
    builder.record.urine.append(UrineTest(date=when, kind=UrineKind.DIPSTICK, grade=grade))
    return None


def _bp_value(builder: RecordBuilder, quantity: Any, kind: str) -> float | str:
    """A blood-pressure valueQuantity in mm Hg, or the reason it is not used."""
    if not isinstance(quantity, dict):
        return "no_value"
    value, unit = quantity.get("value"), text(quantity.get("unit")) or text(quantity.get("code"))
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "not_numeric"
    if unit is None or unit.lower().replace(" ", "") not in BP_UNITS:
        return "unknown_unit"
    if not plausible(kind, float(value)):
        return "implausible"
    return float(value)


def read_blood_pressure(builder: RecordBuilder, obs: Resource, code: str, when: date) -> str | None:
    """[2.1] §9.5: 8480-6 or 8462-4 alone, or a panel (85354-9, 55284-4) read from its 8480-6 and 8462-4 components
    (a component without a valueQuantity, or with its own dataAbsentReason, is ignored)."""
    time = time_of_day(observation_datetime(obs))
    parts: list[tuple[str, Any]] = []
    if code in codes.BP_PANELS:
        for component in as_list(obs.get("component")):
            if not isinstance(component, dict) or component.get("dataAbsentReason") is not None:
                continue
            for c in _codings(component.get("code")):
                if c.get("system") in (codes.LOINC, None) and c.get("code") in codes.SYSTOLIC | codes.DIASTOLIC:
                    parts.append((str(c["code"]), component.get("valueQuantity")))
                    break
    else:
        parts.append((code, obs.get("valueQuantity")))
    why, stored = "no_value", 0
    for part_code, quantity in parts:
        kind = "systolic" if part_code in codes.SYSTOLIC else "diastolic"
        value = _bp_value(builder, quantity, kind)
        if isinstance(value, str):
            why = value
            continue
        target = builder.record.systolic if kind == "systolic" else builder.record.diastolic
        target.append(BloodPressure(date=when, time=time, value=value))
        stored += 1
    return None if stored else why


OBSERVATION_READERS: dict[str, ObservationReader] = {
    **{c: read_creatinine for c in codes.CREATININE},
    **{c: _lab(lambda r: r.cystatin, CYSTATIN_UNITS, "cystatin") for c in codes.CYSTATIN_C},
    **{c: read_reported_egfr for c in codes.EGFR_REPORTED},
    **{c: _ratio(UrineKind.ACR) for c in codes.ACR},
    **{c: _ratio(UrineKind.PCR) for c in codes.PCR},
    **{c: read_dipstick for c in codes.DIPSTICK},
    **{c: _lab(lambda r: r.height_cm, HEIGHT_UNITS, "height") for c in codes.HEIGHT},
    **{c: _lab(lambda r: r.weight_kg, WEIGHT_UNITS, "weight") for c in codes.WEIGHT},
    **{c: _lab(lambda r: r.potassium, POTASSIUM_UNITS, "potassium") for c in codes.POTASSIUM},
    **{c: read_hba1c for c in codes.HBA1C_PERCENT | codes.HBA1C_IFCC},
    **{c: _lab(lambda r: r.albumin, ALBUMIN_UNITS, "albumin") for c in codes.ALBUMIN},
    **{c: _lab(lambda r: r.phosphate, PHOSPHATE_UNITS, "phosphate") for c in codes.PHOSPHATE},
    **{c: _lab(lambda r: r.bicarbonate, BICARBONATE_UNITS, "bicarbonate") for c in codes.BICARBONATE},
    **{c: _lab(lambda r: r.calcium, CALCIUM_UNITS, "calcium") for c in codes.CALCIUM},
    **{c: read_blood_pressure for c in codes.SYSTOLIC | codes.DIASTOLIC | codes.BP_PANELS},  # [2.1]
}


def patient_refs(patient: Resource, full_url: str | None = None) -> set[str]:
    """The references that mean this patient: Patient/{id}, urn:uuid:{id}, and the entry's fullUrl."""
    refs = set()
    pid = patient.get("id")
    if isinstance(pid, str):
        refs |= {f"Patient/{pid}", f"urn:uuid:{pid}"}
    if full_url:
        refs.add(full_url)
    return refs


def patient_label(patient: Resource | None) -> str:
    """Who a page is about, as the EHR names them (issue #23: the trend view says whose picture it is): the first
    official or usual name (its text, else given and family names), the birth date and the gender. Untrusted text:
    the caller escapes it."""
    if not isinstance(patient, dict):
        return ""
    names = [n for n in as_list(patient.get("name")) if isinstance(n, dict)]
    names.sort(key=lambda n: 0 if n.get("use") in ("official", "usual") else 1)
    name = ""
    if names:
        first = names[0]
        given = " ".join(g for g in as_list(first.get("given")) if isinstance(g, str))
        family = first.get("family") if isinstance(first.get("family"), str) else ""
        name = text(first.get("text")) or " ".join(p for p in (given, family) if p)
    parts = [name[:120] or "Name not recorded"]
    born = parse_date(patient.get("birthDate"))
    if born is not None:
        parts.append(f"born {born.isoformat()}")
    gender = text(patient.get("gender"))
    if gender:
        parts.append(gender[:20])
    return ", ".join(parts)


def read_patient(builder: RecordBuilder, patient: Resource) -> None:
    gender = patient.get("gender")
    builder.record.sex = Sex(gender) if gender in ("female", "male") else None
    birth = parse_partial_date(patient.get("birthDate"))
    if birth is not None and birth.year < BIRTH_YEAR_MIN:
        builder.reject(patient, "implausible_birth_date")  # e.g. 0001-01-01: treated as unknown (S3)
        birth = None
    builder.record.birth_date = birth
    builder.record.deceased_boolean = patient.get("deceasedBoolean") is True
    builder.record.deceased_date = parse_partial_date(patient.get("deceasedDateTime"))


def record_from_resources(
    patient: Resource | None,
    resources: Iterable[Any],
    full_url: str | None = None,
    site_codes: SiteCodeMap | None = None,
    shared_medications: dict[str, Resource] | None = None,
) -> PatientRecord:
    """Build the record from a Patient and that patient's other resources (prefetch or search results).

    `shared_medications`: Medication resources that belong to no patient (Bulk Data exports them apart), by
    `Medication/<id>` and id; the patient's own resources take precedence."""
    items = list(resources)
    refs = patient_refs(patient, full_url) if patient else set()
    builder = RecordBuilder(patient.get("id") if patient else None, refs, site_codes)
    if patient:
        read_patient(builder, patient)
    medications = {**(shared_medications or {}), **medication_index(items)}
    for resource in items:
        builder.add(resource, medications)
    return builder.record


def medication_index(items: list[Any]) -> dict[str, Resource]:
    index: dict[str, Resource] = {}
    for r in items:
        if isinstance(r, dict) and r.get("resourceType") == "Medication" and isinstance(r.get("id"), str):
            index[f"Medication/{r['id']}"] = r
            index[r["id"]] = r
    return index


def bundle_entries(bundle: Any) -> list[tuple[str | None, Resource]]:
    """(fullUrl, resource) for each entry of a Bundle; raises AdapterError when it is not a Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise AdapterError("input is not a FHIR Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise AdapterError("Bundle.entry is not a list")
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            url = entry.get("fullUrl")
            out.append((url if isinstance(url, str) else None, entry["resource"]))
    return out


def record_from_bundle(bundle: Any, site_codes: SiteCodeMap | None = None) -> PatientRecord:
    """A Bundle of any type holding exactly one Patient and that patient's resources (spec §9.4)."""
    entries = bundle_entries(bundle)
    patients = [(url, r) for url, r in entries if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise AdapterError(f"Bundle must hold exactly one Patient, found {len(patients)}")
    url, patient = patients[0]
    return record_from_resources(patient, (r for _, r in entries if r is not patient), url, site_codes)
