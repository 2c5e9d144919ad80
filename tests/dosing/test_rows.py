"""Every enabled row of the drug table at and around each of its thresholds (renal dosing spec RD-4.3, Appendix A).

Values are derived by hand from the cited label or guideline, not printed by the code:

- CrCl rows use a 68-year-old man with creatinine 1.0 mg/dL, so Cockcroft–Gault gives
  (140 − 68) × W / (72 × 1.0) = W mL/min: the weight *is* the CrCl, and a threshold T is tested with W = T, T ± 0.1.
- eGFR rows use the facts form's reported `egfr` (RD-9.2), which the engine compares as given.
- The indexed-CrCl row (levetiracetam) uses 90 kg and 160 cm: BSA = √(90 × 160 / 3600) = 2 m² (Mosteller), so
  CrCl/1.73 m² = (72 × 90 / (72 × SCr)) × 1.73 / 2 = 77.85 / SCr.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.clinical.dosing.config import dosing_table, engine_settings
from service.clinical.dosing.engine import evaluate
from service.clinical.dosing.facts import order_from_facts, patient_from_facts
from service.clinical.dosing.products import product_table
from service.clinical.thresholds import Thresholds

AS_OF = date(2026, 12, 1)
RECENT = "2026-11-20"


def run(patient: dict[str, Any], order: dict[str, Any], thresholds: Thresholds | None = None) -> dict[str, Any]:
    t = thresholds or Thresholds()
    table, products = dosing_table(t), product_table()
    facts = patient_from_facts({"scr_date": RECENT, "weight_date": RECENT, **patient}, AS_OF)
    lines = evaluate([order_from_facts(0, {"id": "o1", **order}, table, products)], facts, table, engine_settings(t),
                     products, AS_OF)  # fmt: skip
    assert len(lines) == 1
    return lines[0].as_json()


def crcl_patient(crcl: float, **extra: Any) -> dict[str, Any]:
    """CrCl = weight for a 68-year-old man with creatinine 1.0 mg/dL (see the module docstring)."""
    return {"age": 68, "sex": "male", "scr_mg_dl": 1.0, "weight_kg": crcl, **extra}


# (row, order, CrCl, band, action) -- the bands and edges of Appendix A, action with the order's dose
CRCL_CASES = [
    # rivaroxaban (Xarelto US label: CrCl ≤ 50 and dialysis 15 mg; EU SmPC < 15 avoid), AF on record
    ("rivaroxaban", {"rxnorm": "1232086", "count": 1, "per_day": 1}, 50.1, "gt50", "ok"),
    ("rivaroxaban", {"rxnorm": "1232086", "count": 1, "per_day": 1}, 50.0, "15to50", "reduce"),
    ("rivaroxaban", {"rxnorm": "1232082", "count": 1, "per_day": 1}, 50.0, "15to50", "ok"),
    ("rivaroxaban", {"rxnorm": "1232082", "count": 1, "per_day": 1}, 15.0, "15to50", "ok"),
    ("rivaroxaban", {"rxnorm": "1232082", "count": 1, "per_day": 1}, 14.9, "lt15", "avoid"),
    # dabigatran (Pradaxa: > 30 150 mg BID, 15–30 75 mg BID, < 15 avoid)
    ("dabigatran", {"rxnorm": "1037045", "count": 1, "per_day": 2}, 30.1, "gt30", "ok"),
    ("dabigatran", {"rxnorm": "1037045", "count": 1, "per_day": 2}, 30.0, "15to30", "reduce"),
    ("dabigatran", {"rxnorm": "1037179", "count": 1, "per_day": 2}, 15.0, "15to30", "ok"),
    ("dabigatran", {"rxnorm": "1037179", "count": 1, "per_day": 2}, 14.9, "lt15", "avoid"),
    # edoxaban (Savaysa: > 95 avoid, > 50–95 60 mg, 15–50 30 mg, < 15 avoid)
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 60, "count": 1, "per_day": 1}, 95.1, "gt95", "avoid"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 60, "count": 1, "per_day": 1}, 95.0, "50to95", "ok"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 60, "count": 1, "per_day": 1}, 50.1, "50to95", "ok"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 60, "count": 1, "per_day": 1}, 50.0, "15to50", "reduce"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 30, "count": 1, "per_day": 1}, 15.0, "15to50", "ok"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 30, "count": 1, "per_day": 1}, 14.9, "lt15", "avoid"),
    # gabapentin (Neurontin Table 1: ≥ 60; > 30–59 400–1400; > 15–29 200–700; 15: 100–300), 300 mg TID = 900 mg/day
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 3}, 60.0, "ge60", "ok"),
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 3}, 59.9, "30to60", "ok"),
    ("gabapentin", {"rxnorm": "310431", "count": 2, "per_day": 3}, 59.9, "30to60", "reduce"),  # 1800 > 1400
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 3}, 30.1, "30to60", "ok"),
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 3}, 30.0, "15to30", "reduce"),  # 900 > 700
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 2}, 15.1, "15to30", "ok"),  # 600 ≤ 700
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 1}, 15.0, "le15", "ok"),  # 300 ≤ 300
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 2}, 15.0, "le15", "reduce"),  # 600 > 300
    # pregabalin (Lyrica: ≥ 60; 30–60 max 300; 15–30 max 150 (30 takes the lower cap, D12); < 15 max 75)
    ("pregabalin", {"rxnorm": "483440", "count": 1, "per_day": 2}, 60.0, "ge60", "ok"),
    ("pregabalin", {"rxnorm": "483440", "count": 1, "per_day": 2}, 59.9, "30to60", "ok"),  # 300 ≤ 300
    ("pregabalin", {"rxnorm": "483440", "count": 1, "per_day": 2}, 30.0, "15to30", "reduce"),  # 300 > 150
    ("pregabalin", {"rxnorm": "483450", "count": 1, "per_day": 2}, 15.0, "15to30", "ok"),  # 150 ≤ 150
    ("pregabalin", {"rxnorm": "483450", "count": 1, "per_day": 2}, 14.9, "lt15", "reduce"),  # 150 > 75
    # nitrofurantoin (label: contraindicated < 60; Beers 2019 avoid < 30)
    ("nitrofurantoin", {"rxnorm": "311992", "count": 1, "per_day": 2}, 60.0, "ge60", "ok"),
    ("nitrofurantoin", {"rxnorm": "311992", "count": 1, "per_day": 2}, 59.9, "30to60", "avoid"),
    ("nitrofurantoin", {"rxnorm": "311992", "count": 1, "per_day": 2}, 30.0, "30to60", "avoid"),
    ("nitrofurantoin", {"rxnorm": "311992", "count": 1, "per_day": 2}, 29.9, "lt30", "contraindicated"),
    # allopurinol (Zyloprim: > 20 usual; 10–20 200 mg/day; 3–< 10 100 mg/day; < 3 100 mg/day)
    ("allopurinol", {"rxnorm": "197320", "count": 1, "per_day": 1}, 20.1, "gt20", "ok"),
    ("allopurinol", {"rxnorm": "197320", "count": 1, "per_day": 1}, 20.0, "10to20", "reduce"),  # 300 > 200
    ("allopurinol", {"rxnorm": "197319", "count": 2, "per_day": 1}, 10.0, "10to20", "ok"),  # 200 ≤ 200
    ("allopurinol", {"rxnorm": "197319", "count": 2, "per_day": 1}, 9.9, "3to10", "reduce"),  # 200 > 100
    ("allopurinol", {"rxnorm": "197319", "count": 1, "per_day": 1}, 3.0, "3to10", "ok"),
    ("allopurinol", {"rxnorm": "197319", "count": 1, "per_day": 1}, 2.9, "lt3", "ok"),
    # NSAIDs (Beers 2023: avoid CrCl < 30)
    ("nsaids", {"rxnorm": "197807", "count": 1, "per_day": 3}, 30.0, "ge30", "ok"),
    ("nsaids", {"rxnorm": "197807", "count": 1, "per_day": 3}, 29.9, "lt30", "avoid"),
    # amiloride (Beers 2023: avoid CrCl < 30)
    ("amiloride", {"ingredient": "amiloride", "strength_mg": 5, "count": 1, "per_day": 1}, 30.0, "ge30", "ok"),
    ("amiloride", {"ingredient": "amiloride", "strength_mg": 5, "count": 1, "per_day": 1}, 29.9, "lt30", "avoid"),
]


@pytest.mark.parametrize(("row", "order", "crcl", "band", "action"), CRCL_CASES)
def test_crcl_rows_at_and_around_each_threshold(row: str, order: dict[str, Any], crcl: float, band: str,
                                                action: str) -> None:  # fmt: skip
    line = run(crcl_patient(crcl, af=True), order)
    assert line["row"] == row
    assert line["crcl_ml_min"] == pytest.approx(crcl, abs=1e-9)
    assert (line["band"], line["action"]) == (band, action)
    assert line["rule_id"] == f"dose.{row}.{band}"


EGFR_CASES = [
    # metformin (FDA 2016: contraindicated < 30; do not start 30–45; continuing 30–45 reassess, max 1000 mg/day)
    ("metformin", {"rxnorm": "861004", "count": 1, "per_day": 2}, 45.0, [], "ge45", "ok"),
    ("metformin", {"rxnorm": "861004", "count": 1, "per_day": 2}, 44.9, [], "30to45_new", "avoid"),
    ("metformin", {"rxnorm": "861004", "count": 1, "per_day": 2}, 44.9, ["metformin"], "30to45", "reduce"),
    ("metformin", {"rxnorm": "861007", "count": 1, "per_day": 2}, 30.0, ["metformin"], "30to45", "ok"),
    ("metformin", {"rxnorm": "861007", "count": 1, "per_day": 2}, 29.9, ["metformin"], "lt30", "contraindicated"),
    # SGLT2 inhibitors (KDIGO 2024 Rec 3.7.1–3.7.3: start at eGFR ≥ 20; continue once started)
    ("sglt2i", {"rxnorm": "1545658", "count": 1, "per_day": 1}, 20.0, [], "ge20", "ok"),
    ("sglt2i", {"rxnorm": "1545658", "count": 1, "per_day": 1}, 19.9, [], "lt20_new", "avoid"),
    ("sglt2i", {"rxnorm": "1545658", "count": 1, "per_day": 1}, 19.9, ["empagliflozin"], "lt20", "ok"),
    # baclofen (Beers 2023 Table 6: avoid at eGFR < 60 in adults 65 or older)
    ("baclofen", {"rxnorm": "197391", "count": 1, "per_day": 3}, 60.0, [], "ge60", "ok"),
    ("baclofen", {"rxnorm": "197391", "count": 1, "per_day": 3}, 59.9, [], "lt60", "avoid"),
]


@pytest.mark.parametrize(("row", "order", "egfr", "active", "band", "action"), EGFR_CASES)
def test_egfr_rows_at_and_around_each_threshold(row: str, order: dict[str, Any], egfr: float, active: list[str],
                                                band: str, action: str) -> None:  # fmt: skip
    line = run({"age": 70, "sex": "female", "egfr": egfr, "active": active}, order)
    assert (line["row"], line["band"], line["action"]) == (row, band, action)
    assert line["egfr"] == egfr


def test_baclofen_applies_from_age_65_only() -> None:
    """Decision 7: the Beers population; a 64-year-old's order matches no row."""
    line = run({"age": 64, "sex": "female", "egfr": 40}, {"rxnorm": "197391", "count": 1, "per_day": 3})
    assert line["action"] == "no_rule"
    assert line["rule_id"] is None


