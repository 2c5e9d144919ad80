"""Recommendation rules (clinical spec 2.0 §7): triggers, suppressions, indicators, each with its guideline source.

Every rule evaluates its trigger independently and reads only the derived facts in `RuleContext`. A rule that
compares eGFR is false when there is no eGFR (§7.1). Drug-start rules need an adult and are suppressed for dialysis
and transplant (KDIGO 2024 treatment statements exclude KRT), except the statin rule for transplant recipients.
[2.0] No rule fires for a deceased patient (S19). A few suppressions depend on another rule firing (`aki_caution`
pauses drug starts; `krt_planning` carries the one referral; a referral names the progression): `evaluate_rules`
applies them after every trigger has been evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from service.clinical.categories import AStage, GStage
from service.clinical.codes import STAGE_AS_G, ConditionConcept
from service.clinical.kfre import KfreResult
from service.clinical.medications import INGREDIENTS, RAS_BLOCKERS, DrugClass
from service.clinical.record import BloodPressure, LabValue, MedicationFact, UrineKind, UrineUnit, classification_value
from service.clinical.staging import ADULT_AGE, Reason, Staging, days, time_order
from service.clinical.thresholds import Thresholds


class RuleId(StrEnum):
    PROBLEM_LIST = "problem_list"
    ACR_TEST = "acr_test"
    MONITORING_DUE = "monitoring_due"
    AKI_CAUTION = "aki_caution"
    HYPERKALAEMIA = "hyperkalaemia"
    DUAL_RAS = "dual_ras"
    METFORMIN_STOP = "metformin_stop"
    METFORMIN_REDUCE = "metformin_reduce"
    NSAID_AVOID = "nsaid_avoid"
    SGLT2I = "sglt2i"
    RASI = "rasi"
    FINERENONE = "finerenone"
    GLP1RA = "glp1ra"
    STATIN = "statin"
    NEPHROLOGY_REFERRAL = "nephrology_referral"
    KRT_PLANNING = "krt_planning"
    PROGRESSION_REVIEW = "progression_review"
    NEW_EGFR_FALL = "new_egfr_fall"  # [2.1]
    CREATININE_CONFLICT = "creatinine_conflict"  # [2.1]
    CODED_STAGE_OUTDATED = "coded_stage_outdated"  # [2.1]
    BP_ABOVE_TARGET = "bp_above_target"  # [2.1]


class Indicator(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# [2.1] §7.4 override memory rule 2, §7.5: the safety cards. Never snoozed for more than 7 days, only by a verified
# caller (issue #21), and configuration can neither switch them off nor lower their indicator.
SAFETY_RULES = frozenset({"aki_caution", "hyperkalaemia", "dual_ras", "metformin_stop", "nsaid_avoid", "new_egfr_fall",
                          "creatinine_conflict"})  # fmt: skip

# §7.4 [2.0] clinical priority: safety, then specialist care, then therapy, then monitoring and documentation. The
# order of cards, of `recommendations`, and of what survives the card cap. The staging card sits between
# `acr_test` and `problem_list` (cards.builder).
PRIORITY_ORDER = (
    RuleId.AKI_CAUTION, RuleId.HYPERKALAEMIA, RuleId.DUAL_RAS, RuleId.METFORMIN_STOP, RuleId.NSAID_AVOID,
    RuleId.NEW_EGFR_FALL, RuleId.CREATININE_CONFLICT, RuleId.METFORMIN_REDUCE, RuleId.KRT_PLANNING,
    RuleId.NEPHROLOGY_REFERRAL, RuleId.PROGRESSION_REVIEW, RuleId.SGLT2I, RuleId.RASI, RuleId.FINERENONE,
    RuleId.BP_ABOVE_TARGET, RuleId.STATIN, RuleId.GLP1RA, RuleId.MONITORING_DUE, RuleId.ACR_TEST,
    RuleId.CODED_STAGE_OUTDATED, RuleId.PROBLEM_LIST,
)  # fmt: skip
CARE_GAPS = {
    RuleId.PROBLEM_LIST: "ckd_not_on_problem_list",
    RuleId.ACR_TEST: "no_acr_12_months",
    RuleId.MONITORING_DUE: "egfr_monitoring_overdue",
    RuleId.CODED_STAGE_OUTDATED: "ckd_stage_outdated",
}
RECOMMENDATION_ORDER = tuple(rule for rule in PRIORITY_ORDER if rule not in CARE_GAPS)
DRUG_STARTS = (RuleId.RASI, RuleId.SGLT2I, RuleId.FINERENONE)
# [2.1] §7.2 preamble: drug starts wait while an acute episode, a new fall or a conflicting specimen is being handled.
PAUSE_DRUG_STARTS = frozenset({RuleId.AKI_CAUTION, RuleId.NEW_EGFR_FALL, RuleId.CREATININE_CONFLICT})
# [2.1] metformin cards no longer need a fresh eGFR: with a stale one they ask for a recheck (cards.views).
NEEDS_FRESH_EGFR = DRUG_STARTS
# Potassium at or above this is critical (spec §7.2 hyperkalaemia; KDIGO 2024 ch. 3 practice points).
CRITICAL_POTASSIUM = 6.0
# KDIGO 2012 Fig. 12 (kept in 2024): eGFR/ACR tests per year by heat-map cell; an unknown A category reads as A1.
MONITORING_TESTS_PER_YEAR: dict[GStage, dict[AStage, int]] = {
    GStage.G1: {AStage.A1: 1, AStage.A2: 1, AStage.A3: 2},
    GStage.G2: {AStage.A1: 1, AStage.A2: 1, AStage.A3: 2},
    GStage.G3A: {AStage.A1: 1, AStage.A2: 2, AStage.A3: 3},
    GStage.G3B: {AStage.A1: 2, AStage.A2: 3, AStage.A3: 3},
    GStage.G4: {AStage.A1: 3, AStage.A2: 3, AStage.A3: 4},
    GStage.G5: {AStage.A1: 4, AStage.A2: 4, AStage.A3: 4},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleOutcome:
    """A rule that fired (suppressed_by None) or whose trigger held but was suppressed."""

    rule: RuleId
    indicator: Indicator
    suppressed_by: str | None = None

    @property
    def fired(self) -> bool:
        return self.suppressed_by is None


def medicine_names(med: MedicationFact, classes: Iterable[DrugClass]) -> set[str]:
    """The names one medicine shows for these classes: its ingredients of those classes, or, for a medicine matched
    only by its ATC class, the class name."""
    matched = med.classes.intersection(classes)
    if not matched:
        return set()
    named = {i for i in med.ingredients if i in INGREDIENTS and INGREDIENTS[i][0] in matched}
    return named or {cls.value for cls in matched}


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleContext:
    """The derived facts of §7.1 at `as_of`."""

    staging: Staging
    kfre: KfreResult | None
    thresholds: Thresholds
    medications: tuple[MedicationFact, ...]
    potassium: LabValue | None
    hba1c: LabValue | None
    sumida_acr: float | None  # estimated ACR of the latest urine test when it is a PCR
    kfre_acr_estimated: bool = False  # §6.3: the KFRE's ACR came from a PCR or dipstick
    systolic: tuple[BloodPressure, ...] = ()  # [2.1] every systolic reading (§9.5)
    diastolic: tuple[BloodPressure, ...] = ()
    _drug_classes: frozenset[DrugClass] = field(init=False)

    def __post_init__(self) -> None:
        classes = frozenset().union(*(med.classes for med in self.medications))
        object.__setattr__(self, "_drug_classes", classes)

    @property
    def as_of(self) -> date:
        return self.staging.as_of

    @property
    def adult(self) -> bool:
        return self.staging.age_now is not None and self.staging.age_now >= ADULT_AGE

    @property
    def krt(self) -> bool:
        return self.staging.dialysis or self.staging.kidney_transplant

    @property
    def egfr(self) -> float | None:
        return None if self.staging.egfr is None else self.staging.egfr.staging_value

    def egfr_below(self, limit: float) -> bool:
        return self.egfr is not None and self.egfr < limit

    def egfr_at_least(self, limit: float) -> bool:
        return self.egfr is not None and self.egfr >= limit

    @property
    def u_quant(self) -> bool:
        """The latest urine test is an ACR or a PCR, not a dipstick."""
        latest = self.staging.albuminuria
        return latest is not None and latest.test.kind is not UrineKind.DIPSTICK

    def acr_ge(self, mg_g: float) -> bool:
        """§7.1 acr_ge(X): native ACR against X mg/g or X/10 mg/mmol; a PCR through its Sumida ACR."""
        latest = self.staging.albuminuria
        if latest is None:
            return False
        test = latest.test
        if test.kind is UrineKind.ACR:
            assert test.value is not None
            limit = mg_g / 10 if test.unit is UrineUnit.MG_MMOL else mg_g
            return classification_value(test.value, test.comparator) >= limit
        if test.kind is UrineKind.PCR:
            return self.sumida_acr is not None and self.sumida_acr >= mg_g
        return False

    def has(self, concept: ConditionConcept) -> bool:
        return self.staging.facts.has(concept)

    @property
    def t2d(self) -> bool:
        return self.has(ConditionConcept.T2D)

    @property
    def diabetes(self) -> bool:
        return self.staging.facts.diabetes

    @property
    def has_hf(self) -> bool:
        return self.has(ConditionConcept.HEART_FAILURE)

    def on(self, *classes: DrugClass) -> bool:
        return not self.drug_classes.isdisjoint(classes)

    def ingredients(self, *classes: DrugClass) -> list[str]:
        """Sorted ingredient names of the active medicines in these classes, each once; a medicine matched only by
        its ATC class shows the class name."""
        return sorted(set().union(*(medicine_names(med, classes) for med in self.medications)))

    @property
    def drug_classes(self) -> frozenset[DrugClass]:
        """Every class the patient's active or on-hold medicines belong to (computed once per assessment)."""
        return self._drug_classes

    @property
    def recent_aki(self) -> bool:
        """[2.1] §7.1: (i) the latest element of C is AKI-flagged, whatever its date (no newer creatinine shows the
        episode is over); or (ii) an AKI-flagged element of C or an N17 onset lies within `aki_caution.lookback_days`
        before `as_of`."""
        return self._latest_flagged or self._aki_within_lookback

    @property
    def aki_stale(self) -> bool:
        """[2.1] §7.1: recent_aki holds by (i) only: the latest element of C is flagged, older than the lookback, and
        nothing else lies within it (the AKI card says the episode was never rechecked)."""
        return self._latest_flagged and not self._aki_within_lookback

    @property
    def _latest_flagged(self) -> bool:
        s = self.staging
        return bool(s.aki) and s.aki[-1] is not None

    @property
    def _aki_within_lookback(self) -> bool:
        s = self.staging
        lookback = self.thresholds.aki_caution.lookback_days
        flagged = [c.date for c, f in zip(s.creatinine, s.aki, strict=True) if f is not None]
        return any(0 <= days(d, self.as_of) <= lookback for d in flagged + list(s.facts.aki_onsets))

    @property
    def cr_latest_egfr(self) -> float | None:
        """[2.1] §7.1: the eGFR computed from the latest element of C, flagged or not."""
        p = self.staging.latest_creatinine_egfr
        return None if p is None else p.staging_value

    @property
    def egfr_age(self) -> int | None:
        """[2.0] Days since the latest valid eGFR."""
        return None if self.staging.egfr is None else days(self.staging.egfr.date, self.as_of)

    @property
    def monitoring_interval(self) -> float:
        """[2.1] §7.1: 365 / tests per year of the heat-map cell (KDIGO 2012 Fig. 12; null A reads A1, null G as G1)."""
        return monitoring_interval_days(self.staging.g_stage, self.staging.a_stage)

    @property
    def fresh(self) -> bool:
        """[2.1] §7.1: the latest valid eGFR lies within the monitoring interval plus `monitoring_due.grace_days`: the
        clock of `monitoring_due`, so a stale eGFR always comes with the card that asks for a new one."""
        age = self.egfr_age
        return age is not None and age <= self.monitoring_interval + self.thresholds.monitoring_due.grace_days

    @property
    def ras_ingredients(self) -> list[str]:
        """[2.1] §7.1 RAS_ingredients: the distinct ACEi, ARB and DRI ingredients (the valsartan of sacubitril/
        valsartan counts; sacubitril never does). A medicine known only by its ATC class counts once per class."""
        return self.ingredients(*RAS_BLOCKERS)

    @property
    def sbp(self) -> list[BloodPressure]:
        """[2.1] §7.1 SBP: the systolic readings within `bp.lookback_days`, one per date and time of day (their mean;
        the untimed readings of a date are one), ordered as S4 orders specimens."""
        lookback = self.thresholds.bp.lookback_days
        groups: dict[tuple[date, str | None], list[float]] = {}
        for r in self.systolic:
            if 0 <= days(r.date, self.as_of) <= lookback:
                groups.setdefault((r.date, r.time), []).append(r.value)
        readings = [BloodPressure(date=d, time=t, value=sum(v) / len(v)) for (d, t), v in groups.items()]
        return sorted(readings, key=lambda r: time_order(r.date, r.time))

    @property
    def sbp_mean(self) -> tuple[float, list[BloodPressure]] | None:
        """[2.1] §7.1 SBP_mean: the mean of the latest 3 readings (fewer when there are fewer); None below 2."""
        readings = self.sbp
        if len(readings) < SBP_MIN_READINGS:
            return None
        used = readings[-SBP_LATEST:]
        return sum(r.value for r in used) / len(used), used

    @property
    def arni_acei(self) -> bool:
        """[2.1] §7.1: sacubitril/valsartan with an ACE inhibitor (FDA Entresto label: contraindicated)."""
        return self.on(DrugClass.ARNI) and self.on(DrugClass.ACEI)

    @property
    def potassium_value(self) -> float | None:
        return None if self.potassium is None else self.potassium.value

    @property
    def kfre_referral(self) -> bool:
        t = self.thresholds.nephrology_referral
        return self.kfre is not None and (self.kfre.risk_5y >= t.kfre_5y_min or self.kfre.risk_2y > t.kfre_2y_mdc)


