"""What each card says: numbers formatted for clinicians, the values that triggered each rule, the evidence block.

Wording rules of clinical spec 2.0 §7.4: eGFR as a floored integer, ratios with at most one decimal, potassium and
percentages with one decimal; human names, never identifiers ("CKD-EPI 2021 (creatinine)", "North American KFRE");
each card's detail carries only the values that triggered it, and the full evidence block appears once per response.
Every text value here comes from the engine's typed output and the project's own code lists, never from FHIR text,
so nothing a FHIR server sends can reach a card's Markdown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.clinical.assess import Assessment
from service.clinical.categories import AStage, GStage
from service.clinical.codes import STAGE_AS_G, STAGE_CODES, ConditionConcept
from service.clinical.medications import INGREDIENTS, RAS_BLOCKERS, DrugClass
from service.clinical.progression import INTERVAL_MIN_POINTS, Progression
from service.clinical.record import LabValue, UrineKind
from service.clinical.rules import (
    MONITORING_TESTS_PER_YEAR,
    coded_stage_form,
    kfre_only_estimated,
    latest_kidney_test,
    medicine_names,
    metformin_aki,
    statin_discussion,
)
from service.clinical.staging import ADULT_AGE, AkiCriterion, EgfrPoint, Reason

EQUATION_NAMES = {
    "ckd-epi-2021-cr": "CKD-EPI 2021 (creatinine)",
    "ckd-epi-2021-cr-cys": "CKD-EPI 2021 (creatinine–cystatin C)",
    "ckid-u25-cr": "CKiD U25 (creatinine)",
}
REGION_NAMES = {"north-american": "North American", "non-north-american": "non-North American"}
URINE_NAMES = {UrineKind.ACR: "urine ACR", UrineKind.PCR: "urine PCR", UrineKind.DIPSTICK: "urine dipstick protein"}
RECENT_EGFRS = 5  # the evidence block lists at most this many recent eGFRs

REASON_TEXT = {
    Reason.EGFR_LT60_CHRONIC: "eGFR below 60 for at least 90 days",
    Reason.ALBUMINURIA_CHRONIC: "albuminuria for at least 90 days",
    Reason.EGFR_AND_ALBUMINURIA_CHRONIC: "eGFR below 60 and albuminuria, each for at least 90 days",
    Reason.DIALYSIS: "on dialysis",
    Reason.KIDNEY_TRANSPLANT: "kidney transplant recipient",
    Reason.SINGLE_ABNORMAL: "One eGFR below 60 so far.",
    Reason.ABNORMAL_LT90D: "eGFR below 60 for less than 90 days so far.",
    Reason.ALBUMINURIA_NOT_CHRONIC: "Albuminuria not yet shown to persist for 90 days.",
    Reason.AKI_EXCLUDED: "Low eGFR values coincide with a possible acute kidney injury and were not used.",
    Reason.NEW_EGFR_FALL: "A new fall of eGFR: repeat creatinine within 2 weeks.",
}
AKI_CRITERIA = {
    AkiCriterion.ABSOLUTE_RISE: "a rise of ≥ 0.3 mg/dL within 48 hours (KDIGO AKI criterion)",
    AkiCriterion.RELATIVE_RISE: "≥ 1.5 × a value within 7 days (KDIGO AKI criterion)",
    AkiCriterion.CODED: "within 30 days of a coded acute kidney injury",
    AkiCriterion.BASELINE_RISE: "≥ 1.5 × the median of the previous 8–365 days (NHS England AKI algorithm baseline)",
    AkiCriterion.AKD_WINDOW: "still ≥ 1.5 × the baseline of an acute kidney injury within 90 days (acute kidney "
    "disease)",
}
POTASSIUM_RAISING = {
    DrugClass.ACEI: "ACE inhibitor", DrugClass.ARB: "ARB", DrugClass.DRI: "direct renin inhibitor",
    DrugClass.NS_MRA: "finerenone", DrugClass.STEROIDAL_MRA: "spironolactone/eplerenone", DrugClass.NSAID: "NSAID",
}  # fmt: skip


# --- numbers -------------------------------------------------------------------------------------------------------


def egfr_text(value: float) -> str:
    """eGFR floored to an integer: the number shown never crosses a category cut-off (59.996 is G3a, "59")."""
    return str(math.floor(value))


def ratio_text(value: float) -> str:
    """ACR or PCR with at most one decimal: 22.7174 -> "22.7", 45.0 -> "45"."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def one_decimal(value: float) -> str:
    return f"{value:.1f}"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def shown_egfr(p: EgfrPoint) -> str:
    return f"{p.comparator.value if p.comparator else ''}{egfr_text(p.value)}"