@pytest.mark.parametrize(
    ("target", "band"),
    [(80.1, "gt80"), (80.0, "50to80"), (50.0, "50to80"), (49.9, "30to50"), (30.0, "30to50"), (29.9, "lt30")],
)
def test_levetiracetam_indexed_crcl_edges(target: float, band: str) -> None:
    """Keppra: > 80 normal; 50–80 (80 included, the US label's "Mild 50 to 80") max 2000; 30–< 50 max 1500; < 30
    max 1000 mg/day. 90 kg, 160 cm: BSA 2 m², CrCl/1.73 m² = 77.85 / SCr."""
    line = run({"age": 68, "sex": "male", "scr_mg_dl": 77.85 / target, "weight_kg": 90, "height_cm": 160},
               {"rxnorm": "311289", "count": 1, "per_day": 2})  # fmt: skip
    assert line["crcl_indexed"] == pytest.approx(target, abs=1e-9)
    assert line["band"] == band
    assert line["action"] == "ok"  # 500 mg twice daily = 1000 mg/day, within every band's maximum
    capped = run({"age": 68, "sex": "male", "scr_mg_dl": 77.85 / target, "weight_kg": 90, "height_cm": 160},
                 {"rxnorm": "311289", "count": 3, "per_day": 2})  # 3000 mg/day  # fmt: skip
    assert capped["action"] == ("ok" if band == "gt80" else "reduce")