Rule = Callable[[RuleContext], RuleOutcome | None]


def _fire(rule: RuleId, indicator: Indicator = Indicator.INFO, suppressed_by: str | None = None) -> RuleOutcome:
    return RuleOutcome(rule=rule, indicator=indicator, suppressed_by=suppressed_by)


def rule_problem_list(c: RuleContext) -> RuleOutcome | None:
    """CKD meets the KDIGO definition but no CKD diagnosis is coded (KDIGO 2024 ch. 1, ungraded)."""
    if not (c.staging.ckd and c.thresholds.problem_list.enabled):
        return None
    # [2.0] info: documentation is never the most urgent card (1.0's warning led the list while therapy was cut)
    return _fire(RuleId.PROBLEM_LIST, suppressed_by="ckd_coded" if c.has(ConditionConcept.CKD_DIAGNOSIS) else None)


def rule_acr_test(c: RuleContext) -> RuleOutcome | None:
    """No urine ACR within the interval (KDIGO 2024 PP 2.1.1; ADA 2024 §11 yearly UACR in diabetes)."""
    t = c.thresholds.acr_test
    at_risk = t.include_risk_groups and (c.diabetes or c.has(ConditionConcept.HYPERTENSION) or c.egfr_below(60))
    if not (c.staging.ckd or at_risk):
        return None
    if any(u.kind is UrineKind.ACR and days(u.date, c.as_of) <= t.max_age_days for u in c.staging.urine):
        return None
    return _fire(RuleId.ACR_TEST, suppressed_by="dialysis" if c.staging.dialysis else None)