def egfr_line(p: EgfrPoint) -> str:
    """'eGFR 51 mL/min/1.73 m² on 2025-06-20 (CKD-EPI 2021 (creatinine), from creatinine 1.50 mg/dL)'."""
    how = EQUATION_NAMES.get(p.equation, p.equation)
    if p.source == "reported":
        how += ", reported by the laboratory"
    elif p.creatinine is not None:
        how += f", from creatinine {p.creatinine:.2f} mg/dL"
    return f"eGFR {shown_egfr(p)} mL/min/1.73 m² on {p.date.isoformat()} ({how})"


def urine_line(a: Assessment) -> str | None:
    alb = a.staging.albuminuria
    if alb is None:
        return None
    test = alb.test
    if test.value is None or test.unit is None:  # a dipstick: a grade, no number
        value = f"{test.grade}"
    else:
        value = f"{test.comparator.value if test.comparator else ''}{ratio_text(test.value)} {test.unit.value}"
    line = f"{URINE_NAMES[test.kind]} {value} on {test.date.isoformat()} ({alb.category.value})"
    if alb.acr_estimated and alb.acr_mg_g is not None:
        line += f"; ACR estimated at {ratio_text(alb.acr_mg_g)} mg/g (Sumida 2020)"
        if alb.estimate_unreliable:
            line += ", estimate unreliable (PCR < 50 mg/g)"
    return line


def potassium_line(k: LabValue) -> str:
    return f"potassium {one_decimal(k.value)} mmol/L on {k.date.isoformat()}"


def stage_label(a: Assessment) -> str:
    s = a.staging
    g = "G5D" if s.dialysis else (s.g_stage.value if s.g_stage else "G?")
    return f"{g}/{s.a_stage.value}" if s.a_stage else g


def trend_text(p: Progression | None) -> str | None:
    """The S18 trend over its window, in plain words (spec 2.1 §7.4); the interval ("95 % CI") only from 5 points,
    and the projections only when defined."""
    t = None if p is None else p.trajectory
    if t is None:
        return None
    interval = f"95 % CI {t.ci95[0]:+.1f} to {t.ci95[1]:+.1f}; " if t.ci95 and t.n >= INTERVAL_MIN_POINTS else ""
    text = (f"{t.slope_per_year:+.1f} mL/min/1.73 m² per year ({interval}trend over {t.n} results, "
            f"{t.first.isoformat()} to {t.last.isoformat()})")  # fmt: skip
    projections = [f"eGFR {level} in about {years:.1f} years" for level, years in
                   ((30, t.years_to_30), (15, t.years_to_15)) if years is not None]  # fmt: skip
    if projections:
        text += "; at this rate " + " and ".join(projections)
    return text


def drop_text(p: Progression | None) -> str | None:
    """The certain drop: baseline median against the last two points (S18.5)."""
    if p is None or not p.certain_drop or p.baseline is None:
        return None
    last = ", ".join(f"{egfr_text(q.value)} ({q.date.isoformat()})" for q in p.points[-2:])
    return (f"certain drop: eGFR {last} against {egfr_text(p.baseline)} in the first year of the window "
            f"(from {p.points[0].date.isoformat()}), a fall of ≥ 25 % and of G category")  # fmt: skip


