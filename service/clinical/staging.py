"""KDIGO CKD staging: AKI exclusion, chronicity, G/A categories, decision and progression (clinical spec §5).

The rules S1–S18 run in order for one patient and one `as_of` date. The staging constants (60, 90 days, the AKI
windows, the category cut-offs) are fixed so that an assessment can be reproduced exactly (spec §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from service.clinical.categories import DIPSTICK_CATEGORY, AStage, GStage, Risk, g_stage, heat_map, ratio_a_stage
from service.clinical.codes import ConditionConcept
from service.clinical.equations import Sex, egfr_ckd_epi_2021_cr, egfr_ckid_u25_cr
from service.clinical.kfre import MG_G_PER_MG_MMOL, acr_from_dipstick, acr_from_pcr
from service.clinical.record import (
    Comparator,
    LabValue,
    PatientRecord,
    UrineKind,
    UrineTest,
    UrineUnit,
    classification_value,
)

# KDIGO 2012 AKI definition (rise ≥ 0.3 mg/dL within 48 h, or ≥ 1.5 × baseline within 7 days), on calendar days.
# 0.2995 lets a rise of exactly 26.5 µmol/L (0.29977 mg/dL) and the float 0.9 -> 1.2 count (spec §5.2, S5).
AKI_ABSOLUTE_RISE_MG_DL = 0.2995
AKI_ABSOLUTE_WINDOW_DAYS = 2
AKI_RELATIVE_FACTOR = 1.5
AKI_RELATIVE_WINDOW_DAYS = 7
AKI_RELATIVE_TOLERANCE = 1e-9
# The coded-AKI window: from 2 days before to 30 days after an N17 onset (a design choice, spec §5.2).
AKI_CODED_BEFORE_DAYS = 2
AKI_CODED_AFTER_DAYS = 30
# KDIGO 2012/2024 CKD definition: abnormality for > 3 months, taken as ≥ 90 days; eGFR < 60 (strict).
CHRONICITY_DAYS = 90
EGFR_ABNORMAL_BELOW = 60.0
# KDIGO 2012 Rec 2.1.3: certain drop = worse G category and ≥ 25 % fall; rapid = sustained fall > 5 per year.
CERTAIN_DROP_RATIO = 0.75
RAPID_DECLINE_PER_YEAR = 5.0
PROGRESSION_MIN_SPAN_DAYS = 180
DAYS_PER_YEAR = 365.25
ADULT_AGE = 18


class Reason(StrEnum):
    NORMAL = "normal"
    SINGLE_ABNORMAL = "single_abnormal"
    ABNORMAL_LT90D = "abnormal_lt90d"
    AKI_EXCLUDED = "aki_excluded"
    EGFR_LT60_CHRONIC = "egfr_lt60_chronic"
    ALBUMINURIA_CHRONIC = "albuminuria_chronic"
    EGFR_AND_ALBUMINURIA_CHRONIC = "egfr_and_albuminuria_chronic"
    ALBUMINURIA_NOT_CHRONIC = "albuminuria_not_chronic"
    DIALYSIS = "dialysis"
    KIDNEY_TRANSPLANT = "kidney_transplant"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True, slots=True, kw_only=True)
class EgfrPoint:
    """One eGFR: computed from a creatinine (with its AKI flag) or reported by the laboratory (S6, S7)."""

    date: date
    value: float
    equation: str
    source: str  # "computed" or "reported"
    aki: bool = False
    comparator: Comparator | None = None
    creatinine: float | None = None  # mg/dL, for computed values
    staging_value: float = field(init=False)  # the value compared with cut-offs ("<" -> just below)

    def __post_init__(self) -> None:
        object.__setattr__(self, "staging_value", classification_value(self.value, self.comparator))


@dataclass(frozen=True, slots=True, kw_only=True)
class Excluded:
    """A creatinine not used for staging, with the first matching reason: aki, no_demographics, no_height."""

    date: date
    value: float
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Albuminuria:
    """The latest urine test (S11) with its category and the ACR in mg/g where it can be obtained (§5.8)."""

    test: UrineTest
    category: AStage
    acr_mg_g: float | None
    acr_estimated: bool
    estimate_unreliable: bool = False  # Sumida: PCR < 50 mg/g


@dataclass(frozen=True, slots=True, kw_only=True)
class Progression:
    """KDIGO progression from the earliest and latest valid eGFR (S18); endpoints only, no regression."""

    baseline: EgfrPoint
    latest: EgfrPoint
    certain_drop: bool
    rapid: bool | None
    slope_per_year: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Condition-derived facts at `as_of` (S1, S13, §7.1)."""

    concepts: frozenset[ConditionConcept]
    aki_onsets: tuple[date, ...]

    @property
    def diabetes(self) -> bool:
        return bool(self.concepts & {ConditionConcept.T1D, ConditionConcept.T2D, ConditionConcept.DIABETES_OTHER})

    @property
    def hypertension(self) -> bool:
        return ConditionConcept.HYPERTENSION in self.concepts

    def has(self, concept: ConditionConcept) -> bool:
        return concept in self.concepts


