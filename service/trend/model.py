"""The kidney trend view's data (issue #23), built from the assessment the cards are built from, so the picture and
the cards cannot disagree: the same eGFR values, flags, trend, stage, KFRE and recommendations.

Pure: an assessment and its patient record in, plain dataclasses out (the page and its tables render them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from cards.builder import CardRequest, build_card, wanted_cards
from cards.views import common_variables, egfr_text
from service.clinical.assess import Assessment
from service.clinical.categories import DIPSTICK_CATEGORY, ratio_a_stage
from service.clinical.record import PatientRecord, UrineKind
from service.clinical.staging import AkiCriterion, AkiFinding, EgfrPoint, computed_egfrs
from service.fhir.timeline import DrugSpan

WINDOW_DAYS = 3652  # up to 10 years of results (issue #23)
G_BANDS = ((90.0, None, "G1"), (60.0, 90.0, "G2"), (45.0, 60.0, "G3a"), (30.0, 45.0, "G3b"), (15.0, 30.0, "G4"),
           (0.0, 15.0, "G5"))  # KDIGO 2012 Table 5 (mL/min/1.73 m²)  # fmt: skip
G_LINES = (60.0, 30.0, 15.0)  # the CKD, G4 and kidney-failure thresholds drawn across the chart
AKI_WHY = {
    AkiCriterion.ABSOLUTE_RISE: "creatinine rose by 0.3 mg/dL or more within 2 days (from {v} mg/dL on {d})",
    AkiCriterion.RELATIVE_RISE: "creatinine rose to 1.5 times or more within 7 days (from {v} mg/dL on {d})",
    AkiCriterion.CODED: "within the window of an acute kidney injury diagnosis (onset {d})",
    AkiCriterion.BASELINE_RISE: "creatinine 1.5 times or more the median of the previous year ({v} mg/dL)",
    AkiCriterion.AKD_WINDOW: "within 90 days of a possible AKI, still 1.5 times or more that episode's baseline",
}  # clinical spec S5 (a)–(e), in the cards' words


@dataclass(frozen=True, slots=True, kw_only=True)
class EgfrMark:
    """One eGFR; shown as the cards show it (cards.views.egfr_text: floored, so never across a cut-off)."""

    date: date
    value: float  # mL/min/1.73 m², unrounded
    source: str  # "computed" (from creatinine) or "reported" (laboratory eGFR)
    equation: str
    creatinine: float | None  # mg/dL, computed values
    comparator: str | None = None  # a laboratory's "<" or ">" (e.g. ">90")
    flag: str | None = None  # "aki": not used for staging (S5); None: a staging value
    why: str = ""  # the flag explained


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflictMark:
    date: date
    results: tuple[float, ...]  # mg/dL, the results of one specimen that do not agree (S4)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trend:
    slope_per_year: float
    ci95: tuple[float, float] | None
    first: date
    last: date
    n: int
    intercept: float  # eGFR at `first` on the fitted line
    x_last: float  # years from `first` to `last` as the trend measures them
    rapid: bool | None
    certain_drop: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UrineMark:
    date: date
    kind: str  # acr, pcr, dipstick
    value: float | None
    unit: str | None
    grade: str | None
    category: str | None  # A1–A3 where the test states one directly


@dataclass(frozen=True, slots=True, kw_only=True)
class TrendView:
    as_of: date
    age: int | None
    sex: str | None
    egfr: list[EgfrMark]
    conflicts: list[ConflictMark]
    trend: Trend | None
    urine: list[UrineMark]
    g_stage: str | None
    a_stage: str | None
    risk: str | None  # the patient's cell of the KDIGO heat map
    ckd: bool
    reason: str
    dialysis: bool
    deceased: bool  # S19: the cards show nothing; the view says so
    kfre_2y: float | None
    kfre_5y: float | None
    mortality_5y: float | None
    systolic: list[tuple[date, float]]
    bp_target: int  # systolic, mm Hg: the card's (the configured target; 130 for a kidney transplant recipient)
    recommendations: list[tuple[str, str, str]]  # card key, indicator and the card's summary, in the cards' order
    older_basis: EgfrMark | None = None  # the eGFR the category rests on, when it is older than the ten years shown
    drugs: tuple[DrugSpan, ...] = ()  # kidney-relevant prescriptions of the window, every status
    focus: str | None = None  # the card key the view was opened from (the card link's appContext)


def aki_why(finding: AkiFinding) -> str:
    d = finding.reference_date.isoformat() if finding.reference_date else "unknown date"
    v = f"{finding.reference_value:.2f}".rstrip("0").rstrip(".") if finding.reference_value is not None else "?"
    return AKI_WHY[finding.criterion].format(d=d, v=v)


def egfr_marks(a: Assessment, record: PatientRecord, since: date) -> list[EgfrMark]:
    """Every eGFR of the window: the staging values (computed and laboratory-reported) and the computed values set
    aside as possible AKI, each with its explanation; by date."""
    s = a.staging
    marks = [EgfrMark(date=p.date, value=p.value, source=p.source, equation=p.equation, creatinine=p.creatinine,
                      comparator=p.comparator.value if p.comparator else None)
             for p in s.valid if p.date >= since]  # fmt: skip
    _, _, by_index = computed_egfrs(record, s.creatinine, s.aki)  # the engine's own eGFR of each element of C
    for i, finding in enumerate(s.aki):
        point = by_index.get(i)
        if finding is None or point is None or point.date < since:
            continue
        marks.append(EgfrMark(date=point.date, value=point.value, source="computed", equation=point.equation,
                              creatinine=point.creatinine, flag="aki", why=aki_why(finding)))  # fmt: skip
    return sorted(marks, key=lambda m: (m.date, m.flag is not None))


def urine_marks(a: Assessment, since: date) -> list[UrineMark]:
    out = []
    for u in a.staging.urine:
        if u.date < since:
            continue
        category = None
        if u.kind is not UrineKind.DIPSTICK and u.value is not None and u.unit is not None:
            category = ratio_a_stage(u.kind, u.unit, u.value).value  # the category it states (spec §3.3)
        elif u.grade is not None and u.grade in DIPSTICK_CATEGORY:
            category = DIPSTICK_CATEGORY[u.grade].value
        out.append(UrineMark(date=u.date, kind=u.kind.value, value=u.value, unit=u.unit.value if u.unit else None,
                             grade=u.grade, category=category))  # fmt: skip
    return out


def older_basis(point: EgfrPoint | None, since: date) -> EgfrMark | None:
    """The staging eGFR when it lies before the window: the page says so rather than show a stage with no value."""
    if point is None or point.date >= since:
        return None
    comparator = point.comparator.value if point.comparator else None
    return EgfrMark(date=point.date, value=point.value, source=point.source, equation=point.equation,
                    creatinine=point.creatinine, comparator=comparator)  # fmt: skip


def recommendations(a: Assessment) -> list[tuple[str, str, str]]:
    """Every card the patient-view service would show, with its summary: built by the cards' own code (not capped by
    `cards.max_cards`, not filtered by override memory: the view shows the whole picture)."""
    wanted = wanted_cards(a)
    if not wanted:
        return []
    common = common_variables(a)
    request = CardRequest(patient_id="", hook_instance="trend-view", service_id="ckd-patient-view", config_version="")
    return [(key, indicator.value, build_card(key, indicator, a, request, common)["summary"])
            for key, indicator in wanted]  # fmt: skip


def trend_view(a: Assessment, record: PatientRecord, drugs: tuple[DrugSpan, ...] = (),
               focus: str | None = None) -> TrendView:  # fmt: skip
    s = a.staging
    since = s.as_of - timedelta(days=WINDOW_DAYS)
    p = s.progression
    trend = None
    if p is not None and p.trajectory is not None:
        t = p.trajectory
        trend = Trend(slope_per_year=t.slope_per_year, ci95=t.ci95, first=t.first, last=t.last, n=t.n,
                      intercept=t.intercept, x_last=t.x_last, rapid=p.rapid, certain_drop=p.certain_drop)  # fmt: skip
    conflicts = [ConflictMark(date=c.date, results=tuple(r.value for r in c.results)) for c in s.conflicts
                 if c.date >= since]  # fmt: skip
    return TrendView(
        as_of=s.as_of, age=s.age_now, sex=s.sex.value if s.sex else None, egfr=egfr_marks(a, record, since),
        conflicts=conflicts, trend=trend, urine=urine_marks(a, since),
        g_stage=s.g_stage.value if s.g_stage else None, a_stage=s.a_stage.value if s.a_stage else None,
        risk=s.kdigo_risk.value if s.kdigo_risk else None, ckd=s.ckd, reason=s.reason.value, dialysis=s.dialysis,
        deceased=s.deceased,
        kfre_2y=a.kfre.risk_2y if a.kfre else None, kfre_5y=a.kfre.risk_5y if a.kfre else None,
        mortality_5y=a.mortality_5y,
        systolic=[(r.date, r.value) for r in record.systolic if r.date >= since],
        bp_target=130 if s.kidney_transplant else a.context.thresholds.bp.systolic_target,  # KDIGO 2021, as the card
        recommendations=recommendations(a),
        older_basis=older_basis(s.egfr, since),
        drugs=tuple(d for d in drugs if not d.ended or (d.end or d.start or s.as_of) >= since),
        focus=focus,
    )  # fmt: skip


def shown_egfr(m: EgfrMark) -> str:
    """The number the cards print for this eGFR (same function), with the laboratory's comparator."""
    return f"{m.comparator or ''}{egfr_text(m.value)}"
