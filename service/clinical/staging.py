"""KDIGO CKD staging: AKI exclusion, chronicity, G/A categories, decision and progression (clinical spec 2.0 §5).

The rules S1–S19 run in order for one patient and one `as_of` date. The staging constants (60, 90 days, the AKI
windows, the category cut-offs, the progression window) are fixed so that an assessment can be reproduced exactly
(spec §1). S18 (progression) lives in `service.clinical.progression`.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import NamedTuple

from service.clinical.categories import DIPSTICK_CATEGORY, AStage, GStage, Risk, g_stage, heat_map, ratio_a_stage
from service.clinical.codes import NO_STAGE, ConditionConcept
from service.clinical.equations import Sex, egfr_ckd_epi_2021_cr, egfr_ckid_u25_cr
from service.clinical.kfre import MG_G_PER_MG_MMOL, acr_from_dipstick, acr_from_pcr
from service.clinical.progression import Progression, median_of_sorted, progression
from service.clinical.record import (
    Comparator,
    LabValue,
    PatientRecord,
    ProcedureFact,
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
# S5 (d) [2.0]: a rise to ≥ 1.5 × the median of the values 8–365 days before ("RV2", NHS England AKI algorithm 2014;
# KDIGO AKD: creatinine up > 50 % within 3 months).
AKI_BASELINE_MIN_DAYS = 8
AKI_BASELINE_MAX_DAYS = 365
# [2.1] S5 (e): the acute kidney disease window, 90 days after a value flagged by (a), (b) or (d) (KDIGO AKD: 7–90
# days after an AKI-initiating event; ADQI 16), relative test only; `staging.akd_window` switches it off.
AKD_WINDOW_DAYS = 90
# KDIGO 2012/2024 CKD definition: abnormality for > 3 months, taken as ≥ 90 days; eGFR < 60 (strict).
CHRONICITY_DAYS = 90
EGFR_ABNORMAL_BELOW = 60.0
# [2.1] S14a: a fall of 25 % or more (L ≤ 0.75 × P; NICE NG203 "sustained fall of 25 %"; no tolerance, as in S18).
NEW_FALL_FACTOR = 0.75
ADULT_AGE = 18
# Ages outside 0–120 years at the as-of date are impossible (oldest verified human: 122 years): such a birthDate is
# treated as unknown (S3), so no eGFR and no age-based rule is made from it (issue #13: 0001-01-01 gave "eGFR 0.0").
MAX_AGE_YEARS = 120


class Reason(StrEnum):
    NORMAL = "normal"
    NEW_EGFR_FALL = "new_egfr_fall"
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


class EgfrPoint(NamedTuple):
    """One eGFR: computed from a creatinine (with its AKI flag) or reported by the laboratory (S6, S7).

    Immutable, and a NamedTuple rather than a frozen dataclass because a patient may have thousands (half the
    construction cost: the engine's 10,000-creatinine budget). Build it with `egfr_point`, which sets the staging
    value; always sort with an explicit key.
    """

    date: date
    value: float
    equation: str
    source: str  # "computed" or "reported"
    staging_value: float  # the value compared with cut-offs ("<" -> just below, spec §4.4)
    aki: bool = False
    comparator: Comparator | None = None
    creatinine: float | None = None  # mg/dL, for computed values
    time: str | None = None  # [2.1] time of day (S2): orders values within a date (S8)


def egfr_point(
    *, date: date, value: float, equation: str, source: str, aki: bool = False,
    comparator: Comparator | None = None, creatinine: float | None = None, time: str | None = None,
) -> EgfrPoint:  # fmt: skip
    return EgfrPoint(
        date, value, equation, source, classification_value(value, comparator), aki, comparator, creatinine, time
    )


def time_order(date_: date, time: str | None) -> tuple[date, bool, str]:
    """[2.1] S4 step 5, S8: by date, then the result without a time of day before the timed ones, then the time."""
    return date_, time is not None, time or ""


class Conflict(NamedTuple):
    """[2.1] S4 step 4: a specimen whose results do not agree; none of them enters C."""

    date: date
    time: str | None
    results: tuple[LabValue, ...]  # the results judged (serum/plasma ones when whole blood was set aside), Bundle order
    position: int  # how many elements of C come before it

    @property
    def highest(self) -> LabValue:
        return max(self.results, key=lambda r: r.value)


class NewFall(NamedTuple):
    """[2.1] S14a: the latest valid eGFR L below 60 after a value P of 60 or more, or 25 % or more below P."""

    latest: EgfrPoint
    previous: EgfrPoint

    @property
    def fall(self) -> float:
        return (self.previous.staging_value - self.latest.staging_value) / self.previous.staging_value


class Excluded(NamedTuple):
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


class AkiCriterion(StrEnum):
    """Which S5 criterion flagged a creatinine (shown on the AKI card)."""

    ABSOLUTE_RISE = "a"  # ≥ 0.3 mg/dL within 2 days
    RELATIVE_RISE = "b"  # ≥ 1.5 × a value within 7 days
    CODED = "c"  # within −2…+30 days of a coded N17 onset
    BASELINE_RISE = "d"  # ≥ 1.5 × the median of the values 8–365 days before
    AKD_WINDOW = "e"  # [2.1] within 90 days of a flagged value, still ≥ 1.5 × that episode's baseline


class AkiFinding(NamedTuple):
    """Why one creatinine was flagged: the criterion and what it was compared with."""

    criterion: AkiCriterion
    reference_date: date | None = None  # the earlier value (a, b), or the coded onset (c)
    reference_value: float | None = None  # the earlier value (a, b) or the baseline median (d), mg/dL
    reference_time: str | None = None  # [2.1] the earlier value's time of day (a, b)


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Condition-derived facts at `as_of` (S1, S13, §7.1)."""

    concepts: frozenset[ConditionConcept]
    aki_onsets: tuple[date, ...]
    coded_stages: frozenset[str] = frozenset()  # [2.1] §8.6 stages the counted CKD diagnosis codes state ("3a", "4")
    unstaged_codes: tuple[str, ...] = ()  # [2.1] counted CKD diagnosis codes that state no stage (code and display)

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
    deceased: bool = False
    excluded: list[Excluded] = field(default_factory=list)
    valid: list[EgfrPoint] = field(default_factory=list)
    urine: list[UrineTest] = field(default_factory=list)  # the kept tests (S11), by date
    creatinine: list[LabValue] = field(default_factory=list)  # C (S4)
    aki: list[AkiFinding | None] = field(default_factory=list)  # S5, one per element of C
    conflicts: list[Conflict] = field(default_factory=list)  # [2.1] S4 conflicting specimens, in order
    conflict_pending: bool = False  # [2.1] §7.1: the newest creatinine specimen is a conflicting one
    conflict_aki: AkiFinding | None = None  # [2.1] §7.1: how the pending conflict's highest result would be flagged
    new_fall: NewFall | None = None  # [2.1] S14a
    latest_creatinine_egfr: EgfrPoint | None = None  # [2.1] §7.1 cr_latest_egfr: W's element for the latest of C
    conflict_highest_egfr: float | None = None  # [2.1] §7.2 creatinine_conflict: eGFR of the pending highest result
    averaged_specimens: int = 0  # [2.1] §1 data quality: specimens whose agreeing results gave their mean

    @property
    def aki_episodes(self) -> list[tuple[LabValue, AkiFinding]]:
        """The flagged creatinines with the criterion that flagged each (for the AKI card)."""
        return [(c, f) for c, f in zip(self.creatinine, self.aki, strict=True) if f is not None]


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
    stated: set[str] = set()
    unstaged: list[str] = []
    for cond in record.conditions:
        dated = cond.onset_datetime or cond.recorded
        if dated is not None and dated > as_of:
            continue  # S1: a Condition from after as_of is ignored
        aki_onset = cond.onset_datetime or cond.onset_period_start
        if ConditionConcept.AKI in cond.concepts and aki_onset is not None:
            onsets.append(aki_onset)  # an AKI onset counts whatever its status (S5)
        if cond.counted:
            concepts |= cond.concepts
            if ConditionConcept.CKD_DIAGNOSIS in cond.concepts:
                stated |= cond.stages - {NO_STAGE}
                if cond.stages == {NO_STAGE} and cond.code_text:
                    unstaged.append(cond.code_text)
    return Facts(concepts=frozenset(concepts), aki_onsets=tuple(sorted(onsets)), coded_stages=frozenset(stated),
                 unstaged_codes=tuple(unstaged))  # fmt: skip


def aki_flags(series: list[LabValue], onsets: tuple[date, ...], akd_window: bool = True) -> list[AkiFinding | None]:
    """S5: for each element of C (in the S4 order), the first of criteria (a)–(e) that flags it, or None.

    Linear in the series: (a) and (b) hold for some earlier value exactly when they hold for the lowest earlier value
    of their window (a sliding minimum: a deque of indices with increasing values), and (d) reads the median of a
    window kept sorted (bisect in, bisect out). [2.1] (e) holds exactly when it holds for the lowest baseline among the
    elements of the last 90 days that have one (another sliding minimum). A property test holds this equal to the
    rule read literally, and a test bounds the work for 10,000 values (`make bench-engine` times it).
    """
    n = len(series)
    ordinals = [c.date.toordinal() for c in series]
    values = [c.value for c in series]
    onset_ordinals = sorted(o.toordinal() for o in onsets)
    low2: deque[int] = deque()  # elements before i within 2 days, increasing values
    low7: deque[int] = deque()  # elements before i within 7 days
    window: list[float] = []  # values dated 8–365 days before i, sorted
    episodes: deque[tuple[int, float, int]] = deque()  # [2.1] (day, baseline, index) within 90 days, increasing
    entered = left = 0
    findings: list[AkiFinding | None] = []
    for i in range(n):
        t, v = ordinals[i], values[i]
        if i:  # admit element i − 1 ("comes before" includes the same date)
            previous = values[i - 1]
            for queue in (low2, low7):
                while queue and values[queue[-1]] >= previous:
                    queue.pop()
                queue.append(i - 1)
        while low2 and t - ordinals[low2[0]] > AKI_ABSOLUTE_WINDOW_DAYS:
            low2.popleft()
        while low7 and t - ordinals[low7[0]] > AKI_RELATIVE_WINDOW_DAYS:
            low7.popleft()
        while entered < n and t - ordinals[entered] >= AKI_BASELINE_MIN_DAYS:
            bisect.insort(window, values[entered])
            entered += 1
        while left < entered and t - ordinals[left] > AKI_BASELINE_MAX_DAYS:
            del window[bisect.bisect_left(window, values[left])]
            left += 1
        while episodes and t - episodes[0][0] > AKD_WINDOW_DAYS:
            episodes.popleft()
        finding = _finding(series, values, v, t, low2, low7, window, onset_ordinals)
        if finding is None and episodes:  # the front holds the lowest baseline of the window (earliest on a tie)
            _, baseline, f = episodes[0]
            if v >= AKI_RELATIVE_FACTOR * baseline - AKI_RELATIVE_TOLERANCE:
                finding = AkiFinding(AkiCriterion.AKD_WINDOW, series[f].date, baseline, series[f].time)
        if akd_window and (baseline_ := _baseline(values, v, low2, low7, window)) is not None:
            while episodes and episodes[-1][1] > baseline_:
                episodes.pop()
            episodes.append((t, baseline_, i))
        findings.append(finding)
    return findings


def _baseline(values: list[float], v: float, low2: deque[int], low7: deque[int], window: list[float]) -> float | None:
    """[2.1] S5 (e): the baseline of a value flagged by (a), (b) or (d): the lowest of the earlier values that meet
    (a) or (b) for it (the lowest of each window, when it meets) and the past year's median if (d) holds."""
    candidates = []
    if low2 and v - values[low2[0]] >= AKI_ABSOLUTE_RISE_MG_DL:
        candidates.append(values[low2[0]])
    if low7 and v >= AKI_RELATIVE_FACTOR * values[low7[0]] - AKI_RELATIVE_TOLERANCE:
        candidates.append(values[low7[0]])
    if window:
        median = median_of_sorted(window)
        if v >= AKI_RELATIVE_FACTOR * median - AKI_RELATIVE_TOLERANCE:
            candidates.append(median)
    return min(candidates, default=None)


def _finding(
    series: list[LabValue],
    values: list[float],
    v: float,
    t: int,
    low2: deque[int],
    low7: deque[int],
    window: list[float],
    onsets: list[int],
) -> AkiFinding | None:
    """The first criterion of S5 (a)–(d) that holds for value v on day t, given the windows before it."""
    if low2 and v - values[low2[0]] >= AKI_ABSOLUTE_RISE_MG_DL:
        j = low2[0]
        return AkiFinding(AkiCriterion.ABSOLUTE_RISE, series[j].date, values[j], series[j].time)
    if low7 and v >= AKI_RELATIVE_FACTOR * values[low7[0]] - AKI_RELATIVE_TOLERANCE:
        j = low7[0]
        return AkiFinding(AkiCriterion.RELATIVE_RISE, series[j].date, values[j], series[j].time)
    if onsets and (onset := _coded_onset(onsets, t)) is not None:
        return AkiFinding(criterion=AkiCriterion.CODED, reference_date=date.fromordinal(onset))
    if window:
        median = median_of_sorted(window)
        if v >= AKI_RELATIVE_FACTOR * median - AKI_RELATIVE_TOLERANCE:
            return AkiFinding(criterion=AkiCriterion.BASELINE_RISE, reference_value=median)
    return None


def _coded_onset(onsets: list[int], t: int) -> int | None:
    """(c): an onset o with −2 ≤ t − o ≤ 30, i.e. o in [t − 30, t + 2] (the earliest such onset)."""
    k = bisect.bisect_left(onsets, t - AKI_CODED_AFTER_DAYS)
    return onsets[k] if k < len(onsets) and onsets[k] <= t + AKI_CODED_BEFORE_DAYS else None


def nearest_height(heights: list[LabValue], when: date) -> float | None:
    """The body height nearest in time to a specimen, before or after; the earlier one on a tie (S6)."""
    best = min(heights, key=lambda h: (abs(days(h.date, when)), h.date), default=None)
    return None if best is None else best.value


def computed_egfrs(
    record: PatientRecord, creatinine: list[LabValue], flags: list[AkiFinding | None]
) -> tuple[list[EgfrPoint], dict[int, Excluded], dict[int, EgfrPoint]]:
    """S6: an eGFR for each element of C (CKD-EPI 2021 from 18, CKiD U25 below); the §5.8 reasons (aki,
    no_demographics, no_height) by element index; and the eGFR of each element by index."""
    points: list[EgfrPoint] = []
    excluded: dict[int, Excluded] = {}
    by_index: dict[int, EgfrPoint] = {}
    sex, birth = record.sex, record.birth_date
    ages: dict[date, int] = {}  # completed years per specimen date (S3), computed once per date
    for i, (scr, finding) in enumerate(zip(creatinine, flags, strict=True)):
        why = None
        if sex is None or birth is None:
            why = "no_demographics"
        else:
            age = ages.get(scr.date)
            if age is None:
                age = ages[scr.date] = age_at(birth, scr.date)
            if age >= ADULT_AGE:
                value, equation = egfr_ckd_epi_2021_cr(scr.value, age, sex), "ckd-epi-2021-cr"
            else:  # CKD-EPI is never used under 18; no height, no eGFR
                height = nearest_height(record.height_cm, scr.date)
                if height is None:
                    why = "no_height"
                else:
                    value, equation = egfr_ckid_u25_cr(scr.value, height / 100, age, sex), "ckid-u25-cr"
            if why is None:
                # computed from a creatinine: no comparator, so the staging value is the value itself
                point = EgfrPoint(scr.date, value, equation, "computed", value, finding is not None, None, scr.value,
                                  scr.time)  # fmt: skip
                points.append(point)
                by_index[i] = point
        if finding is not None or why is not None:
            excluded[i] = Excluded(date=scr.date, value=scr.value, why="aki" if finding is not None else str(why))
    return points, excluded, by_index


# [2.1] S4 step 4: results of one specimen agree when they differ by under 0.3 mg/dL (with S5 (a)'s tolerance) and
# by under 20 % of the lower value (KDIGO 2024 PP 2.1.3: ~20 % biological variation).
SPECIMEN_ABSOLUTE_MG_DL = 0.2995
SPECIMEN_RELATIVE_FACTOR = 1.2
SPECIMEN_TOLERANCE = 1e-9


def agree(values: list[float]) -> bool:
    lo, hi = min(values), max(values)
    return hi - lo < SPECIMEN_ABSOLUTE_MG_DL and hi < SPECIMEN_RELATIVE_FACTOR * lo - SPECIMEN_TOLERANCE


class Specimen(NamedTuple):
    """One S4 specimen in order: the element of C it became (index), or its conflict; set-aside whole blood."""

    element: int | None
    conflict: Conflict | None
    set_aside: tuple[LabValue, ...]
    averaged: bool = False


def creatinine_series(results: list[LabValue]) -> tuple[list[LabValue], list[Specimen]]:
    """[2.1] S4: C from the counted creatinine results dated on or before `as_of` (already filtered).

    Results with one date and time of day (or one date and no time) are one specimen (step 2); whole-blood results
    beside a serum/plasma one are set aside (step 3); the rest agree (their mean is one element of C) or conflict
    (none enters C, step 4). C is ordered by date, untimed before timed, then time; never by value (step 5).
    """
    ordered = sorted(results, key=lambda c: time_order(c.date, c.time))  # stable: Bundle order within a specimen
    series: list[LabValue] = []
    specimens: list[Specimen] = []
    k = 0
    while k < len(ordered):
        first = ordered[k]
        end = k + 1
        while end < len(ordered) and ordered[end].date == first.date and ordered[end].time == first.time:
            end += 1
        group = ordered[k:end]
        k = end
        serum = [r for r in group if not r.whole_blood]
        set_aside = tuple(r for r in group if r.whole_blood) if serum else ()
        judged = serum if serum else group
        if len(judged) == 1:
            specimens.append(Specimen(len(series), None, set_aside))
            series.append(judged[0])
        elif agree([r.value for r in judged]):
            mean = sum(r.value for r in judged) / len(judged)
            specimens.append(Specimen(len(series), None, set_aside, averaged=True))
            series.append(LabValue(date=first.date, value=mean, time=first.time))
        else:
            conflict = Conflict(first.date, first.time, tuple(judged), len(series))
            specimens.append(Specimen(None, conflict, set_aside))
    return series, specimens


def excluded_in_order(specimens: list[Specimen], by_element: dict[int, Excluded]) -> list[Excluded]:
    """§5.8 [2.1]: one entry per creatinine not used, in specimen order; within a specimen the set-aside whole-blood
    results first, then the conflicting results or the element's own reason."""
    out: list[Excluded] = []
    for spec in specimens:
        out += [Excluded(r.date, r.value, "whole_blood_with_serum") for r in spec.set_aside]
        if spec.conflict is not None:
            out += [Excluded(r.date, r.value, "conflict") for r in spec.conflict.results]
        elif spec.element is not None and spec.element in by_element:
            out.append(by_element[spec.element])
    return out


def conflict_finding(
    series: list[LabValue], conflict: Conflict, onsets: tuple[date, ...], akd_window: bool = True
) -> AkiFinding | None:
    """[2.1] §7.1 conflict_aki: the conflicting specimen's highest result placed at the specimen's place in C and
    judged by S5 against the elements before it (for the card only: it never enters C)."""
    probe = [
        *series[: conflict.position],
        LabValue(date=conflict.date, value=conflict.highest.value, time=conflict.time),
    ]
    return aki_flags(probe, onsets, akd_window)[-1]


def highest_egfr(record: PatientRecord, conflict: Conflict) -> float | None:
    """The eGFR of a conflicting specimen's highest creatinine (S6 rules), or None when none can be computed."""
    points, _, _ = computed_egfrs(record, [conflict.highest], [None])
    return points[0].value if points else None


def new_fall(valid: list[EgfrPoint], blocked: bool) -> NewFall | None:
    """[2.1] S14a: not on dialysis, not a transplant recipient, no chronic eGFR (`blocked`); L < 60 and P ≥ 60, or
    L ≤ 0.75 × P (exactly 25 % counts; staging values, §4.4). NICE NG203; UKKA eCKD guide; KDIGO 2024 PP 2.1.3."""
    if blocked or len(valid) < 2:
        return None
    latest, previous = valid[-1], valid[-2]
    low = latest.staging_value < EGFR_ABNORMAL_BELOW
    if low and (previous.staging_value >= EGFR_ABNORMAL_BELOW or latest.staging_value <= NEW_FALL_FACTOR *
                previous.staging_value):  # fmt: skip
        return NewFall(latest, previous)
    return None


def reported_fallbacks(record: PatientRecord, as_of: date, creatinine_dates: set[date]) -> list[EgfrPoint]:
    """S7: laboratory CKD-EPI 2021 eGFRs on dates without any creatinine, never for a known child."""
    points = []
    for rep in record.reported_egfr:
        if rep.date > as_of or rep.date in creatinine_dates:
            continue
        if record.birth_date is not None and age_at(record.birth_date, rep.date) < ADULT_AGE:
            continue
        points.append(
            egfr_point(
                date=rep.date, value=rep.value, equation=rep.equation, source="reported", comparator=rep.comparator
            )
        )
    return points


def chronicity(series: list[EgfrPoint]) -> tuple[bool, Reason | None]:
    """S10 [2.0]: chronic when the run of values < 60 that ends at the latest value spans ≥ 90 days.

    Walking back from the latest value, a value ≥ 60 ends the run unless it is isolated (both neighbours < 60): one
    normal value among abnormal ones is more often a specimen problem than a recovery (KDIGO: "for > 3 months").
    """
    if not series or series[-1].staging_value >= EGFR_ABNORMAL_BELOW:
        return False, None
    low = [p.staging_value < EGFR_ABNORMAL_BELOW for p in series]
    first, members = len(series) - 1, 1
    k = len(series) - 2
    while k >= 0:
        if low[k]:
            first, members = k, members + 1
        elif not (k > 0 and low[k - 1] and low[k + 1]):
            break  # a recovery: two normal values in a row, or one just before the latest stretch
        k -= 1
    if days(series[first].date, series[-1].date) >= CHRONICITY_DAYS:
        return True, None
    return False, Reason.ABNORMAL_LT90D if members >= 2 else Reason.SINGLE_ABNORMAL


def urine_category(test: UrineTest) -> AStage:
    """§4.2: ratios in their own unit (with the "<" convention), dipsticks by grade."""
    if test.kind is UrineKind.DIPSTICK:
        assert test.grade is not None
        return DIPSTICK_CATEGORY[test.grade]
    assert test.value is not None
    assert test.unit is not None
    return ratio_a_stage(test.kind, test.unit, classification_value(test.value, test.comparator))


def albuminuria_chronic(urine: list[UrineTest], categories: list[AStage]) -> bool:
    """S12 [2.0]: the latest kept test is A2/A3 and the run of A2/A3 tests ending at it spans ≥ 90 days.

    An A1 ACR or PCR ends the run unless isolated (the kept tests just before and after it are A2/A3: KDIGO's 2 of 3
    specimens); a negative dipstick is skipped, as a dipstick is too insensitive to rule out A2.
    """
    if not urine or categories[-1] is AStage.A1:
        return False
    first = len(urine) - 1
    k = len(urine) - 2
    while k >= 0:
        if categories[k] is not AStage.A1:
            first = k
        elif urine[k].kind is not UrineKind.DIPSTICK and not (
            k > 0 and categories[k - 1] is not AStage.A1 and categories[k + 1] is not AStage.A1
        ):
            break
        k -= 1
    return days(urine[first].date, urine[-1].date) >= CHRONICITY_DAYS


URINE_RANK = {UrineKind.ACR: 2, UrineKind.PCR: 1, UrineKind.DIPSTICK: 0}


def one_test_per_date(urine: list[UrineTest]) -> list[UrineTest]:
    """S11 [2.0]: on a date with several tests keep one: ACR > PCR > dipstick, then the last in Bundle order.

    `urine` is sorted by date with Bundle order kept within a date (a stable sort).
    """
    kept: list[UrineTest] = []
    for test in urine:
        if kept and kept[-1].date == test.date:
            if URINE_RANK[test.kind] >= URINE_RANK[kept[-1].kind]:
                kept[-1] = test
        else:
            kept.append(test)
    return kept


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


# [2.1] S13: maintenance dialysis from Procedures: sessions on ≥ 3 distinct dates, the latest within 90 days (design
# choices of the specification: three sessions a week for haemodialysis; one or two sessions are acute dialysis)
MAINTENANCE_DIALYSIS_DATES = 3
DIALYSIS_RECENT_DAYS = 90


def procedure_date(p: ProcedureFact, as_of: date) -> date | None:
    """[2.1] S13: performedDateTime; else performedPeriod.end (as_of when the end is after it); else as_of for an
    ongoing in-progress Procedure; else performedPeriod.start. None when it has no date or began after as_of (S1)."""
    began = p.performed or p.start
    if began is not None and began > as_of:
        return None
    if p.performed is not None:
        return p.performed
    if p.end is not None:
        return min(p.end, as_of)
    if p.status == "in-progress" and p.start is not None:
        return as_of
    return p.start


def procedure_status(procedures: list[ProcedureFact], as_of: date) -> tuple[bool, bool]:
    """[2.1] S13: (dialysis, kidney_transplant) from Procedures."""
    sessions: set[date] = set()
    transplants: list[date] = []
    for p in procedures:
        when = procedure_date(p, as_of)
        if when is None:
            continue
        if p.kind == "dialysis":
            sessions.add(when)
        else:
            transplants.append(when)
    dialysis = False
    if len(sessions) >= MAINTENANCE_DIALYSIS_DATES:
        latest = max(sessions)
        recent = 0 <= days(latest, as_of) <= DIALYSIS_RECENT_DAYS
        dialysis = recent and not any(days(latest, t) >= 0 for t in transplants)
    return dialysis, bool(transplants)


def is_deceased(record: PatientRecord, as_of: date) -> bool:
    """S19 [2.0]: deceasedBoolean true, or a deceasedDateTime on or before `as_of`."""
    return record.deceased_boolean or (record.deceased_date is not None and record.deceased_date <= as_of)


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


def stage(record: PatientRecord, as_of: date, akd_window: bool = True) -> Staging:
    """Run S1–S19 for one patient at `as_of`; `akd_window`: S5 (e), `staging.akd_window` (spec 2.1 §1)."""
    if record.birth_date is not None and not 0 <= age_at(record.birth_date, as_of) <= MAX_AGE_YEARS:
        record = dataclasses.replace(record, birth_date=None)
    facts = condition_facts(record, as_of)
    results = [c for c in record.creatinine if c.date <= as_of]
    creatinine, specimens = creatinine_series(results)
    flags = aki_flags(creatinine, facts.aki_onsets, akd_window)
    computed, by_element, egfr_of = computed_egfrs(record, creatinine, flags)
    excluded = excluded_in_order(specimens, by_element)
    reported = reported_fallbacks(record, as_of, {c.date for c in results})  # conflicting results count (S7)

    def order(p: EgfrPoint) -> tuple[date, bool, str]:
        return time_order(p.date, p.time)

    valid = sorted([p for p in computed if not p.aki] + reported, key=order)
    every = sorted(computed + reported, key=order)
    conflicts = [spec.conflict for spec in specimens if spec.conflict is not None]
    pending = bool(specimens) and specimens[-1].conflict is not None

    urine = one_test_per_date(sorted((u for u in record.urine if u.date <= as_of), key=lambda u: u.date))
    categories = [urine_category(u) for u in urine]
    a_stage = categories[-1] if categories else None
    a_chronic = albuminuria_chronic(urine, categories)

    e_chronic, e_why = chronicity(valid)
    e_chronic_raw, _ = chronicity(every)
    proc_dialysis, proc_transplant = procedure_status(record.procedures, as_of)
    dialysis = facts.has(ConditionConcept.DIALYSIS) or proc_dialysis
    transplant = facts.has(ConditionConcept.TRANSPLANT) or proc_transplant
    g = g_stage(valid[-1].staging_value) if valid else None

    ckd, reason = decide(dialysis, transplant, e_chronic, a_chronic)
    fall = new_fall(valid, dialysis or transplant or e_chronic)
    if not ckd:
        reason = Reason.NEW_EGFR_FALL if fall else reason_not_ckd(e_chronic_raw, e_why, a_stage, bool(every),
                                                                   bool(urine))  # fmt: skip
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
        progression=progression([(p.date, p.staging_value) for p in valid], as_of),
        deceased=is_deceased(record, as_of),
        excluded=excluded,
        valid=valid,
        urine=urine,
        creatinine=creatinine,
        aki=flags,
        conflicts=conflicts,
        conflict_pending=pending,
        conflict_aki=conflict_finding(creatinine, conflicts[-1], facts.aki_onsets, akd_window) if pending else None,
        new_fall=fall,
        latest_creatinine_egfr=egfr_of.get(len(creatinine) - 1),
        conflict_highest_egfr=highest_egfr(record, conflicts[-1]) if pending else None,
        averaged_specimens=sum(spec.averaged for spec in specimens),
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
