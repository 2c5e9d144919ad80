"""One assessment: staging (§5), KFRE (§6) and the recommendation rules (§7), and its JSON contract (§9.4).

Clinical spec version 2.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from service.clinical.categories import GStage
from service.clinical.kfre import ExtraLabs, KfreResult, Region, kfre
from service.clinical.mortality import load_model
from service.clinical.progression import Trajectory
from service.clinical.record import LabValue, PatientRecord, UrineKind
from service.clinical.rules import (
    CARE_GAPS,
    RECOMMENDATION_ORDER,
    RuleContext,
    RuleId,
    RuleOutcome,
    evaluate_rules,
    statin_discussion,
    sumida_for_rules,
)
from service.clinical.staging import ADULT_AGE, EgfrPoint, Reason, Staging, acr_mg_g, days, stage
from service.clinical.thresholds import Thresholds

KFRE_STAGES = (GStage.G3A, GStage.G3B, GStage.G4, GStage.G5)


@dataclass(slots=True, kw_only=True)
class Assessment:
    staging: Staging
    kfre: KfreResult | None
    kfre_acr_estimated: bool
    outcomes: list[RuleOutcome]
    context: RuleContext
    mortality_5y: float | None = None  # competing-risk context next to KFRE; never used by a rule

    @property
    def trajectory(self) -> Trajectory | None:
        """The S18 Theil–Sen trend, when there is one."""
        p = self.staging.progression
        return None if p is None else p.trajectory

    @property
    def fired(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.fired]

    @property
    def care_gaps(self) -> list[str]:
        fired = {o.rule for o in self.fired}
        return [gap for rule, gap in CARE_GAPS.items() if rule in fired]

    @property
    def recommendations(self) -> list[str]:
        """[2.0] Fired rules that are not care gaps, in §7.4 priority order; [2.1] the statin in its discussion form
        takes a later place (after the monitoring cards, so after every other recommendation)."""
        fired = {o.rule for o in self.fired}
        out = [rule.value for rule in RECOMMENDATION_ORDER if rule in fired]
        if RuleId.STATIN in fired and statin_discussion(self.context, fired):
            out.remove(RuleId.STATIN.value)
            out.append(RuleId.STATIN.value)
        return out


def latest_within(values: list[LabValue], as_of: date, max_age_days: int) -> LabValue | None:
    """The latest value dated within `max_age_days` before `as_of` (0 ≤ days ≤ max)."""
    recent = [v for v in values if 0 <= days(v.date, as_of) <= max_age_days]
    return max(recent, key=lambda v: v.date, default=None)


def kfre_acr(s: Staging) -> tuple[float | None, bool]:
    """§6.3: the latest ACR if any exists; else the latest PCR, else the latest dipstick, through Sumida."""
    for kind in (UrineKind.ACR, UrineKind.PCR, UrineKind.DIPSTICK):
        tests = [u for u in s.urine if u.kind is kind]
        if tests:
            return acr_mg_g(tests[-1], s.sex, s.facts)
    return None, False


def extra_labs(record: PatientRecord, as_of: date, max_age: int) -> ExtraLabs | None:
    """The four KFRE-8 labs if each has a value within `kfre.extra_labs_max_age_days` (§6.3)."""
    found = [
        latest_within(series, as_of, max_age)
        for series in (record.albumin, record.phosphate, record.bicarbonate, record.calcium)
    ]
    if any(v is None for v in found):
        return None
    alb, phos, bicarb, ca = (v.value for v in found if v is not None)
    return ExtraLabs(albumin=alb, phosphate=phos, bicarbonate=bicarb, calcium=ca)


def compute_kfre(record: PatientRecord, s: Staging, t: Thresholds) -> tuple[KfreResult | None, bool]:
    """§6.2: KFRE only for adults with a chronic eGFR below 60 (CKD G3a–G5), not on KRT, with known sex and an
    obtainable ACR."""
    age = s.age_now
    # [2.1] §6.2: the eGFR itself must be chronic (the Tangri cohorts had an established eGFR below 60)
    chronic_egfr = s.reason in (Reason.EGFR_LT60_CHRONIC, Reason.EGFR_AND_ALBUMINURIA_CHRONIC)
    eligible = chronic_egfr and s.g_stage in KFRE_STAGES and age is not None and age >= ADULT_AGE
    if not eligible or age is None or s.dialysis or s.kidney_transplant or s.sex is None or s.egfr is None:
        return None, False
    acr, estimated = kfre_acr(s)
    if acr is None:
        return None, False
    extra = None
    if t.kfre.variables in (8, "auto"):
        extra = extra_labs(record, s.as_of, t.kfre.extra_labs_max_age_days)
    result = kfre(age=age, sex=s.sex, egfr=s.egfr.value, acr_mg_g=acr, region=Region(t.kfre.region), extra=extra)
    return result, estimated


def assess(record: PatientRecord, as_of: date, thresholds: Thresholds | None = None) -> Assessment:
    """Stage the patient, estimate KFRE and evaluate every recommendation rule at `as_of`."""
    t = thresholds or Thresholds()
    s = stage(record, as_of, t.staging.akd_window)
    risk, estimated = compute_kfre(record, s, t)
    context = RuleContext(
        staging=s,
        kfre=risk,
        thresholds=t,
        medications=tuple(record.medications),
        potassium=latest_within(record.potassium, as_of, t.potassium.max_age_days),
        hba1c=latest_within(record.hba1c, as_of, t.glp1ra.hba1c_max_age_days),
        sumida_acr=sumida_for_rules(s),
        kfre_acr_estimated=estimated,
        systolic=tuple(record.systolic),
        diastolic=tuple(record.diastolic),
    )
    return Assessment(
        staging=s,
        kfre=risk,
        kfre_acr_estimated=estimated,
        outcomes=evaluate_rules(context),
        context=context,
        mortality_5y=mortality_context(s, risk, t),
    )


def mortality_context(s: Staging, risk: KfreResult | None, t: Thresholds) -> float | None:
    """5-year risk of death (flchain model) where KFRE is shown, for adults 50+; None when switched off."""
    if risk is None or not t.mortality_context.enabled or s.sex is None or s.age_now is None or s.egfr is None:
        return None
    return load_model().risk_5y(s.age_now, s.sex, s.egfr.value)


# --- JSON contract (§9.4) -------------------------------------------------------------------------------------


def _egfr_json(p: EgfrPoint | None) -> dict[str, Any] | None:
    if p is None:
        return None
    out: dict[str, Any] = {"value": p.value, "date": p.date.isoformat(), "equation": p.equation, "source": p.source}
    if p.comparator is not None:
        out["comparator"] = p.comparator.value
    return out


def _albuminuria_json(s: Staging) -> dict[str, Any] | None:
    alb = s.albuminuria
    if alb is None:
        return None
    test = alb.test
    out: dict[str, Any] = {
        "category": alb.category.value,
        "date": test.date.isoformat(),
        "kind": test.kind.value,
        "value": test.grade if test.grade is not None else test.value,
        "unit": None if test.unit is None else test.unit.value,
        "acr_mg_g": alb.acr_mg_g,
        "acr_estimated": alb.acr_estimated,
    }
    if test.comparator is not None:
        out["comparator"] = test.comparator.value
    return out


def _progression_json(a: Assessment) -> dict[str, Any] | None:
    """S18 [2.0]: certain_drop, rapid and the Theil–Sen slope_per_year, with the trend in `trajectory` (or null)."""
    p = a.staging.progression
    if p is None:
        return None
    t = p.trajectory
    trajectory = None
    if t is not None:
        trajectory = {
            "method": "theil-sen", "slope_per_year": t.slope_per_year, "n": t.n,
            "ci95": list(t.ci95) if t.ci95 else None, "from": t.first.isoformat(), "to": t.last.isoformat(),
            "fitted_last": t.fitted_now, "years_to_30": t.years_to_30, "years_to_15": t.years_to_15,
        }  # fmt: skip
    return {"certain_drop": p.certain_drop, "rapid": p.rapid, "slope_per_year": p.slope_per_year,
            "trajectory": trajectory}  # fmt: skip


def _kfre_json(a: Assessment) -> dict[str, Any] | None:
    if a.kfre is None:
        return None
    return {
        "risk_2y": a.kfre.risk_2y,
        "risk_5y": a.kfre.risk_5y,
        "variables": a.kfre.variables,
        "region": a.kfre.region.value,
        "acr_estimated": a.kfre_acr_estimated,
    }


def _blood_pressure_json(a: Assessment) -> dict[str, Any] | None:
    """[2.1] §9.4: the readings SBP_mean used, for every patient (registry); null below 2 readings."""
    found = a.context.sbp_mean
    if found is None:
        return None
    mean, used = found
    return {"systolic_mean": mean, "n": len(used), "first_date": used[0].date.isoformat(),
            "last_date": used[-1].date.isoformat()}  # fmt: skip


def _new_fall_json(s: Staging) -> dict[str, Any] | None:
    """[2.1] S14a, §9.4: unrounded values and the fall as a fraction."""
    f = s.new_fall
    if f is None:
        return None
    return {"value": f.latest.value, "date": f.latest.date.isoformat(), "previous_value": f.previous.value,
            "previous_date": f.previous.date.isoformat(), "fall": f.fall}  # fmt: skip


def assessment_to_json(a: Assessment) -> dict[str, Any]:
    """The `ckd-cds assess` output object, exactly the keys of spec §9.4."""
    s = a.staging
    return {
        "as_of": s.as_of.isoformat(),
        "ckd": s.ckd,
        "chronic": s.ckd,  # S16: chronic always equals ckd
        "reason": s.reason.value,
        "g_stage": None if s.g_stage is None else s.g_stage.value,
        "a_stage": None if s.a_stage is None else s.a_stage.value,
        "kdigo_risk": None if s.kdigo_risk is None else s.kdigo_risk.value,
        "dialysis": s.dialysis,
        "kidney_transplant": s.kidney_transplant,
        "deceased": s.deceased,
        "egfr": _egfr_json(s.egfr),
        "albuminuria": _albuminuria_json(s),
        "progression": _progression_json(a),
        "kfre": _kfre_json(a),
        "new_fall": _new_fall_json(s),
        "blood_pressure": _blood_pressure_json(a),
        "excluded": [{"date": e.date.isoformat(), "value": e.value, "why": e.why} for e in s.excluded],
        "care_gaps": a.care_gaps,
        "recommendations": a.recommendations,
    }


__all__ = ["Assessment", "RuleId", "assess", "assessment_to_json"]
