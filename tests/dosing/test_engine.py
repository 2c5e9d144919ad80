"""The dosing engine's equations and decisions against published values (renal dosing spec RD-3, RD-5, RD-6)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.clinical.dosing.engine import (
    adjusted_body_weight,
    bsa_mosteller,
    cockcroft_gault,
    floor1,
    ideal_body_weight,
    obese,
)
from service.clinical.dosing.products import parse_display, parse_normal_form, product_table
from service.clinical.equations import Sex, egfr_ckd_epi_2021_cr
from service.clinical.thresholds import CrclSettings, RenalDosing, Thresholds
from service.fhir.orders import frequency_of_text, per_day
from tests.dosing.test_rows import crcl_patient, run

# RD-3.7, the spec's worked numbers (design brief recomputed): (age, sex, kg, cm, SCr mg/dL) ->
# CG actual, CG IBW, CG AdjBW, eGFR, eGFR mL/min; "–" columns are None
WORKED = [
    (80, Sex.MALE, 60, None, 120 / 88.4, 36.8, None, None, 52.7, None),
    (82, Sex.FEMALE, 58, 160, 1.6, 24.8, 22.4, 23.4, 32.0, 29.7),
    (82, Sex.MALE, 75, 175, 1.6, 37.8, 35.5, 36.4, 42.8, 47.2),
    (55, Sex.MALE, 140, 175, 1.3, 127.1, 64.0, 89.2, 64.9, 97.8),
    (88, Sex.FEMALE, 55, 160, 0.5, 67.5, 64.3, 65.6, 90.2, 81.5),
]


@pytest.mark.parametrize(("age", "sex", "kg", "cm", "scr", "cg", "cg_ibw", "cg_adj", "egfr", "egfr_abs"), WORKED)
def test_worked_numbers(age: int, sex: Sex, kg: float, cm: float | None, scr: float, cg: float, cg_ibw: float | None,
                        cg_adj: float | None, egfr: float, egfr_abs: float | None) -> None:  # fmt: skip
    assert round(cockcroft_gault(age, kg, scr, sex), 1) == cg
    assert round(egfr_ckd_epi_2021_cr(scr, age, sex), 1) == egfr
    if cm is None:
        return
    ibw = ideal_body_weight(cm, sex)
    assert round(cockcroft_gault(age, ibw, scr, sex), 1) == cg_ibw
    assert round(cockcroft_gault(age, adjusted_body_weight(kg, ibw), scr, sex), 1) == cg_adj
    assert round(egfr_ckd_epi_2021_cr(scr, age, sex) * bsa_mosteller(kg, cm) / 1.73, 1) == egfr_abs


def test_floor_halves_crcl_of_the_light_elderly_woman() -> None:
    """RD-3.7 last row: a floor of 1.0 would halve CrCl 67.5 -> 33.8."""
    assert round(cockcroft_gault(88, 55, 1.0, Sex.FEMALE), 1) == 33.8
    t = Thresholds(renal_dosing=RenalDosing(crcl=CrclSettings(scr_floor_mg_dl=1.0)))
    patient = {"age": 88, "sex": "female", "scr_mg_dl": 0.5, "weight_kg": 55}
    line = run(patient, {"rxnorm": "310431", "count": 1, "per_day": 3}, t)
    assert round(line["crcl_ml_min"], 1) == 33.8
    assert line["band"] == "30to60"
    pinned = run({**patient, "af": True}, {"rxnorm": "1232086", "count": 1, "per_day": 1}, t)
    assert round(pinned["crcl_ml_min"], 1) == 67.5  # rivaroxaban: the floor never applies to weight: actual rows


def test_obesity_uses_the_floored_ibw_and_the_site_option() -> None:
    """RD-3.2: 70 y man, 130 kg, 170 cm, SCr 2.0 (Appendix C): actual CrCl 63.2, adjusted 44.5."""
    assert obese(130, 170, Sex.MALE)
    assert not obese(54, 140, Sex.FEMALE)  # IBW 35.1 kg is floored at 45.5 for the test: 54 < 1.2 × 45.5 = 54.6
    patient = {"age": 70, "sex": "male", "scr_mg_dl": 2.0, "weight_kg": 130, "height_cm": 170, "af": True}
    gaba = {"rxnorm": "310431", "count": 2, "per_day": 3}
    default = run(patient, gaba)
    assert (floor1(default["crcl_ml_min"]), floor1(default["alt"]["crcl_ml_min"])) == ("63.1", "44.5")
    assert (default["band"], default["alt"]["band"], default["indicator"]) == ("ge60", "30to60", "info")
    adjusted = run(patient, gaba, Thresholds(renal_dosing=RenalDosing(crcl=CrclSettings(weight="adjusted_if_obese"))))
    assert (adjusted["band"], adjusted["action"], adjusted["weight_basis"]) == ("30to60", "reduce", "adjusted")
    assert adjusted["suggested_rxnorm"] == "310430"  # 100 mg × 2 × 3 = 600 mg/day, within 400–1400
    riva = run(patient, {"rxnorm": "1232086", "count": 1, "per_day": 1})
    assert (riva["band"], riva["indicator"], riva["alt"]["band"]) == ("gt50", None, "15to50")  # pinned to actual


def test_unreliable_creatinine_keeps_only_floor_bands() -> None:
    """RD-6.5 (c): a stale creatinine keeps nitrofurantoin's contraindicated floor band (no suggestion), but not a
    dose band; an AKI flag gives the NSAID row's aki entry."""
    old = {"scr_date": "2025-10-01"}  # 426 days before 2026-12-01 > 365
    floor = run(crcl_patient(25, **old), {"rxnorm": "311992", "count": 1, "per_day": 2})
    assert (floor["band"], floor["action"], floor["reasons"]) == ("lt30", "contraindicated", ["scr_stale"])
    dose = run(crcl_patient(25, **old), {"rxnorm": "310431", "count": 1, "per_day": 3})
    assert (dose["band"], dose["action"], dose["rule_id"]) == (
        None,
        "insufficient_data",
        "dose.gabapentin.insufficient",
    )
    assert dose["crcl_ml_min"] == pytest.approx(25)  # filled even when unreliable (RD-9.3)
    aki = run(crcl_patient(60, scr_aki=True), {"rxnorm": "198014", "count": 1, "per_day": 2})
    assert (aki["band"], aki["action"], aki["reasons"]) == ("aki", "avoid", ["aki"])
    gone = run(crcl_patient(60, scr_aki=True), {"rxnorm": "483450", "count": 1, "per_day": 2})
    assert (gone["action"], gone["reasons"]) == ("insufficient_data", ["aki"])