def rule_rasi(c: RuleContext) -> RuleOutcome | None:
    """ACEi or ARB for albuminuric CKD (KDIGO 2024 Rec 3.6.1 1B, 3.6.2 2C, 3.6.3 1B; never combine, 3.6.4).

    Needs a fresh eGFR and is paused while `aki_caution` fires (`evaluate_rules`)."""
    s, t = c.staging, c.thresholds.rasi
    if not (c.adult and not c.krt and s.ckd and c.egfr_at_least(t.min_egfr) and c.u_quant):
        return None
    eligible = s.a_stage is AStage.A3 or (s.a_stage is AStage.A2 and (c.diabetes or t.include_a2_nondiabetic))
    if not eligible:
        return None
    if c.on(DrugClass.ACEI, DrugClass.ARB, DrugClass.DRI):
        return _fire(RuleId.RASI, suppressed_by="on_rasi")
    # [2.0] K+ above rasi.max_potassium no longer suppresses: the card says to lower it first (KDIGO 2024 PP 3.6.x)
    return _fire(RuleId.RASI)


def rule_sglt2i(c: RuleContext) -> RuleOutcome | None:
    """SGLT2 inhibitor (KDIGO 2024 Rec 3.7.1 1A, 3.7.2 1A, 3.7.3 2B)."""
    s, t = c.staging, c.thresholds.sglt2i
    if not (c.adult and not c.krt and s.ckd and c.egfr_at_least(t.min_egfr)):
        return None
    low_acr = t.include_low_acr and c.egfr is not None and c.egfr <= t.low_acr_max_egfr
    if not (c.t2d or c.has_hf or c.acr_ge(t.acr_mg_g) or low_acr):
        return None
    if c.on(DrugClass.SGLT2I):
        return _fire(RuleId.SGLT2I, suppressed_by="on_sglt2i")
    if c.has(ConditionConcept.T1D):
        return _fire(RuleId.SGLT2I, suppressed_by="type_1_diabetes")
    return _fire(RuleId.SGLT2I)