def progression_lines(p: Progression | None) -> list[str]:
    lines = []
    if p is not None and p.rapid and (trend := trend_text(p)):
        lines.append(f"rapid decline: {trend}")
    if (drop := drop_text(p)) is not None:
        lines.append(drop)
    return lines


# --- the evidence block, once per response ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    as_of: str
    egfrs: list[str]
    urine: str | None
    stage: str | None
    trend: str | None
    kfre: str | None
    death: str | None
    aki_excluded: int
    reported: bool
    averaged: int = 0  # [2.1] §1 data quality: specimens whose agreeing results were averaged
    conflicting: int = 0  # [2.1] results set aside because their specimen conflicts
    whole_blood: int = 0  # [2.1] whole-blood results set aside beside a serum one


def kfre_line(a: Assessment) -> str | None:
    """The KFRE risks with the equation named (region, variables, whether the ACR was estimated)."""
    if a.kfre is None:
        return None
    region = REGION_NAMES[a.kfre.region.value]
    return (
        f"{region} KFRE ({a.kfre.variables}-variable): kidney failure risk {percent(a.kfre.risk_2y)} at 2 "
        f"years, {percent(a.kfre.risk_5y)} at 5 years{' (ACR estimated)' if a.kfre_acr_estimated else ''}"
    )


def evidence(a: Assessment) -> Evidence:
    """All recent eGFRs (latest first, within the S18 window), urine, category, trend, KFRE, data quality."""
    s = a.staging
    window = [p for p in s.valid if (s.as_of - p.date).days <= 1095] or s.valid[-1:]
    death = None
    if a.kfre is not None and a.mortality_5y is not None:
        death = (
            f"competing risk: 5-year risk of kidney failure {percent(a.kfre.risk_5y)} vs death "
            f"{percent(a.mortality_5y)} (age- and sex-based risk of death for adults 50 or older, with eGFR; context, "
            "not a trigger)"
        )
    return Evidence(
        as_of=s.as_of.isoformat(),
        egfrs=[egfr_line(p) for p in reversed(window[-RECENT_EGFRS:])],
        urine=urine_line(a),
        stage=f"KDIGO category {stage_label(a)}" + (f", {s.kdigo_risk.value} risk" if s.kdigo_risk else "")
        if s.ckd else None,
        trend=trend_text(s.progression),
        kfre=kfre_line(a),
        death=death,
        aki_excluded=sum(1 for e in s.excluded if e.why == "aki"),
        reported=any(p.source == "reported" for p in window),
        averaged=s.averaged_specimens,
        conflicting=sum(1 for e in s.excluded if e.why == "conflict"),
        whole_blood=sum(1 for e in s.excluded if e.why == "whole_blood_with_serum"),
    )  # fmt: skip


# --- per-rule variables ---------------------------------------------------------------------------------------------


def _latest_egfr(a: Assessment) -> str | None:
    return None if a.staging.egfr is None else egfr_line(a.staging.egfr)


def referral_reasons(a: Assessment) -> list[str]:
    """Why the nephrology referral or KRT planning card fired, each value once."""
    c, s, t = a.context, a.staging, a.context.thresholds
    why = []
    if c.egfr_below(t.nephrology_referral.max_egfr) and s.egfr is not None:
        why.append(f"eGFR {shown_egfr(s.egfr)}")
    if c.u_quant and s.a_stage is AStage.A3:
        why.append("albuminuria A3")
    if a.kfre is not None and c.kfre_referral:
        why.append(f"5-year KFRE {percent(a.kfre.risk_5y)}")
    if a.kfre is not None and a.kfre.risk_2y > t.krt_planning.kfre_2y:
        why.append(f"2-year KFRE {percent(a.kfre.risk_2y)}")
    if t.nephrology_referral.on_progression and s.progression is not None and s.progression.flagged:
        why.append("rapid decline" if s.progression.rapid else "certain drop in eGFR")
    return why


