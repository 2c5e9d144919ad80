"""The `ckd-cds dose` facts form (renal dosing spec RD-9.2 a): a JSON object -> the engine's inputs.

Every problem is a ValueError with one line naming the field (RD-9.4); nothing is guessed.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from service.clinical.dosing.engine import Creatinine, DoseEntry, Measured, Order, PatientFacts
from service.clinical.dosing.products import ProductTable
from service.clinical.dosing.table import DrugTable, number
from service.clinical.equations import CREATININE_UMOL_PER_MG_DL, Sex


def _number(value: Any, where: str, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number")
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{where} must be {'0 or more' if zero_ok else 'positive'}")
    return float(value)


def _optional_number(obj: dict[str, Any], key: str, where: str, *, zero_ok: bool = False) -> float | None:
    value = obj.get(key)
    return None if value is None else _number(value, f"{where}.{key}", zero_ok=zero_ok)


def parse_date(value: Any, where: str, as_of: date | None = None) -> date:
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        parsed = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where} must be a date YYYY-MM-DD") from None
    if as_of is not None and parsed > as_of:
        raise ValueError(f"{where} is after as_of")
    return parsed


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"patient.{key} must be true or false")
    return value


def patient_from_facts(p: Any, as_of: date) -> PatientFacts:
    if not isinstance(p, dict):
        raise ValueError("patient must be an object")
    age = _optional_number(p, "age", "patient", zero_ok=True)
    sex_value = p.get("sex")
    if sex_value not in (None, "female", "male"):
        raise ValueError("patient.sex must be female, male or null")
    mg, umol = _optional_number(p, "scr_mg_dl", "patient"), _optional_number(p, "scr_umol_l", "patient")
    if mg is not None and umol is not None:
        raise ValueError("patient: give scr_mg_dl or scr_umol_l, not both")
    egfr = _optional_number(p, "egfr", "patient")
    scr = None
    aki = _flag(p, "scr_aki")
    if mg is not None or umol is not None or egfr is not None:
        if p.get("scr_date") is None:
            raise ValueError("patient.scr_date is required with a creatinine or egfr")
        scr_date = parse_date(p["scr_date"], "patient.scr_date", as_of)
        if umol is not None:
            scr = Creatinine(mg_dl=umol / CREATININE_UMOL_PER_MG_DL, date=scr_date, aki=aki,
                             shown=f"{number(umol)} µmol/L")  # fmt: skip
        elif mg is not None:
            scr = Creatinine(mg_dl=mg, date=scr_date, aki=aki)
    weight = height = None
    if (w := _optional_number(p, "weight_kg", "patient")) is not None:
        when = parse_date(p["weight_date"], "patient.weight_date", as_of) if p.get("weight_date") is not None else as_of
        weight = Measured(value=w, date=when)
    if (h := _optional_number(p, "height_cm", "patient")) is not None:
        when = parse_date(p["height_date"], "patient.height_date", as_of) if p.get("height_date") is not None else as_of
        height = Measured(value=h, date=when)
    vte = parse_date(p["vte_date"], "patient.vte_date", as_of) if p.get("vte_date") is not None else None
    active = p.get("active", [])
    if not isinstance(active, list) or not all(isinstance(a, str) for a in active):
        raise ValueError("patient.active must be an array of ingredient names")
    return PatientFacts(
        age=age, sex=Sex(sex_value) if sex_value else None, scr=scr, egfr_reported=egfr,
        egfr_date=parse_date(p["scr_date"], "patient.scr_date", as_of) if egfr is not None else None,
        egfr_aki=aki, weight=weight, height=height, dialysis=_flag(p, "dialysis"), af=_flag(p, "af"), vte_date=vte,
        active={a.strip().lower(): frozenset({None}) for a in active},
    )  # fmt: skip


def order_from_facts(position: int, o: Any, table: DrugTable, products: ProductTable) -> Order:
    where = f"orders[{position}]"
    if not isinstance(o, dict):
        raise ValueError(f"{where} must be an object")
    for key in ("id", "rxnorm", "ingredient", "form"):
        if o.get(key) is not None and not isinstance(o[key], str):
            raise ValueError(f"{where}.{key} must be a string")
    strength = _optional_number(o, "strength_mg", where)
    count, dose_mg = _optional_number(o, "count", where), _optional_number(o, "dose_mg", where)
    per_day = _optional_number(o, "per_day", where)
    code = o.get("rxnorm")
    ingredients: tuple[str, ...] = ()
    strengths: dict[str, tuple[float | None, float | None]] = {}
    form, from_table, name = "", False, ""
    if code is not None:
        product = products.lookup(code)
        if product is not None and product.tty != "IN":
            ingredients = tuple(c.name for c in product.components)
            strengths = product.strengths()
            form, from_table, name = product.form, bool(product.form), product.name
        else:
            ingredient = table.ingredient_of_code().get(code) or (
                product.components[0].name if product is not None and product.components else None)  # fmt: skip
            ingredients = (ingredient,) if ingredient else ()
    if o.get("ingredient") is not None:
        ingredients = (o["ingredient"].strip().lower(),)
        strengths = {ingredients[0]: (strength, None)}
    elif strength is not None and len(ingredients) == 1:
        strengths = {ingredients[0]: (strength, None)}
    if o.get("form") is not None:
        form, from_table = o["form"].strip().lower(), False
    if dose_mg is not None:
        entry = DoseEntry(value=dose_mg, unit="mg", per_day=per_day)
    else:
        entry = DoseEntry(value=count, unit="" if count is not None else None, per_day=per_day)
    return Order(position=position, id=o.get("id"), rxnorm=code, ingredients=ingredients, strengths=strengths,
                 form=form, form_from_table=from_table, name=name or (ingredients[0] if ingredients
                 else ""), entries=(entry,))  # fmt: skip