def rule_finerenone(c: RuleContext) -> RuleOutcome | None:
    """Non-steroidal MRA in T2D with albuminuria despite RASi (KDIGO 2024 Rec 3.8.1 2A; FDA label K+ ≤ 5.0)."""
    s, t = c.staging, c.thresholds.finerenone
    albuminuric = c.u_quant and s.a_stage in (AStage.A2, AStage.A3)
    if not (c.adult and not c.krt and s.ckd and c.t2d and c.egfr_at_least(t.min_egfr) and albuminuric):
        return None
    if not c.on(DrugClass.ACEI, DrugClass.ARB):
        return None
    if c.on(DrugClass.NS_MRA, DrugClass.STEROIDAL_MRA):
        return _fire(RuleId.FINERENONE, suppressed_by="on_mra")
    if c.potassium is not None and c.potassium.value > t.max_potassium:
        return _fire(RuleId.FINERENONE, suppressed_by="potassium_high")
    return _fire(RuleId.FINERENONE)


def rule_glp1ra(c: RuleContext) -> RuleOutcome | None:
    """Long-acting GLP-1 RA (KDIGO 2022 Diabetes-in-CKD / KDIGO 2024 ch. 3, 1B; mode `ada`: ADA 2024)."""
    t = c.thresholds.glp1ra
    if not (c.adult and not c.krt and c.staging.ckd and c.t2d):
        return None
    if t.mode == "kdigo":
        above_target = c.hba1c is not None and c.hba1c.value >= t.hba1c_target
        metformin_done = c.on(DrugClass.METFORMIN) or c.egfr_below(30)
        sglt2i_done = c.on(DrugClass.SGLT2I) or c.egfr_below(20)
        if not (above_target and metformin_done and sglt2i_done):
            return None
    if c.on(DrugClass.GLP1RA):
        return _fire(RuleId.GLP1RA, suppressed_by="on_glp1ra")
    return _fire(RuleId.GLP1RA)


