"""The renal dosing engine (renal dosing spec RD-2, RD-3, RD-5.4–5.6, RD-6, RD-7.4 a): pure functions of typed inputs.

One `Line` per checked order and matching enabled row (RD-9.3); the CDS services, the cards and `ckd-cds dose` all
read the same lines. Nothing is rounded before a comparison (RD-3.6); cards round for display only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.clinical.dosing.products import Product, ProductTable
from service.clinical.dosing.table import EPS, Band, DrugTable, Entry, InvariantError, Regimen, Row
from service.clinical.equations import Sex, egfr_ckd_epi_2021_cr

DOSE_EPS = 1e-6  # RD-6.5 (d), RD-6.6, RD-7.4: dose comparisons
VTE_RECENT_DAYS = 183  # RD-2.7: "within 6 months" (review decision 1)
ADULT_AGE = 18
REASON_ORDER = ("deceased", "under_18", "dialysis", "no_age", "no_sex", "no_scr", "scr_stale", "aki", "no_weight",
                "no_height", "dose_unreadable")  # fmt: skip
COUNT_UNITS = frozenset({"", "1", "tab", "tabs", "tablet", "tablets", "tbl", "cap", "caps", "capsule", "capsules",
                         "pill", "pills", "each", "ea", "dose"})  # fmt: skip
MASS_UNITS = {"mg": 1.0, "g": 1000.0, "mcg": 0.001, "ug": 0.001}
MAX_MG = 1e7  # 10 kg in one administration: a typing or unit error, read as unreadable (no label dose is near it)


# --- inputs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Creatinine:
    """L of RD-2.3: the latest element of C (clinical spec S4), its date and AKI flag (S5)."""

    mg_dl: float
    date: date
    aki: bool = False
    shown: str = ""  # as reported, for cards: "1.6 mg/dL", "120 µmol/L"

    @property
    def text(self) -> str:
        return self.shown or f"{decimals(self.mg_dl, 2)} mg/dL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    value: float
    date: date


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientFacts:
    """What the engine knows about the patient (RD-2). `active`: ingredient -> ids of the active or on-hold
    MedicationRequests that contain it (None for an id-less one, or the CLI's facts form)."""

    age: float | None
    sex: Sex | None
    scr: Creatinine | None = None
    egfr_reported: float | None = None  # the CLI facts form's `egfr` (RD-9.2), used by egfr rows
    egfr_date: date | None = None  # its date and AKI flag: those of L (RD-9.2)
    egfr_aki: bool = False
    weight: Measured | None = None  # kg, the latest (validity is checked here, RD-2.4)
    height: Measured | None = None  # cm
    dialysis: bool = False
    af: bool = False
    vte_date: date | None = None
    active: dict[str, frozenset[str | None]] = field(default_factory=dict)
    deceased: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DoseEntry:
    """One dosageInstruction entry: dose value and normalised unit (RD-5.4), administrations per day (RD-5.5; None
    when unreadable) and its `sequence`."""

    value: float | None
    unit: str | None  # normalised: lower case, no spaces, µ -> u, {…} removed; None: no dose at all
    per_day: float | None
    sequence: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    position: int  # 0-based among the checked MedicationRequests (or `orders` of the facts form)
    id: str | None
    rxnorm: str | None  # the code used (a table product or ingredient code), else the first RxNorm code
    ingredients: tuple[str, ...]  # lower-case, in evidence order
    strengths: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # mg per unit, mg/mL
    form: str = ""  # the table product's dose form, or the words found in the display (RD-5.3)
    form_from_table: bool = False
    name: str = ""  # the product name or display, for cards (escaped there)
    entries: tuple[DoseEntry, ...] = ()
    reason_vte: bool = False
    reason_af: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """`renal_dosing.*` of the admin configuration (RD-10.1) that the engine reads."""

    weight_max_age_days: int = 90
    height_max_age_days: int = 1825
    scr_max_age_days: int = 365
    crcl_weight: str = "actual"  # or "adjusted_if_obese"
    scr_floor_mg_dl: float | None = None
    suggestions: bool = True


# --- equations (RD-3) ----------------------------------------------------------------------------------------------


def cockcroft_gault(age: float, weight_kg: float, scr_mg_dl: float, sex: Sex) -> float:
    """Cockcroft DW, Gault MH. Nephron 1976;16:31–41: (140 − age) × weight / (72 × SCr), × 0.85 if female (mL/min)."""
    crcl = (140 - age) * weight_kg / (72 * scr_mg_dl)
    return crcl * 0.85 if sex is Sex.FEMALE else crcl


def ideal_body_weight(height_cm: float, sex: Sex) -> float:
    """Devine BJ. Drug Intell Clin Pharm 1974;8:650–5: 50 kg (male) or 45.5 kg (female) + 2.3 kg per inch over 60."""
    return (50.0 if sex is Sex.MALE else 45.5) + 2.3 * (height_cm / 2.54 - 60)


def adjusted_body_weight(actual: float, ibw: float) -> float:
    """AdjBW = IBW + 0.4 × (actual − IBW) (RD-3.2)."""
    return ibw + 0.4 * (actual - ibw)


def obese(actual: float, height_cm: float, sex: Sex) -> bool:
    """RD-3.2 (review D18): actual > 1.2 × max(IBW, base), base 50 kg (male) or 45.5 kg (female)."""
    base = 50.0 if sex is Sex.MALE else 45.5
    return actual > 1.2 * max(ideal_body_weight(height_cm, sex), base) + EPS


def bsa_mosteller(weight_kg: float, height_cm: float) -> float:
    """Mosteller RD. N Engl J Med 1987;317:1098: √(weight × height / 3600), m²."""
    return math.sqrt(weight_kg * height_cm / 3600)


def days(a: date, b: date) -> int:
    return (b - a).days


def decimals(x: float, n: int) -> str:
    """At most n decimals, trailing zeros dropped ("1.6", "1.36", "58")."""
    text = f"{x:.{n}f}".rstrip("0").rstrip(".")
    return text or "0"


def floor1(x: float) -> str:
    """RD-7.3 {v}: ⌊(x + 1e-9) × 10⌋ / 10 with one decimal (29.96 -> "29.9")."""
    return f"{math.floor((x + 1e-9) * 10) / 10:.1f}"


# --- output --------------------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Alt:
    weight_basis: str
    weight_kg: float
    crcl_ml_min: float
    measure_value: float
    band: str | None


@dataclass(slots=True, kw_only=True)
class Criterion:
    name: str  # "age", "weight", "creatinine"
    state: str  # "met", "not met", "unknown"


@dataclass(slots=True, kw_only=True)
class DoseReading:
    daily_mg: float | None
    mg_per_admin: float | None  # single entry only
    per_day: float | None  # single entry only
    count: float | None  # RD-5.6 n, single entry only
    entries: int
    phases: int
    frequency_unreadable: bool

    @property
    def readable(self) -> bool:
        return self.daily_mg is not None


@dataclass(slots=True, kw_only=True)
class Line:
    """One RD-9.3 output line, with what the cards also need (`row`, `band`, `order` objects and the evidence)."""

    order: Order
    ingredient: str | None
    row: Row | None = None
    rule_id: str | None = None
    measure_value: float | None = None
    crcl_ml_min: float | None = None
    crcl_indexed: float | None = None
    egfr: float | None = None
    egfr_ml_min: float | None = None
    apixaban_criteria_met: int | None = None
    weight_kg: float | None = None
    weight_basis: str | None = None
    alt: Alt | None = None
    band: str | None = None
    action: str = "no_rule"
    indicator: str | None = None
    hedged: bool = False
    hedge_reason: str | None = None  # "vte_reason", "phases", "non_af_regimen", "recent_vte", "no_af", "gout"
    dose: DoseReading | None = None
    recommended: str | None = None
    suggested: Product | None = None
    reasons: list[str] = field(default_factory=list)
    # evidence for cards
    band_obj: Band | None = None
    entry: Entry | None = None
    unreliable: bool = False  # the band was kept from a stale or AKI-flagged creatinine (RD-6.5 c)
    floor_used: float | None = None  # the creatinine floor, when it changed SCr for Cockcroft–Gault
    bsa: float | None = None
    criteria: list[Criterion] = field(default_factory=list)
    continuing: bool = False

    def required_row(self) -> Row:
        """The drug table row of a line that has a rule (every card line does); InvariantError otherwise."""
        if self.row is None:
            raise InvariantError("row is missing")
        return self.row

    def as_json(self) -> dict[str, Any]:
        """RD-9.3: every key present, numbers unrounded."""
        dose = self.dose
        return {
            "order": self.order.position, "order_id": self.order.id, "rxnorm": self.order.rxnorm,
            "ingredient": self.ingredient, "row": self.row.id if self.row else None, "rule_id": self.rule_id,
            "measure": self.row.measure if self.row else None, "measure_value": self.measure_value,
            "crcl_ml_min": self.crcl_ml_min, "crcl_indexed": self.crcl_indexed, "egfr": self.egfr,
            "egfr_ml_min": self.egfr_ml_min, "apixaban_criteria_met": self.apixaban_criteria_met,
            "weight_kg": self.weight_kg, "weight_basis": self.weight_basis,
            "alt": None if self.alt is None else {
                "weight_basis": self.alt.weight_basis, "weight_kg": self.alt.weight_kg,
                "crcl_ml_min": self.alt.crcl_ml_min, "measure_value": self.alt.measure_value, "band": self.alt.band},
            "band": self.band, "action": self.action, "indicator": self.indicator, "hedged": self.hedged,
            "dose_mg_per_day": dose.daily_mg if dose else None, "recommended": self.recommended,
            "suggested_rxnorm": self.suggested.rxcui if self.suggested else None,
            "reasons": sorted(set(self.reasons), key=REASON_ORDER.index),
        }  # fmt: skip


# --- dose (RD-5.4 to RD-5.6) ---------------------------------------------------------------------------------------


def mg_per_administration(entry: DoseEntry, order: Order, ingredient: str) -> tuple[float | None, float | None]:
    """(mg of the ingredient per administration, count of units) of one entry, or (None, None) when unreadable
    (also a dose too large to be one: beyond MAX_MG)."""
    mg, count = _mg_per_administration(entry, order, ingredient)
    if mg is None or not math.isfinite(mg) or mg > MAX_MG:
        return None, None
    return mg, count


def _mg_per_administration(entry: DoseEntry, order: Order, ingredient: str) -> tuple[float | None, float | None]:
    if entry.value is None or entry.unit is None or entry.value <= 0:
        return None, None
    strength, concentration = order.strengths.get(ingredient, (None, None))
    unit = entry.unit
    if unit in MASS_UNITS:
        if len(order.ingredients) > 1:
            return None, None  # an mg dose of a combination product: which ingredient is meant?
        mg = entry.value * MASS_UNITS[unit]
        return mg, (mg / strength if strength else None)
    if unit == "ml":
        return (entry.value * concentration, None) if concentration else (None, None)
    if unit in COUNT_UNITS:
        return (entry.value * strength, entry.value) if strength else (None, None)
    return None, None


def read_dose(order: Order, ingredient: str) -> DoseReading:
    """RD-5.6: per entry mg × administrations per day; entries with one `sequence` (or all without) are summed, phases
    (different sequences) give the largest; any unreadable entry makes the order's dose unreadable."""
    entries = order.entries
    phases: dict[int | None, float] = {}
    unreadable = not entries
    freq_unreadable = False
    single_mg = single_count = None
    for entry in entries:
        mg, count = mg_per_administration(entry, order, ingredient)
        if entry.per_day is None:
            freq_unreadable = True
        if mg is None or entry.per_day is None:
            unreadable = True
            continue
        phases[entry.sequence] = phases.get(entry.sequence, 0.0) + mg * entry.per_day
        if len(entries) == 1:
            single_mg, single_count = mg, count
    n_phases = len({e.sequence for e in entries})
    one = entries[0] if len(entries) == 1 else None
    return DoseReading(
        daily_mg=None if unreadable else max(phases.values()),
        mg_per_admin=single_mg, per_day=one.per_day if one else None, count=single_count if one else None,
        entries=len(entries), phases=n_phases, frequency_unreadable=freq_unreadable,
    )  # fmt: skip


# --- evaluation (RD-6) ---------------------------------------------------------------------------------------------


def rows_for(order: Order, table: DrugTable, age: float | None) -> list[tuple[Row, str]]:
    """RD-6.1: enabled rows, in table order, listing one of the order's ingredients, unless excluded by form or age."""
    form_words = set(order.form.lower().replace("-", " ").split())
    out = []
    for row in table.enabled:
        ingredient = next((i for i in order.ingredients if i in row.ingredients), None)
        if ingredient is None:
            continue
        if any(w in form_words or w in order.form.lower().split() for w in row.exclude_forms):
            continue
        if row.min_age is not None and age is not None and age < row.min_age - EPS:
            continue
        out.append((row, ingredient))
    return out


def hedge(row: Row, order: Order, dose: DoseReading, patient: PatientFacts, as_of: date) -> str | None:
    """RD-6.6: the first hedge reason, or None."""
    if row.indication == "gout_prophylaxis":
        return "gout"
    if row.indication != "af":
        return None
    if order.reason_vte:
        return "vte_reason"
    if dose.phases > 1:
        return "phases"
    if (
        dose.entries == 1
        and dose.mg_per_admin is not None
        and dose.per_day is not None
        and any(
            abs(dose.mg_per_admin - r.dose_mg) <= DOSE_EPS and abs(dose.per_day - r.per_day) <= DOSE_EPS
            for r in row.non_af_regimens
        )
    ):
        return "non_af_regimen"
    if patient.vte_date is not None and patient.vte_date <= as_of and days(patient.vte_date, as_of) <= VTE_RECENT_DAYS:
        return "recent_vte"
    if not (patient.af or order.reason_af):
        return "no_af"
    return None


def indicator(line: Line, row: Row) -> str | None:
    """RD-6.7."""
    action = line.action
    if action in ("insufficient_data", "not_assessed", "underdose"):
        return "info"
    if action == "ok":
        differs = line.alt is not None and line.alt.band != line.band and row.weight == "site" and line.band
        return "info" if differs else None
    if action == "no_rule":
        return None
    own = "critical" if action == "contraindicated" else "warning"
    if not line.hedged:
        return own
    if action == "reduce":
        return "info"
    kept = line.band in ("dialysis", "aki") or (
        line.band_obj is not None and row.is_floor(line.band_obj, line.continuing)
    )
    return own if kept else "info"


def _dose_check(line: Line, row: Row, regimen: Regimen | None, cap: float | None, action: str) -> None:
    """RD-6.5 (d): the action of a band or entry against the order's daily dose."""
    dose = line.dose
    if dose is None:
        raise InvariantError("dose is missing")
    if action in ("avoid", "contraindicated"):
        line.action = action
        return
    if regimen is None and cap is None:
        line.action = action  # ok; or a dose-independent reduce (disabled rows only)
        return
    if not dose.readable or dose.daily_mg is None:
        line.action = "insufficient_data"
        line.reasons.append("dose_unreadable")
        return
    if regimen is not None:
        target = regimen.dose_mg * regimen.per_day
        if dose.daily_mg > target + DOSE_EPS:
            line.action = "reduce"
        elif dose.daily_mg < target - DOSE_EPS:
            line.action = "underdose" if row.anticoagulant else "ok"
        else:
            line.action = "ok"
        return
    if cap is None:
        raise InvariantError("cap is missing")
    line.action = "reduce" if dose.daily_mg > cap + DOSE_EPS else "ok"


@dataclass(slots=True, kw_only=True)
class _Measure:
    value: float | None = None
    reasons: list[str] = field(default_factory=list)
    blocking: bool = False


def _weights(row: Row, patient: PatientFacts, settings: Settings, as_of: date) -> tuple[
        float | None, str | None, tuple[str, float] | None, list[str]]:  # fmt: skip
    """The weight for Cockcroft–Gault and its basis, the other weight for an obese patient, and the reasons."""
    reasons: list[str] = []
    w = patient.weight
    if w is None or days(w.date, as_of) > settings.weight_max_age_days:
        return None, None, None, ["no_weight"]
    h = valid_height(patient, settings, as_of)
    actual = w.value
    if patient.sex is None:
        return actual, "actual", None, reasons
    is_obese = h is not None and obese(actual, h.value, patient.sex)
    adjusted = adjusted_body_weight(actual, ideal_body_weight(h.value, patient.sex)) if h is not None else None
    if row.weight == "actual" or settings.crcl_weight == "actual":
        if settings.crcl_weight == "adjusted_if_obese" and row.weight != "actual" and h is None:
            reasons.append("no_height")
        alt = ("adjusted", adjusted) if is_obese and adjusted is not None else None
        return actual, "actual", alt, reasons
    if h is None:
        return actual, "actual", None, ["no_height"]
    if is_obese and adjusted is not None:
        return adjusted, "adjusted", ("actual", actual), reasons
    return actual, "actual", None, reasons


def valid_height(patient: PatientFacts, settings: Settings, as_of: date) -> Measured | None:
    h = patient.height
    return h if h is not None and days(h.date, as_of) <= settings.height_max_age_days else None


def _crcl(patient: PatientFacts, scr: float, weight: float) -> float:
    if patient.age is None:
        raise InvariantError("patient.age is missing")
    if patient.sex is None:
        raise InvariantError("patient.sex is missing")
    return cockcroft_gault(patient.age, weight, scr, patient.sex)


def _measure(line: Line, row: Row, patient: PatientFacts, settings: Settings, as_of: date) -> _Measure:
    """RD-3 and RD-6.5 (a): the row's measure, filled into the line, and the reasons."""
    m = _Measure()
    scr = patient.scr
    has_egfr = row.measure == "egfr" and patient.egfr_reported is not None
    if scr is None and not has_egfr:
        m.reasons.append("no_scr")
    else:
        when = scr.date if scr is not None else patient.egfr_date
        limit = row.scr_max_age_days or settings.scr_max_age_days
        if when is not None and days(when, as_of) > limit:
            m.reasons.append("scr_stale")
        if scr.aki if scr is not None else patient.egfr_aki:
            m.reasons.append("aki")
    if patient.sex is None and not has_egfr:
        m.reasons.append("no_sex")
    age = patient.age
    if age is None:
        raise InvariantError("age is missing")
    if row.measure in ("crcl", "crcl_indexed"):
        weight, basis, alt, why = _weights(row, patient, settings, as_of)
        m.reasons += why
        h = valid_height(patient, settings, as_of)
        if row.measure == "crcl_indexed" and h is None and "no_height" not in m.reasons:
            m.reasons.append("no_height")
        m.blocking = any(r in m.reasons for r in ("no_sex", "no_weight")) or (
            row.measure == "crcl_indexed" and "no_height" in m.reasons)  # fmt: skip
        if scr is None or m.blocking or weight is None:
            return m
        scr_cg = scr.mg_dl
        floor = settings.scr_floor_mg_dl
        if floor is not None and row.weight != "actual" and scr_cg < floor - EPS:
            scr_cg = floor
            line.floor_used = floor
        crcl = _crcl(patient, scr_cg, weight)
        line.crcl_ml_min, line.weight_kg, line.weight_basis = crcl, weight, basis
        value = crcl
        bsa = None
        if row.measure == "crcl_indexed":
            if h is None:
                raise InvariantError("h is missing")
            if patient.weight is None:
                raise InvariantError("patient.weight is missing")
            bsa = bsa_mosteller(patient.weight.value, h.value)
            line.bsa = bsa
            value = crcl * 1.73 / bsa
            line.crcl_indexed = value
        if alt is not None:
            alt_crcl = _crcl(patient, scr_cg, alt[1])
            alt_value = alt_crcl * 1.73 / bsa if bsa else alt_crcl
            line.alt = Alt(weight_basis=alt[0], weight_kg=alt[1], crcl_ml_min=alt_crcl, measure_value=alt_value,
                           band=None)  # fmt: skip
        m.value = value
        return m
    if row.measure in ("egfr", "egfr_absolute"):
        if row.measure == "egfr_absolute":
            w = patient.weight
            if w is None or days(w.date, as_of) > settings.weight_max_age_days:
                m.reasons.append("no_weight")
            if valid_height(patient, settings, as_of) is None:
                m.reasons.append("no_height")
            m.blocking = any(r in m.reasons for r in ("no_sex", "no_weight", "no_height"))
        else:
            m.blocking = "no_sex" in m.reasons
        if m.blocking or (scr is None and not has_egfr):
            return m
        if has_egfr:
            if patient.egfr_reported is None:
                raise InvariantError("patient.egfr_reported is missing")
            egfr = patient.egfr_reported
        else:
            if scr is None:
                raise InvariantError("scr is missing")
            if patient.sex is None:
                raise InvariantError("patient.sex is missing")
            egfr = egfr_ckd_epi_2021_cr(scr.mg_dl, age, patient.sex)
        line.egfr = egfr
        value = egfr
        if row.measure == "egfr_absolute":
            h = valid_height(patient, settings, as_of)
            if h is None:
                raise InvariantError("h is missing")
            if patient.weight is None:
                raise InvariantError("patient.weight is missing")
            line.bsa = bsa_mosteller(patient.weight.value, h.value)
            value = egfr * line.bsa / 1.73
            line.egfr_ml_min = value
            line.weight_kg, line.weight_basis = patient.weight.value, "actual"
        m.value = value
        return m
    raise ValueError(f"unknown measure {row.measure}")  # pragma: no cover - the schema allows no other


def _apixaban(line: Line, patient: PatientFacts, settings: Settings, as_of: date) -> tuple[str | None, list[str]]:
    """RD-3.5: 'reduced' when ≥ 2 criteria hold, 'standard' when < 2 could hold, else undecided (None)."""
    if patient.age is None:
        raise InvariantError("patient.age is missing")
    reasons: list[str] = []
    states = [Criterion(name="age", state="met" if patient.age >= 80 - EPS else "not met")]
    w = patient.weight
    if w is None or days(w.date, as_of) > settings.weight_max_age_days:
        reasons.append("no_weight")
        states.append(Criterion(name="weight", state="unknown"))
    else:
        states.append(Criterion(name="weight", state="met" if w.value <= 60 + EPS else "not met"))
        line.weight_kg, line.weight_basis = w.value, "actual"
    scr = patient.scr
    if scr is None:
        reasons.append("no_scr")
        states.append(Criterion(name="creatinine", state="unknown"))
    else:
        limit = (line.row.scr_max_age_days if line.row else None) or settings.scr_max_age_days
        if days(scr.date, as_of) > limit:
            reasons.append("scr_stale")
        if scr.aki:
            reasons.append("aki")
        if "scr_stale" in reasons or "aki" in reasons:
            states.append(Criterion(name="creatinine", state="unknown"))
        else:
            states.append(Criterion(name="creatinine", state="met" if scr.mg_dl >= 1.5 - EPS else "not met"))
    line.criteria = states
    met = sum(c.state == "met" for c in states)
    unknown = sum(c.state == "unknown" for c in states)
    line.apixaban_criteria_met = met
    line.measure_value = met
    if met >= 2:
        return "reduced", reasons
    if met + unknown < 2:
        return "standard", reasons
    return None, reasons


def evaluate_line(order: Order, row: Row, ingredient: str, patient: PatientFacts, table: DrugTable,
                  settings: Settings, products: ProductTable, as_of: date) -> Line:  # fmt: skip
    line = Line(order=order, ingredient=ingredient, row=row)
    dose = read_dose(order, ingredient)
    line.dose = dose
    line.hedge_reason = hedge(row, order, dose, patient, as_of)
    line.hedged = line.hedge_reason is not None
    # RD-6.2 patient stops
    if patient.deceased:
        return _stop(line, row, "not_assessed", "deceased", "deceased")
    if patient.age is None:
        return _stop(line, row, "insufficient_data", "no_age", "insufficient")
    if patient.age < ADULT_AGE - EPS:
        return _stop(line, row, "not_assessed", "under_18", "under18")
    line.continuing = any(order.id is None or ids - {order.id} for i in row.ingredients
                          if (ids := patient.active.get(i)) is not None)  # fmt: skip
    # RD-6.3 dialysis
    if patient.dialysis:
        entry = row.dialysis
        line.band, line.entry, line.recommended = "dialysis", entry, entry.recommended
        line.reasons.append("dialysis")
        if entry.action == "not_assessed":
            line.action = "not_assessed"
        else:
            _dose_check(line, row, None, entry.cap_per_day, entry.action)
        return _finish(line, row, products, settings, reliable=True)
    if row.measure == "apixaban":
        decided, reasons = _apixaban(line, patient, settings, as_of)
        line.reasons += reasons
        if decided is None:
            line.action, line.rule_id = "insufficient_data", f"dose.{row.id}.insufficient"
            return _finish(line, row, products, settings, reliable=False)
        band = row.band_of(float(line.apixaban_criteria_met or 0), line.continuing)
        return _in_band(line, row, band, products, settings, reliable=True)
    m = _measure(line, row, patient, settings, as_of)
    line.reasons += m.reasons
    line.measure_value = m.value
    if m.value is None:
        line.action, line.rule_id = "insufficient_data", f"dose.{row.id}.insufficient"
        return _finish(line, row, products, settings, reliable=False)
    band = row.band_of(m.value, line.continuing)
    if line.alt is not None:
        alt_band = row.band_of(line.alt.measure_value, line.continuing)
        line.alt.band = alt_band.id if alt_band else None
    unreliable = "scr_stale" in m.reasons or "aki" in m.reasons
    if unreliable:
        if band is not None and row.is_floor(band, line.continuing):
            line.unreliable = True
            return _in_band(line, row, band, products, settings, reliable=False)
        if "aki" in m.reasons and row.aki is not None:
            entry = row.aki
            line.band, line.entry, line.recommended = "aki", entry, entry.recommended
            _dose_check(line, row, None, entry.cap_per_day, entry.action)
            line.unreliable = True
            return _finish(line, row, products, settings, reliable=False)
        line.action, line.rule_id = "insufficient_data", f"dose.{row.id}.insufficient"
        return _finish(line, row, products, settings, reliable=False)
    return _in_band(line, row, band, products, settings, reliable=True)


def _stop(line: Line, row: Row, action: str, reason: str, suffix: str) -> Line:
    line.action, line.rule_id, line.reasons = action, f"dose.{row.id}.{suffix}", [reason]
    line.indicator = "info" if reason != "deceased" else None
    return line


def _in_band(line: Line, row: Row, band: Band | None, products: ProductTable, settings: Settings,
             *, reliable: bool) -> Line:  # fmt: skip
    if band is None:  # pragma: no cover - validated tables partition [0, ∞)
        line.action, line.rule_id = "insufficient_data", f"dose.{row.id}.insufficient"
        return _finish(line, row, products, settings, reliable=False)
    line.band, line.band_obj, line.recommended = band.id, band, band.recommended
    _dose_check(line, row, band.regimen, band.cap_per_day, band.action)
    return _finish(line, row, products, settings, reliable=reliable)


def _finish(line: Line, row: Row, products: ProductTable, settings: Settings, *, reliable: bool) -> Line:
    if line.rule_id is None:
        line.rule_id = f"dose.{row.id}.{line.band}" if line.band else f"dose.{row.id}.insufficient"
    line.indicator = indicator(line, row)
    dose = line.dose
    if (line.action == "reduce" and not line.hedged and reliable and not line.unreliable and dose is not None
            and dose.entries == 1 and settings.suggestions):  # fmt: skip
        line.suggested = suggested_product(line, products)
    return line


def _form_matches(order: Order, candidate: Product) -> bool:
    if not order.form:
        return True
    if order.form_from_table:
        return candidate.form == order.form
    words = order.form.split()
    released = "release" in candidate.form or "once-daily" in candidate.form
    return all(w in candidate.form for w in words) and (released == ("release" in order.form))


def suggested_product(line: Line, products: ProductTable) -> Product | None:
    """RD-7.4 (a): for a regimen band the SCD of the regimen's strength; for a cap band the largest lower strength
    that keeps the tablet count and frequency within the cap (and at or above the band's `min_mg_per_day`)."""
    ingredient, dose, order = line.ingredient, line.dose, line.order
    if ingredient is None:
        raise InvariantError("ingredient is missing")
    if dose is None:
        raise InvariantError("dose is missing")
    candidates = [p for p in products.single_ingredient_scds(ingredient, None) if _form_matches(order, p)]
    band, entry = line.band_obj, line.entry
    regimen = band.regimen if band else None
    if regimen is not None:
        same = [p for p in candidates if abs((p.components[0].strength or 0) - regimen.dose_mg) < DOSE_EPS]
        return min(same, key=lambda p: p.rxcui) if same else None
    cap = band.cap_per_day if band else (entry.cap_per_day if entry else None)
    floor = band.min_mg_per_day if band else (entry.min_mg_per_day if entry else None)
    strength = order.strengths.get(ingredient, (None, None))[0]
    if cap is None or strength is None or dose.count is None or dose.per_day is None:
        return None
    n, f = dose.count, dose.per_day
    fitting = [p for p in candidates
               if (s := p.components[0].strength or 0) < strength - DOSE_EPS and s * n * f <= cap + DOSE_EPS
               and (floor is None or s * n * f >= floor - DOSE_EPS)]  # fmt: skip
    if not fitting:
        return None
    best = max(p.components[0].strength or 0 for p in fitting)
    return min((p for p in fitting if abs((p.components[0].strength or 0) - best) < DOSE_EPS), key=lambda p: p.rxcui)


def evaluate(orders: list[Order], patient: PatientFacts, table: DrugTable, settings: Settings,
             products: ProductTable, as_of: date) -> list[Line]:  # fmt: skip
    """RD-6: one line per order and matching enabled row, in order and table order; `no_rule` when no row matches."""
    lines = []
    for order in orders:
        matched = rows_for(order, table, patient.age)
        if not matched:
            lines.append(Line(order=order, ingredient=order.ingredients[0] if order.ingredients else None))
            continue
        for row, ingredient in matched:
            lines.append(evaluate_line(order, row, ingredient, patient, table, settings, products, as_of))
    return lines