def krt_reason(a: Assessment) -> str:
    """The krt_planning trigger: 2-year KFRE above krt_planning.kfre_2y, else eGFR below krt_planning.max_egfr."""
    t = a.context.thresholds.krt_planning
    if a.kfre is not None and a.kfre.risk_2y > t.kfre_2y:
        return f"2-year KFRE {percent(a.kfre.risk_2y)}"
    return f"eGFR {shown_egfr(a.staging.egfr)}" if a.staging.egfr else "eGFR below 15"


def statin_reason(a: Assessment) -> str:
    """The clause that triggered the statin rule: age first, then transplant, then diabetes (KDIGO 2013 Lipid)."""
    s, t = a.staging, a.context.thresholds.statin
    if s.age_now is not None and s.age_now >= t.min_age:
        return f"age {s.age_now}"
    return "kidney transplant" if s.kidney_transplant else "diabetes"


def sglt2i_reason(a: Assessment) -> str | None:
    c, t = a.context, a.context.thresholds.sglt2i
    if c.t2d:
        return "T2D"
    if c.has_hf:
        return "heart failure"
    if c.acr_ge(t.acr_mg_g):
        return f"ACR ≥ {ratio_text(t.acr_mg_g)} mg/g"
    return None


def aki_lines(a: Assessment) -> list[str]:
    """The flagging criterion with its values and dates: the latest flagged creatinine, or the coded onset."""
    s = a.staging
    episodes = s.aki_episodes
    if episodes:
        scr, finding = episodes[-1]
        line = f"creatinine {scr.value:.2f} mg/dL on {scr.date.isoformat()}: {AKI_CRITERIA[finding.criterion]}"
        ref_date, ref_value = finding.reference_date, finding.reference_value
        if finding.criterion is AkiCriterion.AKD_WINDOW and ref_value is not None and ref_date is not None:
            line += f": baseline {ref_value:.2f} mg/dL of the episode flagged on {ref_date.isoformat()}"
        elif ref_value is not None and ref_date is not None:  # (a), (b): the earlier value
            line += f", against {ref_value:.2f} mg/dL on {ref_date.isoformat()}"
        elif ref_value is not None:  # (d): the past year's median
            line += f", against a median of {ref_value:.2f} mg/dL"
        elif ref_date is not None:  # (c): the coded onset
            line += f" (onset {ref_date.isoformat()})"
        return [line]
    onsets = [o for o in s.facts.aki_onsets if o <= s.as_of]
    return [f"acute kidney injury coded with onset {onsets[-1].isoformat()}"] if onsets else []


def monitoring_text(a: Assessment) -> dict[str, Any]:
    s = a.staging
    latest: date | None = latest_kidney_test(a.context)
    per_year = MONITORING_TESTS_PER_YEAR[s.g_stage or GStage.G1][s.a_stage or AStage.A1]
    return {"latest": latest.isoformat() if latest else None, "per_year": per_year,
            "cell": stage_label(a)}  # fmt: skip


# [2.1] §7.2 aki_caution: the patient's own active drugs to hold while acutely unwell, by class
HOLD_CLASSES = (DrugClass.NSAID, DrugClass.ACEI, DrugClass.ARB, DrugClass.ARNI, DrugClass.DRI, DrugClass.STEROIDAL_MRA,
                DrugClass.NS_MRA, DrugClass.SGLT2I, DrugClass.METFORMIN, DrugClass.LITHIUM)  # fmt: skip


def drugs_to_hold(a: Assessment) -> list[str]:
    """Ingredient names (from the ingredient list, never FHIR text) of the active drugs in HOLD_CLASSES."""
    return a.context.ingredients(*HOLD_CLASSES)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def markdown_text(value: str, limit: int = 120) -> str:
    """FHIR text made safe for card Markdown: control characters dropped, Markdown characters escaped, length capped
    (untrusted input; issue #13)."""
    clean = "".join(ch if ch.isprintable() else " " for ch in value)[:limit]
    return _MARKDOWN_SPECIAL.sub(r"\\\1", clean)