def test_missing_data_is_never_a_silent_pass() -> None:
    no_weight = run({"age": 70, "sex": "male", "scr_mg_dl": 1.0}, {"rxnorm": "310431", "count": 1, "per_day": 3})
    assert (no_weight["action"], no_weight["indicator"], no_weight["reasons"]) == ("insufficient_data", "info",
                                                                                   ["no_weight"])  # fmt: skip
    old_weight = run(crcl_patient(40, weight_date="2026-08-01"), {"rxnorm": "310431", "count": 1, "per_day": 3})
    assert old_weight["reasons"] == ["no_weight"]  # 122 days > 90
    no_scr = run({"age": 70, "sex": "male", "weight_kg": 70}, {"rxnorm": "310431", "count": 1, "per_day": 3})
    assert no_scr["reasons"] == ["no_scr"]
    child = run(crcl_patient(40, age=12), {"rxnorm": "310431", "count": 1, "per_day": 3})
    assert (child["action"], child["rule_id"], child["reasons"]) == ("not_assessed", "dose.gabapentin.under18",
                                                                     ["under_18"])  # fmt: skip
    unreadable = run(crcl_patient(25), {"rxnorm": "310431", "count": 1})
    assert (unreadable["band"], unreadable["action"], unreadable["reasons"]) == ("15to30", "insufficient_data",
                                                                                 ["dose_unreadable"])  # fmt: skip
    avoid = run(crcl_patient(25), {"rxnorm": "311992", "count": 1})  # avoid bands need no dose
    assert avoid["action"] == "contraindicated"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("BID", 2), ("twice  daily", 2), ("q8h  PRN", 3), ("Q24H", 1), ("EVERY 6 HOURS", 4), ("every 12 hours", 2),
     ("QHS as needed", 1), ("QID", 4), ("3 TIMES DAILY", None), ("1 tablet twice daily", None), ("QOD", None),
     ("EVERY 0 HOURS", None), ("EVERY 06 HOURS", None), ("EVERY 25 HOURS", None), ("QAM", None), (None, None)],
)  # fmt: skip
def test_frequency_grammar(text: str | None, expected: float | None) -> None:
    assert frequency_of_text(text) == expected