def rule_statin(c: RuleContext) -> RuleOutcome | None:
    """Statin in CKD (KDIGO 2013 Lipid: ≥ 50 y 1A/1B; 18–49 with diabetes 2A; transplant 2B; dialysis: do not start)."""
    s, t = c.staging, c.thresholds.statin
    if not (c.adult and s.ckd):
        return None
    age_ok = s.age_now is not None and s.age_now >= t.min_age
    if not (age_ok or s.kidney_transplant or (c.diabetes and t.young_with_diabetes)):
        return None
    if s.dialysis:
        return _fire(RuleId.STATIN, suppressed_by="dialysis")
    if c.on(DrugClass.STATIN):
        return _fire(RuleId.STATIN, suppressed_by="on_statin")
    return _fire(RuleId.STATIN)


def statin_discussion(c: RuleContext, fired: set[RuleId]) -> str | None:
    """[2.1] §7.2 statin: "age" from `statin.discuss_from_age`, or "krt" at G5 while `krt_planning` fires; the card
    is then "Discuss a statin", with no draft and a later place (the age wording when both hold)."""
    s = c.staging
    if s.age_now is not None and s.age_now >= c.thresholds.statin.discuss_from_age:
        return "age"
    if s.g_stage is GStage.G5 and RuleId.KRT_PLANNING in fired:
        return "krt"
    return None


def rule_metformin_reduce(c: RuleContext) -> RuleOutcome | None:
    """Metformin at eGFR 30–44: reduce dose, recheck (FDA label 2016; Lipska, Diabetes Care 2011). [2.1] Fires with a
    stale eGFR too (the card asks for a recheck); suppressed while `metformin_stop` fires."""
    t = c.thresholds.metformin
    egfr = c.egfr
    if c.on(DrugClass.METFORMIN) and not c.staging.dialysis and egfr is not None:
        in_band = t.stop_below_egfr <= egfr < t.reduce_below_egfr
        return _fire(RuleId.METFORMIN_REDUCE, Indicator.WARNING) if in_band else None
    return None


def metformin_aki(c: RuleContext) -> bool:
    """[2.1] The AKI branch of `metformin_stop`: recent_aki and the AKI creatinine's own eGFR below the stop level."""
    egfr = c.cr_latest_egfr
    return c.recent_aki and egfr is not None and egfr < c.thresholds.metformin.stop_below_egfr


def rule_metformin_stop(c: RuleContext) -> RuleOutcome | None:
    """Metformin contraindicated below eGFR 30 or on dialysis (FDA label; KDIGO 2022 Diabetes-in-CKD Rec 4.1.1);
    [2.1] withheld during possible AKI when the AKI creatinine's eGFR is below 30 (KDIGO 2012 CKD ch. 4, 1C)."""
    if not c.on(DrugClass.METFORMIN):
        return None
    if c.staging.dialysis or c.egfr_below(c.thresholds.metformin.stop_below_egfr) or metformin_aki(c):
        return _fire(RuleId.METFORMIN_STOP, Indicator.WARNING)
    return None


def rule_nsaid_avoid(c: RuleContext) -> RuleOutcome | None:
    """Avoid NSAIDs in CKD (KDIGO 2012 CKD ch. 4: avoid < 30, not prolonged < 60, not with lithium or RAS blockade);
    [2.1] and whenever an NSAID meets `recent_aki` (KDIGO 2012 CKD ch. 4, 1C; NICE NG148)."""
    if not c.on(DrugClass.NSAID):
        return None
    if not (c.staging.ckd or c.egfr_below(c.thresholds.nsaid.max_egfr) or c.recent_aki):
        return None
    severe = c.egfr_below(30) or c.on(DrugClass.ACEI, DrugClass.ARB, DrugClass.DRI, DrugClass.LITHIUM) or c.recent_aki
    return _fire(RuleId.NSAID_AVOID, Indicator.WARNING if severe else Indicator.INFO)