def coded_stage_text(stages: frozenset[str]) -> str:
    """[2.1] The worst stage the codes state, as §8.6 states it without the G ("3", "3a", "4")."""
    return max(stages, key=lambda x: (GStage(STAGE_AS_G[x]).rank, x != "3")) if stages else ""


def bp_values(a: Assessment) -> dict[str, Any]:
    """[2.1] bp_above_target: the mean (floored), each reading with its date and the diastolic taken with it."""
    c, t = a.context, a.context.thresholds.bp
    found = c.sbp_mean
    if found is None:  # the rule fires only with a mean
        raise KeyError("bp_above_target")
    mean, used = found
    diastolic: dict[tuple[date, str | None], list[float]] = {}
    for r in c.diastolic:
        diastolic.setdefault((r.date, r.time), []).append(r.value)
    lines = []
    for r in used:
        dia = diastolic.get((r.date, r.time))
        pair = f"{math.floor(r.value)}/{math.floor(sum(dia) / len(dia))}" if dia else f"{math.floor(r.value)} systolic"
        lines.append(f"{pair} mm Hg on {r.date.isoformat()}")
    return {"mean": math.floor(mean), "n": len(used), "readings": lines, "target": t.systolic_target,
            "site_target": t.systolic_target != 120, "transplant": a.staging.kidney_transplant,
            "on_ras": c.on(DrugClass.ACEI, DrugClass.ARB, DrugClass.DRI)}  # fmt: skip


def completed_months(start: date, end: date) -> int:
    """[2.1] §7.4 wording: completed calendar months from `start` to `end`, counted as S3 counts completed years."""
    return (end.year - start.year) * 12 + end.month - start.month - (end.day < start.day)


def freshness(a: Assessment) -> dict[str, Any]:
    """[2.1] For the metformin cards: whether the latest valid eGFR is fresh (§7.1), its date and age in months."""
    s, c = a.staging, a.context
    p = s.egfr
    return {"fresh": c.fresh, "egfr_date": p.date.isoformat() if p else None,
            "months": completed_months(p.date, s.as_of) if p else None}  # fmt: skip


def aki_values(a: Assessment) -> dict[str, Any]:
    """[2.1] The latest element of C (value, date, age in days, its own eGFR) for the AKI-time safety wordings."""
    s, c = a.staging, a.context
    latest = s.creatinine[-1] if s.creatinine else None
    own = s.latest_creatinine_egfr
    return {"aki_stale": c.aki_stale, "aki_creatinine": f"{latest.value:.2f} mg/dL" if latest else None,
            "aki_date": latest.date.isoformat() if latest else None,
            "aki_days": (s.as_of - latest.date).days if latest else None,
            "aki_egfr": shown_egfr(own) if own else None}  # fmt: skip


SPECIMEN_KIND = {True: "whole blood", False: "serum/plasma"}


def conflict_values(a: Assessment) -> dict[str, Any]:
    """[2.1] creatinine_conflict: the pending conflicting specimen, each result with its kind and time."""
    s = a.staging
    conflict = s.conflicts[-1]
    values = sorted(r.value for r in conflict.results)
    texts = [f"{v:.2f}" for v in values]
    joined = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    when = f" at {conflict.time[:5]}" if conflict.time else ""
    lines = [f"Creatinine {r.value:.2f} mg/dL ({SPECIMEN_KIND[r.whole_blood]}) on {conflict.date.isoformat()}{when}"
             for r in conflict.results]  # fmt: skip
    finding = s.conflict_aki
    aki = None
    if finding is not None:
        aki = AKI_CRITERIA[finding.criterion]
        if finding.reference_value is not None and finding.reference_date is not None:
            aki += f", against {finding.reference_value:.2f} mg/dL on {finding.reference_date.isoformat()}"
        elif finding.reference_value is not None:
            aki += f", against a median of {finding.reference_value:.2f} mg/dL"
    return {"date": conflict.date.isoformat(), "values": joined, "lines": lines, "aki": aki}