APIXABAN = {"rxnorm": "1364445", "count": 1, "per_day": 2}  # 5 mg twice daily


@pytest.mark.parametrize(
    ("patient", "met", "band", "action"),
    [
        # US label §2.1: 2.5 mg twice daily with at least two of: age ≥ 80, weight ≤ 60 kg, creatinine ≥ 1.5 mg/dL
        ({"age": 80, "weight_kg": 60, "scr_mg_dl": 1.0}, 2, "reduced", "reduce"),
        ({"age": 79, "weight_kg": 60, "scr_mg_dl": 1.5}, 2, "reduced", "reduce"),
        ({"age": 79, "weight_kg": 60.1, "scr_mg_dl": 1.5}, 1, "standard", "ok"),
        ({"age": 79, "weight_kg": 60.1, "scr_mg_dl": 1.49}, 0, "standard", "ok"),
        ({"age": 85, "weight_kg": 70, "scr_umol_l": 132.6}, 2, "reduced", "reduce"),  # 132.6 / 88.4 = 1.5
        ({"age": 85, "weight_kg": 70, "scr_umol_l": 132.5}, 1, "standard", "ok"),
    ],
)
def test_apixaban_criteria(patient: dict[str, Any], met: int, band: str, action: str) -> None:
    line = run({"sex": "female", "af": True, **patient}, APIXABAN)
    assert (line["apixaban_criteria_met"], line["band"], line["action"]) == (met, band, action)