# [2.1] §7.2 new_egfr_fall: a warning below 30 or for a fall of 40 % or more (L ≤ 0.60 × P).
NEW_FALL_WARNING_BELOW = 30.0
NEW_FALL_WARNING_FACTOR = 0.60


def rule_new_egfr_fall(c: RuleContext) -> RuleOutcome | None:
    """[2.1] A new fall of eGFR (S14a): repeat creatinine within 2 weeks (NICE NG203; UKKA eCKD guide; KDIGO 2024
    PP 2.1.3). Suppressed while `aki_caution` fires (`evaluate_rules`)."""
    f = c.staging.new_fall
    if f is None:
        return None
    low, before = f.latest.staging_value, f.previous.staging_value
    warning = low < NEW_FALL_WARNING_BELOW or low <= NEW_FALL_WARNING_FACTOR * before
    return _fire(RuleId.NEW_EGFR_FALL, Indicator.WARNING if warning else Indicator.INFO)


def rule_creatinine_conflict(c: RuleContext) -> RuleOutcome | None:
    """[2.1] The newest creatinine specimen holds results that do not agree (S4): repeat creatinine (KDIGO 2012 AKI:
    a rise is measured over time). A warning when the highest result's eGFR is below 30 or it would be AKI-flagged."""
    s = c.staging
    if not s.conflict_pending:
        return None
    high = s.conflict_highest_egfr
    warning = (high is not None and high < 30) or s.conflict_aki is not None
    return _fire(RuleId.CREATININE_CONFLICT, Indicator.WARNING if warning else Indicator.INFO,
                 "dialysis" if s.dialysis else None)  # fmt: skip


def progression_flag(c: RuleContext) -> bool:
    p = c.staging.progression
    return p is not None and p.flagged


def rule_nephrology_referral(c: RuleContext) -> RuleOutcome | None:
    """Refer to nephrology (KDIGO 2012 Rec 5.1.1; KDIGO 2024 Rec 2.2.1 1A, PP 2.2.1, PP 2.2.2); [2.1] any CKD in a
    child (KDIGO 2024 ch. 5: paediatric nephrology), and quantitative A3 as a warning (on a par with GFR < 30)."""
    s, t = c.staging, c.thresholds.nephrology_referral
    if not s.ckd:
        return None
    a3_quant = c.u_quant and s.a_stage is AStage.A3
    progression = t.on_progression and progression_flag(c)
    child = s.age_now is not None and s.age_now < ADULT_AGE
    if not (c.egfr_below(t.max_egfr) or a3_quant or c.kfre_referral or progression or child):
        return None
    warning = c.egfr_below(30) or c.kfre_referral or a3_quant or child
    return _fire(RuleId.NEPHROLOGY_REFERRAL, Indicator.WARNING if warning else Indicator.INFO,
                 "krt" if c.krt else None)  # fmt: skip


def kfre_only_estimated(c: RuleContext) -> bool:
    """[2.1] The only referral criterion met is a KFRE one and the KFRE ACR is estimated (§6.3): the card says so and
    adds a urine ACR order."""
    s, t = c.staging, c.thresholds.nephrology_referral
    if not (c.kfre_referral and c.kfre_acr_estimated):
        return False
    others = (
        c.egfr_below(t.max_egfr)
        or (c.u_quant and s.a_stage is AStage.A3)
        or (t.on_progression and progression_flag(c))
        or (s.age_now is not None and s.age_now < ADULT_AGE)
    )
    return not others


def rule_krt_planning(c: RuleContext) -> RuleOutcome | None:
    """Prepare for KRT (KDIGO 2024 PP 2.2.3, 2-year risk > 40 %; KDIGO 2012 ch. 5, G5)."""
    t = c.thresholds.krt_planning
    high_risk = c.kfre is not None and c.kfre.risk_2y > t.kfre_2y
    if not (c.staging.ckd and (c.egfr_below(t.max_egfr) or high_risk)):
        return None
    return _fire(RuleId.KRT_PLANNING, Indicator.WARNING, "dialysis" if c.staging.dialysis else None)


def rule_progression_review(c: RuleContext) -> RuleOutcome | None:
    """Certain drop or rapid decline in CKD (KDIGO 2012 Rec 2.1.3; KDIGO 2024 PP 2.1.3). [2.0] Only with CKD; a
    referral card names the progression instead (`evaluate_rules`)."""
    if not (c.staging.ckd and c.thresholds.progression_review.enabled and progression_flag(c)):
        return None
    return _fire(RuleId.PROGRESSION_REVIEW, Indicator.WARNING, "dialysis" if c.staging.dialysis else None)