def dual_ras_values(a: Assessment) -> dict[str, Any]:
    """[2.1] dual_ras: each RAS-blocking drug once, sacubitril/valsartan named as such, with its start date (the
    earliest authoredOn among its active orders, or 'start date not recorded')."""
    c = a.context
    starts: dict[str, date | None] = {}
    for med in c.medications:
        names = {"sacubitril/valsartan"} if "sacubitril" in med.ingredients else medicine_names(med, RAS_BLOCKERS)
        for name in sorted(names):
            known = starts.get(name)
            if name not in starts or (med.authored and (known is None or med.authored < known)):
                starts[name] = med.authored
    lines = [f"{name}: started {when.isoformat()}" if when else f"{name}: start date not recorded"
             for name, when in sorted(starts.items())]  # fmt: skip
    acei = [n for n in sorted(starts) if n in INGREDIENTS and INGREDIENTS[n][0] is DrugClass.ACEI]
    return {"drugs": ", ".join(sorted(starts)), "lines": lines, "arni_acei": c.arni_acei, "acei": ", ".join(acei)}


def common_variables(a: Assessment) -> dict[str, Any]:
    """The template variables every card of an assessment shares: computed once per call, not once per card."""
    s, k = a.staging, a.context.potassium
    return {
        "stage_label": stage_label(a),
        "egfr": shown_egfr(s.egfr) if s.egfr else None,
        "egfr_line": _latest_egfr(a),
        "urine_line": urine_line(a),
        "potassium": one_decimal(k.value) if k else None,
        "potassium_line": potassium_line(k) if k else None,
        "child": s.age_now is not None and s.age_now < ADULT_AGE,
    }