@dataclass(slots=True, kw_only=True)
class Staging:
    """Everything §5 decides, plus the series the recommendation rules and cards read."""

    as_of: date
    sex: Sex | None
    age_now: int | None
    facts: Facts
    ckd: bool
    reason: Reason
    g_stage: GStage | None
    a_stage: AStage | None
    kdigo_risk: Risk | None
    dialysis: bool
    kidney_transplant: bool
    egfr: EgfrPoint | None
    albuminuria: Albuminuria | None
    progression: Progression | None
    excluded: list[Excluded] = field(default_factory=list)
    valid: list[EgfrPoint] = field(default_factory=list)
    urine: list[UrineTest] = field(default_factory=list)


def days(a: date, b: date) -> int:
    """Whole days from date a to date b (S2)."""
    return (b - a).days


def age_at(birth: date, when: date) -> int:
    """Completed years at a date (S3)."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def condition_facts(record: PatientRecord, as_of: date) -> Facts:
    """Counted condition concepts and AKI onsets at `as_of` (S1, S5 AKI onsets, S13)."""
    concepts: set[ConditionConcept] = set()
    onsets: list[date] = []
    for cond in record.conditions:
        dated = cond.onset_datetime or cond.recorded
        if dated is not None and dated > as_of:
            continue  # S1: a Condition from after as_of is ignored
        aki_onset = cond.onset_datetime or cond.onset_period_start
        if ConditionConcept.AKI in cond.concepts and aki_onset is not None:
            onsets.append(aki_onset)  # an AKI onset counts whatever its status (S5)
        if cond.counted:
            concepts |= cond.concepts
    return Facts(concepts=frozenset(concepts), aki_onsets=tuple(sorted(onsets)))


def aki_flags(series: list[LabValue], onsets: tuple[date, ...]) -> list[bool]:
    """S5: flag each creatinine (sorted by date, value) that meets a KDIGO AKI lab criterion or a coded window."""
    flags = []
    for i, current in enumerate(series):
        flagged = any(-AKI_CODED_BEFORE_DAYS <= days(onset, current.date) <= AKI_CODED_AFTER_DAYS for onset in onsets)
        for j in range(i - 1, -1, -1):
            earlier = series[j]
            gap = days(earlier.date, current.date)
            if gap > AKI_RELATIVE_WINDOW_DAYS or flagged:
                break
            rise = current.value - earlier.value
            flagged = (gap <= AKI_ABSOLUTE_WINDOW_DAYS and rise >= AKI_ABSOLUTE_RISE_MG_DL) or (
                current.value >= AKI_RELATIVE_FACTOR * earlier.value - AKI_RELATIVE_TOLERANCE
            )
        flags.append(flagged)
    return flags


def nearest_height(heights: list[LabValue], when: date) -> float | None:
    """The body height nearest in time to a specimen, before or after; the earlier one on a tie (S6)."""
    best = min(heights, key=lambda h: (abs(days(h.date, when)), h.date), default=None)
    return None if best is None else best.value


def computed_egfrs(
    record: PatientRecord, creatinine: list[LabValue], flags: list[bool]
) -> tuple[list[EgfrPoint], list[Excluded]]:
    """S6: an eGFR for each creatinine (CKD-EPI 2021 from 18, CKiD U25 below) and the §5.8 excluded list."""
    points: list[EgfrPoint] = []
    excluded: list[Excluded] = []
    for scr, aki in zip(creatinine, flags, strict=True):
        point, why = _egfr_for(record, scr, aki)
        if point is not None:
            points.append(point)
        if aki:
            why = "aki"
        if why is not None:
            excluded.append(Excluded(date=scr.date, value=scr.value, why=why))
    return points, excluded


def _egfr_for(record: PatientRecord, scr: LabValue, aki: bool) -> tuple[EgfrPoint | None, str | None]:
    if record.sex is None or record.birth_date is None:
        return None, "no_demographics"
    age = age_at(record.birth_date, scr.date)
    if age >= ADULT_AGE:
        value, equation = egfr_ckd_epi_2021_cr(scr.value, age, record.sex), "ckd-epi-2021-cr"
    else:  # CKD-EPI is never used under 18; no height, no eGFR
        height = nearest_height(record.height_cm, scr.date)
        if height is None:
            return None, "no_height"
        value, equation = egfr_ckid_u25_cr(scr.value, height / 100, age, record.sex), "ckid-u25-cr"
    point = EgfrPoint(date=scr.date, value=value, equation=equation, source="computed", aki=aki, creatinine=scr.value)
    return point, None


def reported_fallbacks(record: PatientRecord, as_of: date, creatinine_dates: set[date]) -> list[EgfrPoint]:
    """S7: laboratory CKD-EPI 2021 eGFRs on dates without any creatinine, never for a known child."""
    points = []
    for rep in record.reported_egfr:
        if rep.date > as_of or rep.date in creatinine_dates:
            continue
        if record.birth_date is not None and age_at(record.birth_date, rep.date) < ADULT_AGE:
            continue
        points.append(
            EgfrPoint(
                date=rep.date, value=rep.value, equation=rep.equation, source="reported", comparator=rep.comparator
            )
        )
    return points


def chronicity(series: list[EgfrPoint]) -> tuple[bool, Reason | None]:
    """S10: chronic when the latest eGFR is < 60 and another < 60 lies ≥ 90 days before it."""
    if not series or series[-1].staging_value >= EGFR_ABNORMAL_BELOW:
        return False, None
    latest = series[-1]
    earlier_low = [p for p in series[:-1] if p.staging_value < EGFR_ABNORMAL_BELOW]
    if any(days(p.date, latest.date) >= CHRONICITY_DAYS for p in earlier_low):
        return True, None
    return False, Reason.ABNORMAL_LT90D if earlier_low else Reason.SINGLE_ABNORMAL


def urine_category(test: UrineTest) -> AStage:
    """§4.2: ratios in their own unit (with the "<" convention), dipsticks by grade."""
    if test.kind is UrineKind.DIPSTICK:
        assert test.grade is not None
        return DIPSTICK_CATEGORY[test.grade]
    assert test.value is not None
    assert test.unit is not None
    return ratio_a_stage(test.kind, test.unit, classification_value(test.value, test.comparator))


def albuminuria_chronic(urine: list[UrineTest], categories: list[AStage]) -> bool:
    """S12: the latest test is A2/A3 and an earlier A2/A3 test lies ≥ 90 days before it (kinds may differ)."""
    if not urine or categories[-1] is AStage.A1:
        return False
    latest = urine[-1].date
    return any(
        cat is not AStage.A1 and days(test.date, latest) >= CHRONICITY_DAYS
        for test, cat in zip(urine[:-1], categories[:-1], strict=True)
    )


def acr_mg_g(test: UrineTest, sex: Sex | None, facts: Facts) -> tuple[float | None, bool]:
    """ACR in mg/g for `albuminuria.acr_mg_g` and KFRE: measured, or estimated by Sumida 2020 (spec §3.4, §5.8)."""
    if test.kind is UrineKind.ACR:
        assert test.value is not None
        return (test.value * MG_G_PER_MG_MMOL if test.unit is UrineUnit.MG_MMOL else test.value), False
    if sex is None:
        return None, True  # Sumida needs sex: no estimate
    risk = {"female": sex is Sex.FEMALE, "diabetes": facts.diabetes, "hypertension": facts.hypertension}
    if test.kind is UrineKind.PCR:
        assert test.value is not None
        return acr_from_pcr(pcr_mg_g(test), **risk), True
    assert test.grade is not None
    return acr_from_dipstick(test.grade, **risk), True


def pcr_mg_g(test: UrineTest) -> float:
    assert test.value is not None
    return test.value * MG_G_PER_MG_MMOL if test.unit is UrineUnit.MG_MMOL else test.value


def build_albuminuria(test: UrineTest, category: AStage, sex: Sex | None, facts: Facts) -> Albuminuria:
    value, estimated = acr_mg_g(test, sex, facts)
    unreliable = test.kind is UrineKind.PCR and pcr_mg_g(test) < 50
    return Albuminuria(
        test=test, category=category, acr_mg_g=value, acr_estimated=estimated, estimate_unreliable=unreliable
    )


def progression(valid: list[EgfrPoint]) -> Progression | None:
    """S18: certain drop and rapid decline from the earliest and latest valid eGFR (KDIGO 2012 Rec 2.1.3)."""
    if len(valid) < 2:
        return None
    first, last = valid[0], valid[-1]
    e0, e1 = first.staging_value, last.staging_value
    span = days(first.date, last.date)
    certain = g_stage(e1).rank > g_stage(e0).rank and e1 <= CERTAIN_DROP_RATIO * e0
    slope = (e1 - e0) / (span / DAYS_PER_YEAR) if span >= PROGRESSION_MIN_SPAN_DAYS else None
    rapid = None if slope is None else -slope > RAPID_DECLINE_PER_YEAR
    return Progression(baseline=first, latest=last, certain_drop=certain, rapid=rapid, slope_per_year=slope)


def kdigo_risk(ckd: bool, dialysis: bool, g: GStage | None, a: AStage | None) -> Risk | None:
    """S17: the heat-map risk, only for CKD; G4–G5 rows are uniform so they need no A category."""
    if not ckd:
        return None
    if dialysis:
        return Risk.VERY_HIGH
    if g is None:
        return None
    if a is None:
        return Risk.VERY_HIGH if g in (GStage.G4, GStage.G5) else None
    return heat_map(g, a)


def stage(record: PatientRecord, as_of: date) -> Staging:
    """Run S1–S18 for one patient at `as_of`."""
    facts = condition_facts(record, as_of)
    creatinine = sorted((c for c in record.creatinine if c.date <= as_of), key=lambda c: (c.date, c.value))
    flags = aki_flags(creatinine, facts.aki_onsets)
    computed, excluded = computed_egfrs(record, creatinine, flags)
    reported = reported_fallbacks(record, as_of, {c.date for c in creatinine})

    def order(p: EgfrPoint) -> tuple[date, float]:
        return p.date, p.staging_value

    valid = sorted([p for p in computed if not p.aki] + reported, key=order)
    every = sorted(computed + reported, key=order)

    urine = sorted((u for u in record.urine if u.date <= as_of), key=lambda u: u.date)  # stable: bundle order
    categories = [urine_category(u) for u in urine]
    a_stage = categories[-1] if categories else None
    a_chronic = albuminuria_chronic(urine, categories)

    e_chronic, e_why = chronicity(valid)
    e_chronic_raw, _ = chronicity(every)
    dialysis = facts.has(ConditionConcept.DIALYSIS)
    transplant = facts.has(ConditionConcept.TRANSPLANT)
    g = g_stage(valid[-1].staging_value) if valid else None

    ckd, reason = decide(dialysis, transplant, e_chronic, a_chronic)
    if not ckd:
        reason = reason_not_ckd(e_chronic_raw, e_why, a_stage, bool(every), bool(urine))
    if dialysis:
        g = GStage.G5  # G5D whatever the labs say (S14 row 1)

    age_now = age_at(record.birth_date, as_of) if record.birth_date else None
    return Staging(
        as_of=as_of,
        sex=record.sex,
        age_now=age_now,
        facts=facts,
        ckd=ckd,
        reason=reason,
        g_stage=g,
        a_stage=a_stage,
        kdigo_risk=kdigo_risk(ckd, dialysis, g, a_stage),
        dialysis=dialysis,
        kidney_transplant=transplant,
        egfr=valid[-1] if valid else None,
        albuminuria=build_albuminuria(urine[-1], categories[-1], record.sex, facts) if urine else None,
        progression=progression(valid),
        excluded=excluded,
        valid=valid,
        urine=urine,
    )


def decide(dialysis: bool, transplant: bool, e_chronic: bool, a_chronic: bool) -> tuple[bool, Reason]:
    """S14: the first matching row wins."""
    if dialysis:
        return True, Reason.DIALYSIS
    if transplant:
        return True, Reason.KIDNEY_TRANSPLANT
    if e_chronic and a_chronic:
        return True, Reason.EGFR_AND_ALBUMINURIA_CHRONIC
    if e_chronic:
        return True, Reason.EGFR_LT60_CHRONIC
    if a_chronic:
        return True, Reason.ALBUMINURIA_CHRONIC
    return False, Reason.NORMAL


def reason_not_ckd(
    e_chronic_raw: bool, e_why: Reason | None, a_stage: AStage | None, any_egfr: bool, any_urine: bool
) -> Reason:
    """S15: why a patient without CKD is not classified as CKD."""
    if e_chronic_raw:
        return Reason.AKI_EXCLUDED
    if e_why is not None:
        return e_why
    if a_stage in (AStage.A2, AStage.A3):
        return Reason.ALBUMINURIA_NOT_CHRONIC
    if not any_egfr and not any_urine:
        return Reason.INSUFFICIENT_DATA
    return Reason.NORMAL