def rule_aki_caution(c: RuleContext) -> RuleOutcome | None:
    """Recent AKI: eGFR equations assume a steady state; do not stage, repeat creatinine (KDIGO 2012 AKI). [2.1] A
    flagged creatinine never rechecked (`aki_stale`) is info, a warning when its own eGFR is below 30."""
    if not c.recent_aki:
        return None
    indicator = Indicator.WARNING
    if c.aki_stale and not (c.cr_latest_egfr is not None and c.cr_latest_egfr < 30):
        indicator = Indicator.INFO
    return _fire(RuleId.AKI_CAUTION, indicator, "dialysis" if c.staging.dialysis else None)


def rule_hyperkalaemia(c: RuleContext) -> RuleOutcome | None:
    """[2.0] K+ ≥ 5.5 with CKD or eGFR < 60: treat the potassium, review potassium-raising drugs, keep RASi where
    possible (KDIGO 2024 ch. 3 hyperkalaemia practice points). Critical from 6.0."""
    t, k = c.thresholds.hyperkalaemia, c.potassium_value
    # [2.1] a safety card: `hyperkalaemia.enabled` false (allowed by 2.0) is ignored (§7.5)
    if not ((c.staging.ckd or c.egfr_below(60)) and k is not None and k >= t.min_potassium):
        return None
    indicator = Indicator.CRITICAL if k >= CRITICAL_POTASSIUM else Indicator.WARNING
    return _fire(RuleId.HYPERKALAEMIA, indicator, "dialysis" if c.staging.dialysis else None)


def rule_dual_ras(c: RuleContext) -> RuleOutcome | None:
    """Two or more distinct RAS-blocking ingredients together (KDIGO 2024 Rec 3.6.4, 1B: avoid any combination);
    [2.1] critical for sacubitril/valsartan with an ACE inhibitor (FDA Entresto label: contraindicated, angioedema).
    A safety card: configuration cannot switch it off (§7.5)."""
    if not (c.adult and len(c.ras_ingredients) >= 2):
        return None
    return _fire(RuleId.DUAL_RAS, Indicator.CRITICAL if c.arni_acei else Indicator.WARNING)


def monitoring_interval_days(g: GStage | None, a: AStage | None) -> float:
    """365 / tests per year for the heat-map cell (KDIGO 2012 Fig. 12); no G category reads as G1–G2."""
    return 365 / MONITORING_TESTS_PER_YEAR[g or GStage.G1][a or AStage.A1]


def latest_kidney_test(c: RuleContext) -> date | None:
    """The newer of the latest creatinine (C) and the latest valid eGFR (V)."""
    s = c.staging
    dates = [d for d in (s.creatinine[-1].date if s.creatinine else None, s.egfr.date if s.egfr else None) if d]
    return max(dates, default=None)


def rule_monitoring_due(c: RuleContext) -> RuleOutcome | None:
    """[2.0] CKD whose creatinine/eGFR is older than the KDIGO monitoring interval plus grace (KDIGO 2024 PP 2.1.1).
    With no creatinine or eGFR on record at all, monitoring is due."""
    s, t = c.staging, c.thresholds.monitoring_due
    if not (t.enabled and s.ckd) or s.dialysis:
        return None
    latest = latest_kidney_test(c)
    if latest is not None and days(latest, c.as_of) <= monitoring_interval_days(s.g_stage, s.a_stage) + t.grace_days:
        return None
    return _fire(RuleId.MONITORING_DUE)


def coded_stage_form(c: RuleContext) -> str | None:
    """[2.1] §7.2 coded_stage_outdated: "outdated" when the lab stage is worse than every coded stage, "unstaged"
    when every counted CKD diagnosis code states no stage; None otherwise."""
    s = c.staging
    if not (s.ckd and not s.dialysis and s.reason in (Reason.EGFR_LT60_CHRONIC, Reason.EGFR_AND_ALBUMINURIA_CHRONIC)
            and c.has(ConditionConcept.CKD_DIAGNOSIS) and s.g_stage is not None):  # fmt: skip
        return None
    stated = s.facts.coded_stages
    if not stated:
        return "unstaged"
    if all(s.g_stage.rank > GStage(STAGE_AS_G[x]).rank for x in stated):
        return "outdated"
    return None


def rule_coded_stage_outdated(c: RuleContext) -> RuleOutcome | None:
    """[2.1] The coded CKD stage is out of date, or no code states a stage (KDIGO 2024 ch. 1: classify by cause, G and
    A category). Waits while `aki_caution` or `new_egfr_fall` fires (`evaluate_rules`)."""
    return _fire(RuleId.CODED_STAGE_OUTDATED) if coded_stage_form(c) else None


# [2.1] §7.1 SBP_mean: the latest 3 readings, at least 2 (KDIGO 2021: average ≥ 2 readings on ≥ 2 occasions; to verify)
SBP_LATEST = 3
SBP_MIN_READINGS = 2