def variables_for(rule: str, a: Assessment, common: dict[str, Any]) -> dict[str, Any]:
    """Template variables per rule (spec 2.0 §7.4 wording rules); `common`: common_variables(a), computed once for
    all the cards of a call."""
    s, c, t = a.staging, a.context, a.context.thresholds
    k = c.potassium
    extra: dict[str, Any] = {}
    if rule == "staging":
        extra = {"ckd": s.ckd, "risk": s.kdigo_risk.value if s.kdigo_risk else None,
                 "reason_text": REASON_TEXT.get(s.reason, s.reason.value)}  # fmt: skip
    elif rule == "problem_list":
        key = "dialysis" if s.dialysis else (s.g_stage.value if s.g_stage else "unstaged")
        icd, snomed, display = STAGE_CODES[key]
        extra = {"icd10": icd, "snomed": snomed, "code_display": display, "reason_text": REASON_TEXT[s.reason],
                 "risk": s.kdigo_risk.value if s.kdigo_risk else None}  # fmt: skip
    elif rule == "acr_test":
        last_acr = next((u for u in reversed(s.urine) if u.kind is UrineKind.ACR), None)
        # [2.1] the risks that hold, never an eGFR of 60 or more
        risks = [r for r, holds in (("hypertension", c.has(ConditionConcept.HYPERTENSION)),
                                    (f"eGFR {common['egfr']}", c.egfr_below(60))) if holds]  # fmt: skip
        extra = {"months": round(t.acr_test.max_age_days / 30.4), "ckd": s.ckd, "diabetes": c.diabetes,
                 "last_acr": last_acr.date.isoformat() if last_acr else None,
                 "risks": " or ".join(risks) or "kidney risk factors"}  # fmt: skip
    elif rule == "rasi":
        extra = {"diabetes": c.diabetes, "k_high": k is not None and k.value > t.rasi.max_potassium,
                 "max_potassium": one_decimal(t.rasi.max_potassium)}  # fmt: skip
    elif rule == "finerenone":
        extra = {"max_potassium": one_decimal(t.finerenone.max_potassium), "k_monitor": k is not None and k.value > 4.8}
    elif rule == "sglt2i":
        extra = {"why": sglt2i_reason(a)}
    elif rule == "glp1ra":
        h = c.hba1c
        extra = {"mode": t.glp1ra.mode, "hba1c": one_decimal(h.value) if h else None,
                 "hba1c_date": h.date.isoformat() if h else None}  # fmt: skip
    elif rule == "statin":
        extra = {"why": statin_reason(a), "discuss": statin_discussion(c, {o.rule for o in a.fired}),
                 "age": s.age_now}  # fmt: skip
    elif rule in ("metformin_reduce", "metformin_stop"):
        extra = {"stop": f"{t.metformin.stop_below_egfr:g}", "reduce": f"{t.metformin.reduce_below_egfr:g}",
                 "dialysis": s.dialysis, **freshness(a), **aki_values(a),
                 "aki_branch": metformin_aki(c)}  # fmt: skip
    elif rule == "nsaid_avoid":
        extra = {"drugs": ", ".join(c.ingredients(DrugClass.NSAID)), "with_rasi": c.on(DrugClass.ACEI, DrugClass.ARB,
                 DrugClass.DRI), "with_lithium": c.on(DrugClass.LITHIUM), "recent_aki": c.recent_aki,
                 **aki_values(a)}  # fmt: skip
    elif rule == "new_egfr_fall":
        f = s.new_fall
        if f is None:  # the rule fires only with S14a's new_fall
            raise KeyError(rule)
        extra = {"latest": shown_egfr(f.latest), "previous": shown_egfr(f.previous),
                 "previous_date": f.previous.date.isoformat(), "latest_line": egfr_line(f.latest),
                 "previous_line": egfr_line(f.previous), "fall": one_decimal(f.fall * 100)}  # fmt: skip
    elif rule == "creatinine_conflict":
        extra = conflict_values(a)
    elif rule in ("nephrology_referral", "krt_planning"):
        extra = {"why": ", ".join(referral_reasons(a)) or "KDIGO criteria", "kfre": kfre_line(a),
                 "progression": progression_lines(s.progression), "krt_why": krt_reason(a),
                 "acr_estimated": kfre_only_estimated(c),
                 "transplant": s.age_now is None or s.age_now < t.krt_planning.transplant_max_age}  # fmt: skip
    elif rule == "progression_review":
        extra = {"why": "rapid eGFR decline" if s.progression and s.progression.rapid else "certain drop in eGFR",
                 "progression": progression_lines(s.progression)}  # fmt: skip
    elif rule == "aki_caution":
        extra = {"lines": aki_lines(a), "hold": ", ".join(drugs_to_hold(a)), **aki_values(a)}
    elif rule == "coded_stage_outdated":
        key = s.g_stage.value if s.g_stage else "unstaged"
        icd, snomed, display = STAGE_CODES[key]
        extra = {"form": coded_stage_form(c), "coded": coded_stage_text(s.facts.coded_stages),
                 "codes": "; ".join(markdown_text(t) for t in s.facts.unstaged_codes), "icd10": icd,
                 "snomed": snomed, "code_display": display}  # fmt: skip
    elif rule == "hyperkalaemia":
        raising = [name for cls, name in POTASSIUM_RAISING.items() if c.on(cls)]
        extra = {"raising": ", ".join(raising), "critical": k is not None and k.value >= 6.0}
    elif rule == "dual_ras":
        extra = dual_ras_values(a)
    elif rule == "monitoring_due":
        extra = monitoring_text(a)
    elif rule == "bp_above_target":
        extra = bp_values(a)
    elif rule == "tests_due":  # [2.1] monitoring_due and acr_test as one card
        last_acr = next((u for u in reversed(s.urine) if u.kind is UrineKind.ACR), None)
        monitoring = monitoring_text(a)
        latest = monitoring["latest"]
        extra = {
            **monitoring,
            "last_acr": last_acr.date.isoformat() if last_acr else None,
            "acr_days": (s.as_of - last_acr.date).days if last_acr else None,
            "latest_days": (s.as_of - date.fromisoformat(latest)).days if latest else None,
        }
    else:
        raise KeyError(rule)
    return {**common, **extra}