@pytest.mark.parametrize(
    ("repeat", "expected"),
    [({"frequency": 2, "period": 1, "periodUnit": "d"}, 2), ({"frequency": 1, "period": 8, "periodUnit": "h"}, 3),
     ({"frequency": 1, "frequencyMax": 3, "period": 1, "periodUnit": "d"}, 3),
     ({"frequency": 1, "period": 1, "periodUnit": "wk"}, 1 / 7),
     ({"frequency": 1, "period": 2, "periodUnit": "d"}, 0.5),
     ({"frequency": 1, "period": 1, "periodUnit": "mo"}, None), ({"frequency": 2, "period": 1}, None)],
)  # fmt: skip
def test_structured_timing(repeat: dict[str, Any], expected: float | None) -> None:
    found = per_day({"timing": {"repeat": repeat, "code": {"text": "BID"}}})
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_display_parsing_rd_5_3() -> None:
    names = ("gabapentin", "ibuprofen", "ketorolac", "nitrofurantoin")
    assert parse_display("IBUPROFEN 200 MG PO TABS", names, {}) == parse_display("ibuprofen 200 mg po tabs", names, {})
    ibu = parse_display("IBUPROFEN 200 MG PO TABS", names, {})
    assert (ibu.ingredients, ibu.strength, ibu.form) == (("ibuprofen",), 200.0, "tablet")
    assert parse_display("KETOROLAC 0.5 % OP SOLN", names, {}).form == "topical"
    assert parse_display("ketorolac 15.75 MG/SPRAY nasal spray", names, {}).form == ""  # systemic
    assert parse_display("gabapentin enacarbil 600 MG ER tablet", names, {}).ingredients == ()
    assert parse_display("nitrofurantoin 5 MG/ML suspension", names, {}).concentration == 5.0
    assert parse_display("Gabapentin 1 G tablet", names, {}).strength == 1000.0


def test_appendix_b_products_are_in_the_offline_table() -> None:
    """Appendix B: each code with its ingredient, strength and dose form (spec's table, not the code's output)."""
    expected = {"1364445": ("apixaban", 5.0, "oral tablet"), "1364435": ("apixaban", 2.5, "oral tablet"),
                "1037179": ("dabigatran", 75.0, "oral capsule"), "310430": ("gabapentin", 100.0, "oral capsule"),
                "311989": ("nitrofurantoin", 5.0, "oral suspension"), "849574": ("naproxen", 220.0, "oral tablet"),
                "860975": ("metformin", 500.0, "24 hr extended release oral tablet"),
                "197604": ("digoxin", 0.125, "oral tablet")}  # fmt: skip
    table = product_table()
    for code, (ingredient, strength, form) in expected.items():
        product = table.lookup(code)
        assert product is not None, code
        assert (product.components[0].name, product.components[0].strength, product.form) == (
            ingredient,
            strength,
            form,
        )
    combo = table.lookup("198335")
    assert combo is not None
    assert [(c.name, c.strength) for c in combo.components] == [("sulfamethoxazole", 800.0), ("trimethoprim", 160.0)]


def test_normal_form_parser_sums_one_ingredients_parts_and_keeps_release_qualifiers() -> None:
    name = "nitrofurantoin, macrocrystals 25 MG / nitrofurantoin, monohydrate 75 MG Oral Capsule"
    both = parse_normal_form("1", name, ("nitrofurantoin",))
    assert both is not None
    assert [(c.name, c.strength) for c in both.components] == [("nitrofurantoin", 100.0)]
    er = parse_normal_form("2", "Osmotic 24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                           ("metformin",))  # fmt: skip
    assert er is not None
    assert (er.form, er.components[0].strength) == ("osmotic 24 hr extended release oral tablet", 500.0)
    assert floor1(29.96) == "29.9"  # RD-7.3: a value below a threshold never reads as the threshold


def test_indexing_and_dates_do_not_leak_into_other_orders() -> None:
    """A draft re-signed with the id of the active order is not 'continuing' (RD-2.8)."""
    from service.clinical.dosing.config import dosing_table, engine_settings
    from service.clinical.dosing.engine import DoseEntry, Order, PatientFacts, evaluate

    t = Thresholds()
    facts = PatientFacts(age=70, sex=Sex.FEMALE, egfr_reported=40, egfr_date=date(2026, 11, 20),
                         active={"metformin": frozenset({"mr1"})})  # fmt: skip
    order = Order(position=0, id="mr1", rxnorm=None, ingredients=("metformin",), strengths={"metformin": (500, None)},
                  entries=(DoseEntry(value=1, unit="", per_day=2),))  # fmt: skip
    (line,) = evaluate([order], facts, dosing_table(t), engine_settings(t), product_table(), date(2026, 12, 1))
    assert line.band == "30to45_new"
    other = Order(position=0, id="new", rxnorm=None, ingredients=("metformin",), strengths={"metformin": (500, None)},
                  entries=(DoseEntry(value=1, unit="", per_day=2),))  # fmt: skip
    (line,) = evaluate([other], facts, dosing_table(t), engine_settings(t), product_table(), date(2026, 12, 1))
    assert line.band == "30to45"