def rule_bp_above_target(c: RuleContext) -> RuleOutcome | None:
    """[2.1] Blood pressure above target in CKD (KDIGO 2021 BP in CKD, Rec 3.1.1, 2B: systolic < 120 mm Hg when
    tolerated; transplant recipients < 130/80, 2C): adults with CKD, not on dialysis; a mean of the latest readings
    at or above target + margin."""
    s, t = c.staging, c.thresholds.bp
    if not (c.adult and s.ckd and not s.dialysis and t.enabled):
        return None
    found = c.sbp_mean
    if found is None or found[0] < t.systolic_target + t.margin:
        return None
    return _fire(RuleId.BP_ABOVE_TARGET)


RULES: dict[RuleId, Rule] = {
    RuleId.PROBLEM_LIST: rule_problem_list,
    RuleId.ACR_TEST: rule_acr_test,
    RuleId.AKI_CAUTION: rule_aki_caution,
    RuleId.METFORMIN_STOP: rule_metformin_stop,
    RuleId.METFORMIN_REDUCE: rule_metformin_reduce,
    RuleId.NSAID_AVOID: rule_nsaid_avoid,
    RuleId.SGLT2I: rule_sglt2i,
    RuleId.RASI: rule_rasi,
    RuleId.FINERENONE: rule_finerenone,
    RuleId.GLP1RA: rule_glp1ra,
    RuleId.STATIN: rule_statin,
    RuleId.NEPHROLOGY_REFERRAL: rule_nephrology_referral,
    RuleId.KRT_PLANNING: rule_krt_planning,
    RuleId.PROGRESSION_REVIEW: rule_progression_review,
    RuleId.HYPERKALAEMIA: rule_hyperkalaemia,
    RuleId.DUAL_RAS: rule_dual_ras,
    RuleId.MONITORING_DUE: rule_monitoring_due,
    RuleId.NEW_EGFR_FALL: rule_new_egfr_fall,
    RuleId.CREATININE_CONFLICT: rule_creatinine_conflict,
    RuleId.CODED_STAGE_OUTDATED: rule_coded_stage_outdated,
    RuleId.BP_ABOVE_TARGET: rule_bp_above_target,
}


def evaluate_rules(context: RuleContext) -> list[RuleOutcome]:
    """Every rule's trigger, then the suppressions that depend on other rules (§7.2 [2.0]); fired and suppressed
    outcomes, in RULES order. A deceased patient gets none (S19)."""
    if context.staging.deceased:
        return []
    outcomes = [outcome for rule in RULES.values() if (outcome := rule(context)) is not None]
    fired = {o.rule for o in outcomes if o.fired}
    return [_precedence(o, fired, context) if o.fired else o for o in outcomes]


def _precedence(o: RuleOutcome, fired: set[RuleId], c: RuleContext) -> RuleOutcome:
    """Drug starts need a fresh eGFR and wait for an acute episode, a new fall or a conflicting specimen; the
    documentation waits for the repeat; one referral; one progression card; one metformin card (§7.2 [2.1])."""
    if o.rule in NEEDS_FRESH_EGFR and not c.fresh:
        return _fire(o.rule, o.indicator, "egfr_not_fresh")
    if o.rule in DRUG_STARTS and (pausing := sorted(fired & PAUSE_DRUG_STARTS)):
        return _fire(o.rule, o.indicator, pausing[0].value)
    documenting = (RuleId.PROBLEM_LIST, RuleId.CODED_STAGE_OUTDATED)
    if o.rule in documenting and (waiting := sorted(fired & {RuleId.AKI_CAUTION, RuleId.NEW_EGFR_FALL})):
        return _fire(o.rule, o.indicator, waiting[0].value)
    if o.rule is RuleId.NEW_EGFR_FALL and RuleId.AKI_CAUTION in fired:
        return _fire(o.rule, o.indicator, "aki_caution")
    if o.rule is RuleId.METFORMIN_REDUCE and RuleId.METFORMIN_STOP in fired:
        return _fire(o.rule, o.indicator, "metformin_stop")
    if o.rule is RuleId.NEPHROLOGY_REFERRAL and RuleId.KRT_PLANNING in fired:
        return _fire(o.rule, o.indicator, "krt_planning")
    if o.rule is RuleId.PROGRESSION_REVIEW and fired & {RuleId.NEPHROLOGY_REFERRAL, RuleId.KRT_PLANNING}:
        return _fire(o.rule, o.indicator, "referral")
    return o


def sumida_for_rules(staging: Staging) -> float | None:
    """The Sumida ACR of the latest urine test when it is a PCR (for acr_ge)."""
    latest = staging.albuminuria
    if latest is None or latest.test.kind is not UrineKind.PCR:
        return None
    return latest.acr_mg_g
