"""Typed patient record: what the FHIR adapter produces and the engine consumes.

Values are already in canonical units (creatinine mg/dL, cystatin mg/L, height cm, potassium mmol/L, HbA1c %,
albumin g/dL, phosphate and calcium mg/dL, bicarbonate mmol/L); urine ratios keep their classified unit (spec §3.3).
Everything after the adapter trusts these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from service.clinical.codes import ConditionConcept
from service.clinical.equations import Sex
from service.clinical.medications import DrugClass


class Comparator(StrEnum):
    LT = "<"
    LE = "<="
    GE = ">="
    GT = ">"


# Spec §4.4.4: "<" means the true value is below the number, so it is classified as number − 1e-9.
LESS_THAN_EPSILON = 1e-9


def classification_value(value: float, comparator: Comparator | None) -> float:
    """The value used for category comparisons; arithmetic (eGFR, acr_mg_g, KFRE) uses the number itself."""
    return value - LESS_THAN_EPSILON if comparator is Comparator.LT else value


@dataclass(frozen=True, slots=True, kw_only=True)
class LabValue:
    """One numeric result in its canonical unit.

    [2.1] `time` is the time of day as written ("hh:mm:ss", S2) or None for a date without a time; `whole_blood`
    marks a whole-blood creatinine (LOINC 38483-4, typically a point-of-care device, S4 step 3).
    """

    date: date
    value: float
    comparator: Comparator | None = None
    time: str | None = None
    whole_blood: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportedEgfr:
    """A laboratory-reported CKD-EPI 2021 eGFR (LOINC 98979-8 or 98980-6), used only as the S7 fallback."""

    date: date
    value: float
    equation: str
    comparator: Comparator | None = None
    time: str | None = None  # [2.1] time of day as written (S2), for the S8 order within a date


class UrineKind(StrEnum):
    ACR = "acr"
    PCR = "pcr"
    DIPSTICK = "dipstick"


class UrineUnit(StrEnum):
    MG_G = "mg/g"
    MG_MMOL = "mg/mmol"


@dataclass(frozen=True, slots=True, kw_only=True)
class UrineTest:
    """A urine albumin or protein test: a ratio in its classified unit, or a dipstick grade (spec §3.3, §4.2)."""

    date: date
    kind: UrineKind
    value: float | None = None  # ratios: number in `unit`; None for a dipstick
    unit: UrineUnit | None = None
    grade: str | None = None  # dipstick: negative, trace, 1+, 2+, 3+, 4+
    comparator: Comparator | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionFact:
    """A Condition reduced to its concepts, dates and whether it counts (spec §9.5, S13)."""

    concepts: frozenset[ConditionConcept]
    counted: bool  # False when inactive/resolved or entered-in-error/refuted
    onset_datetime: date | None = None
    onset_period_start: date | None = None
    recorded: date | None = None
    stages: frozenset[str] = frozenset()  # [2.1] §8.6 stages its CKD diagnosis codes state ("3a", "4", "none")
    code_text: str = ""  # [2.1] the CKD diagnosis code and display, for coded_stage_outdated (escaped on cards)
    refuted: bool = False  # verificationStatus entered-in-error or refuted (renal dosing RD-2.7: recent VTE)


@dataclass(frozen=True, slots=True, kw_only=True)
class MedicationFact:
    """An active or on-hold MedicationRequest reduced to its ingredients and classes (spec §7.3)."""

    ingredients: frozenset[str]
    classes: frozenset[DrugClass]
    text: str = ""
    authored: date | None = None  # [2.1] MedicationRequest.authoredOn (dual_ras names each drug's start date)
    request_id: str | None = None  # renal dosing RD-2.8: a draft being re-signed is not "already taken"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A resource or value the adapter could not use, with the reason; reported, never fatal."""

    resource: str  # "Observation/123" or "Observation#4" when it has no id
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureFact:
    """[2.1] A counted dialysis or kidney transplant Procedure (S13), with its raw dates; S13 picks the date."""

    kind: str  # "dialysis" or "transplant"
    status: str  # "completed" or "in-progress"
    performed: date | None = None  # performedDateTime
    start: date | None = None  # performedPeriod.start
    end: date | None = None  # performedPeriod.end


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressure:
    """[2.1] One blood-pressure value (mm Hg) with its date and time of day (S2)."""

    date: date
    time: str | None
    value: float


@dataclass(slots=True, kw_only=True)
class PatientRecord:
    """One patient's data, in canonical units, ready for the engine."""

    sex: Sex | None = None
    birth_date: date | None = None
    deceased_boolean: bool = False  # Patient.deceasedBoolean (spec S19)
    deceased_date: date | None = None  # Patient.deceasedDateTime, as a calendar date
    creatinine: list[LabValue] = field(default_factory=list)
    cystatin: list[LabValue] = field(default_factory=list)
    reported_egfr: list[ReportedEgfr] = field(default_factory=list)
    height_cm: list[LabValue] = field(default_factory=list)
    weight_kg: list[LabValue] = field(default_factory=list)  # renal dosing RD-2.4 (Bundle order kept)
    urine: list[UrineTest] = field(default_factory=list)
    potassium: list[LabValue] = field(default_factory=list)
    hba1c: list[LabValue] = field(default_factory=list)
    albumin: list[LabValue] = field(default_factory=list)
    phosphate: list[LabValue] = field(default_factory=list)
    bicarbonate: list[LabValue] = field(default_factory=list)
    calcium: list[LabValue] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    medications: list[MedicationFact] = field(default_factory=list)
    procedures: list[ProcedureFact] = field(default_factory=list)  # [2.1] S13
    systolic: list[BloodPressure] = field(default_factory=list)  # [2.1] §7.1 SBP
    diastolic: list[BloodPressure] = field(default_factory=list)  # [2.1] shown with the systolic, never a trigger
    rejected: list[Rejected] = field(default_factory=list)