def test_apixaban_unknown_criterion_decides_only_when_it_cannot_change_the_answer() -> None:
    """RD-3.5: no weight, age 82 and creatinine 1.6: two criteria met, reduced; age 70 and creatinine 1.6: one met
    and one unknown, undecided; age 70 and creatinine 1.0: at most one, standard."""
    assert run({"age": 82, "sex": "male", "scr_mg_dl": 1.6, "af": True}, APIXABAN)["band"] == "reduced"
    undecided = run({"age": 70, "sex": "male", "scr_mg_dl": 1.6, "af": True}, APIXABAN)
    assert (undecided["action"], undecided["rule_id"]) == ("insufficient_data", "dose.apixaban.insufficient")
    assert undecided["reasons"] == ["no_weight"]
    standard = run({"age": 70, "sex": "male", "scr_mg_dl": 1.0, "af": True}, APIXABAN)
    assert (standard["band"], standard["reasons"]) == ("standard", ["no_weight"])


def test_apixaban_underdose_and_vte_start() -> None:
    """Decision 3: 2.5 mg BID with no criterion is underdose (info, no suggestion); decision 1: 10 mg BID is the VTE
    treatment start, hedged (info, no suggestion)."""
    base = {"age": 70, "sex": "male", "weight_kg": 80, "scr_mg_dl": 1.0, "af": True}
    low = run(base, {"rxnorm": "1364435", "count": 1, "per_day": 2})
    assert (low["action"], low["indicator"], low["suggested_rxnorm"]) == ("underdose", "info", None)
    vte = run(base, {"rxnorm": "1364445", "count": 2, "per_day": 2})
    assert (vte["action"], vte["hedged"], vte["indicator"], vte["suggested_rxnorm"]) == ("reduce", True, "info", None)


DIALYSIS = [
    ("apixaban", APIXABAN, "not_assessed"), ("rivaroxaban", {"rxnorm": "1232086", "count": 1, "per_day": 1}, "reduce"),
    ("dabigatran", {"rxnorm": "1037045", "count": 1, "per_day": 2}, "avoid"),
    ("edoxaban", {"ingredient": "edoxaban", "strength_mg": 60, "count": 1, "per_day": 1}, "avoid"),
    ("metformin", {"rxnorm": "861007", "count": 1, "per_day": 1}, "contraindicated"),
    ("gabapentin", {"rxnorm": "310431", "count": 1, "per_day": 3}, "not_assessed"),
    ("pregabalin", {"rxnorm": "483450", "count": 1, "per_day": 1}, "not_assessed"),
    ("nitrofurantoin", {"rxnorm": "311992", "count": 1, "per_day": 2}, "contraindicated"),
    ("allopurinol", {"rxnorm": "197319", "count": 1, "per_day": 1}, "not_assessed"),
    ("baclofen", {"rxnorm": "197391", "count": 1, "per_day": 1}, "avoid"),
    ("levetiracetam", {"rxnorm": "311289", "count": 2, "per_day": 2}, "reduce"),  # 2000 > 1000 mg/day
    ("nsaids", {"rxnorm": "198014", "count": 1, "per_day": 2}, "avoid"),
    ("sglt2i", {"rxnorm": "1545658", "count": 1, "per_day": 1}, "avoid"),
    ("amiloride", {"ingredient": "amiloride", "strength_mg": 5, "count": 1, "per_day": 1}, "avoid"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "order", "action"), DIALYSIS)
def test_dialysis_entry_of_each_enabled_row(row: str, order: dict[str, Any], action: str) -> None:
    line = run({"age": 70, "sex": "male", "scr_mg_dl": 6.0, "weight_kg": 70, "dialysis": True, "af": True}, order)
    assert (line["row"], line["band"], line["action"]) == (row, "dialysis", action)
    assert line["measure_value"] is None  # RD-6.3: no kidney measure on dialysis


def test_every_enabled_row_is_covered_here() -> None:
    enabled = {row.id for row in dosing_table(Thresholds()).enabled}
    tested = {c[0] for c in CRCL_CASES} | {c[0] for c in EGFR_CASES} | {"levetiracetam", "apixaban"}
    assert enabled == tested == {c[0] for c in DIALYSIS}
