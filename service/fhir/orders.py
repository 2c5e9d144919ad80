"""Draft orders and patient data -> the dosing engine's inputs (renal dosing spec RD-2, RD-5).

Everything here reads untrusted FHIR JSON (prefetch, `context.draftOrders`, the CLI's input): a malformed member is
read as absent, never an exception. The clinical decisions are in `service.clinical.dosing.engine`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from service.clinical import codes
from service.clinical.codes import ConditionConcept
from service.clinical.dosing.engine import Creatinine, DoseEntry, Measured, Order, PatientFacts
from service.clinical.dosing.products import ParsedDisplay, ProductTable, parse_display
from service.clinical.dosing.table import DrugTable
from service.clinical.medications import product_table as clinical_products
from service.clinical.record import ConditionFact, PatientRecord
from service.clinical.staging import stage
from service.fhir.adapter import _codings, as_list, normalise_unit, text

Resource = dict[str, Any]
RXNORM_SYSTEMS = frozenset({codes.RXNORM, "urn:oid:2.16.840.1.113883.6.88"})  # RD-5.2: Epic sends the OID
CHECKED_STATUS = frozenset({"draft", "active", "on-hold"})  # RD-5.1 (or absent)
MAX_PER_DAY = 1440.0  # once a minute: beyond it a structured timing is an error, read as unreadable
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id: only such ids are read from the server (RD-5.2 c)
ORDERED_DOSE = "https://open.epic.com/fhir/extensions/ordered-dose"
ADMIN_AMOUNT = "https://open.epic.com/fhir/extensions/admin-amount"

# --- RD-5.5 frequency grammar ----------------------------------------------------------------------------------------
FREQUENCY_WORDS = {
    **dict.fromkeys(("QD", "OD", "DAILY", "ONCE DAILY", "QHS", "NIGHTLY", "Q24H"), 1.0),
    **dict.fromkeys(("BID", "TWICE DAILY", "Q12H"), 2.0),
    **dict.fromkeys(("TID", "THREE TIMES DAILY", "Q8H"), 3.0),
    **dict.fromkeys(("QID", "FOUR TIMES DAILY", "Q6H"), 4.0),
}
EVERY_N_HOURS = re.compile(r"EVERY ([1-9]|1[0-9]|2[0-4]) HOURS")
WHITESPACE = re.compile(r"\s+")


def frequency_of_text(value: Any) -> float | None:
    """RD-5.5: the whole normalised text must be one of the table's forms; nothing else is read."""
    if not isinstance(value, str):
        return None
    normal = WHITESPACE.sub(" ", value.strip().upper())
    for suffix in (" PRN", " AS NEEDED"):
        if normal.endswith(suffix):
            normal = normal[: -len(suffix)]
            break
    if normal in FREQUENCY_WORDS:
        return FREQUENCY_WORDS[normal]
    m = EVERY_N_HOURS.fullmatch(normal)
    return 24 / int(m.group(1)) if m else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def per_day(dosage: Resource) -> float | None:
    """Administrations per day (RD-5.5): timing.repeat, else timing.code codes and text, else the entry's text."""
    timing: dict[str, Any] = dosage["timing"] if isinstance(dosage.get("timing"), dict) else {}
    repeat: dict[str, Any] = timing["repeat"] if isinstance(timing.get("repeat"), dict) else {}
    if "frequency" in repeat or "period" in repeat:
        f = _number(repeat.get("frequencyMax")) or _number(repeat.get("frequency"))
        f = 1.0 if f is None and "frequency" not in repeat and "frequencyMax" not in repeat else f
        p = _number(repeat.get("period")) if "period" in repeat else 1.0
        if f is None or p is None or f <= 0 or p <= 0:
            return None
        unit = repeat.get("periodUnit")
        factor = {"h": 24.0, "d": 1.0, "wk": 1 / 7}.get(unit) if isinstance(unit, str) else None
        if factor is None:
            return None
        per = f * factor / p
        return per if math.isfinite(per) and per <= MAX_PER_DAY else None
    code: dict[str, Any] = timing["code"] if isinstance(timing.get("code"), dict) else {}
    for candidate in [c.get("code") for c in _codings(code)] + [code.get("text"), dosage.get("text")]:
        found = frequency_of_text(candidate)
        if found is not None:
            return found
    return None


def _quantity(q: Any) -> tuple[float, str] | None:
    if not isinstance(q, dict):
        return None
    value = _number(q.get("value"))
    if value is None:
        return None
    raw = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")
    return value, normalise_unit(raw) if isinstance(raw, str) else ""


def dose_quantity(dosage: Resource) -> tuple[float, str] | None:
    """RD-5.4: the first readable of doseAndRate doseQuantity, doseRange.high, Dosage.doseQuantity (STU3, Epic), and
    Epic's ordered-dose and admin-amount extensions."""
    for rate in as_list(dosage.get("doseAndRate")):
        if isinstance(rate, dict):
            found = _quantity(rate.get("doseQuantity"))
            if found is None and isinstance(rate.get("doseRange"), dict):
                found = _quantity(rate["doseRange"].get("high"))
            if found is not None:
                return found
    found = _quantity(dosage.get("doseQuantity"))
    if found is not None:
        return found
    for url in (ORDERED_DOSE, ADMIN_AMOUNT):
        for ext in as_list(dosage.get("extension")):
            if isinstance(ext, dict) and ext.get("url") == url:
                found = _quantity(ext.get("valueQuantity"))
                if found is not None:
                    return found
    return None


def dose_entries(req: Resource) -> tuple[DoseEntry, ...]:
    out = []
    for dosage in as_list(req.get("dosageInstruction")):
        if not isinstance(dosage, dict):
            continue
        q = dose_quantity(dosage)
        seq = dosage.get("sequence")
        out.append(DoseEntry(value=q[0] if q else None, unit=q[1] if q else None, per_day=per_day(dosage),
                             sequence=seq if isinstance(seq, int) and not isinstance(seq, bool) else None))  # fmt: skip
    return tuple(out)


# --- the medication (RD-5.2) ------------------------------------------------------------------------------------------


def reference_key(ref: str) -> tuple[str, str] | None:
    """(resource type, id) of a relative or absolute reference: its last two path segments."""
    parts = ref.split("/_history/", 1)[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def resolve_medication(req: Resource, medications: dict[str, Resource],
                       fetch: Callable[[str], Resource | None] | None) -> tuple[Resource | None, str]:  # fmt: skip
    """The Medication an order references (contained, an entry of draftOrders, or read from the FHIR server), and the
    reference's display (RD-5.2 a–d)."""
    ref = req.get("medicationReference")
    if not isinstance(ref, dict):
        return None, ""
    display = text(ref.get("display")) or ""
    target = ref.get("reference")
    if not isinstance(target, str):
        return None, display
    if target.startswith("#"):
        for contained in as_list(req.get("contained")):
            if isinstance(contained, dict) and contained.get("resourceType") == "Medication" and \
                    contained.get("id") == target[1:]:  # fmt: skip
                return contained, display
        return None, display
    if target in medications:
        return medications[target], display
    key = reference_key(target)
    if key is not None and key[0] == "Medication" and f"Medication/{key[1]}" in medications:
        return medications[f"Medication/{key[1]}"], display
    if fetch is not None and key is not None and key[0] == "Medication" and FHIR_ID.fullmatch(key[1]):
        found = fetch(f"Medication/{key[1]}")
        if isinstance(found, dict) and found.get("resourceType") == "Medication":
            return found, display
    return None, display


def brand_names(products: ProductTable) -> dict[str, tuple[str, ...]]:
    """Brand names from the dosing table's BN part and the clinical spec's (§7.3)."""
    _, clinical = clinical_products()
    return {**{k: tuple(sorted(v)) for k, v in clinical.items()}, **products.brands}


def read_medication(concept: Any, ref_display: str, table: DrugTable, products: ProductTable) -> dict[str, Any]:
    """RD-5.2 step 3: an SCD/SBD/pack code in the offline table, else an IN code, else names in the displays."""
    codings = [c for c in _codings(concept) if c.get("system") in RXNORM_SYSTEMS and isinstance(c.get("code"), str)]
    first = codings[0]["code"] if codings else None
    for c in codings:
        product = products.lookup(c["code"])
        if product is not None and product.tty != "IN":
            names = tuple(comp.name for comp in product.components)
            return {"rxnorm": c["code"], "ingredients": names, "strengths": product.strengths(), "form": product.form,
                    "form_from_table": bool(product.form), "name": product.name}  # fmt: skip
    by_code = table.ingredient_of_code()
    for c in codings:
        ingredient = by_code.get(c["code"])
        if ingredient is None:
            product = products.lookup(c["code"])
            ingredient = product.components[0].name if product is not None and product.components else None
        if ingredient is not None:
            name = text(c.get("display")) or (text(concept.get("text")) if isinstance(concept, dict) else None)
            return {"rxnorm": c["code"], "ingredients": (ingredient,), "strengths": {}, "form": "",
                    "form_from_table": False, "name": name or ingredient}  # fmt: skip
    texts = [text(c.get("display")) for c in _codings(concept)]
    texts += [text(concept.get("text")) if isinstance(concept, dict) else None, ref_display]
    names = table.ingredient_names()
    brands = brand_names(products)
    for candidate in texts:
        if not candidate:
            continue
        parsed: ParsedDisplay = parse_display(candidate, names, brands)
        if parsed.ingredients:
            strengths = {parsed.ingredients[0]: (parsed.strength, parsed.concentration)} if len(
                parsed.ingredients) == 1 else {}  # fmt: skip
            return {"rxnorm": first, "ingredients": parsed.ingredients, "strengths": strengths, "form": parsed.form,
                    "form_from_table": False, "name": candidate}  # fmt: skip
    display = next((t for t in texts if t), "")
    return {"rxnorm": first, "ingredients": (), "strengths": {}, "form": "", "form_from_table": False,
            "product": None, "name": display}  # fmt: skip


def reason_flags(req: Resource) -> tuple[bool, bool]:
    """(AF, VTE) from the order's reasonCode: an array (R4) or one CodeableConcept (the Sandbox) (RD-2.7)."""
    reasons = req.get("reasonCode")
    concepts = [reasons] if isinstance(reasons, dict) else as_list(reasons)
    found: set[ConditionConcept] = set()
    for concept in concepts:
        for coding in _codings(concept):
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            if coding.get("system") == codes.ICD10CM:
                found |= codes.icd10_concepts(code)
            elif coding.get("system") == codes.SNOMED:
                found |= codes.snomed_concepts(code)
    return ConditionConcept.ATRIAL_FIBRILLATION in found, ConditionConcept.VTE in found


def has_medication(req: Resource) -> bool:
    """RD-5.1: an order without medication[x] is not checked (the Sandbox sends one while the user types)."""
    concept = req.get("medicationCodeableConcept")
    if isinstance(concept, dict) and (_codings(concept) or text(concept.get("text"))):
        return True
    ref = req.get("medicationReference")
    return isinstance(ref, dict) and (isinstance(ref.get("reference"), str) or bool(text(ref.get("display"))))


def read_order(position: int, req: Resource, medications: dict[str, Resource], table: DrugTable,
               products: ProductTable, fetch: Callable[[str], Resource | None] | None = None) -> Order:  # fmt: skip
    concept = req.get("medicationCodeableConcept")
    ref_display = ""
    if not isinstance(concept, dict):
        medication, ref_display = resolve_medication(req, medications, fetch)
        concept = medication.get("code") if medication else None
    found = read_medication(concept, ref_display, table, products)
    af, vte = reason_flags(req)
    rid = req.get("id")
    return Order(position=position, id=rid if isinstance(rid, str) else None, rxnorm=found["rxnorm"],
                 ingredients=tuple(found["ingredients"]), strengths=found["strengths"], form=found["form"],
                 form_from_table=found["form_from_table"], name=found["name"] or "",
                 entries=dose_entries(req), reason_vte=vte, reason_af=af and not vte)  # fmt: skip


def draft_entries(bundle: Any) -> tuple[list[Resource], dict[str, Resource]]:
    """The MedicationRequests of `draftOrders` (in order) and its Medications by fullUrl and Medication/<id>."""
    requests: list[Resource] = []
    medications: dict[str, Resource] = {}
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    for entry in as_list(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        resource = entry["resource"]
        kind = resource.get("resourceType")
        if kind == "MedicationRequest":
            requests.append(resource)
        elif kind == "Medication":
            if isinstance(entry.get("fullUrl"), str):
                medications[entry["fullUrl"]] = resource
            if isinstance(resource.get("id"), str):
                medications[f"Medication/{resource['id']}"] = resource
    return requests, medications


def selected(req: Resource, selections: Iterable[str]) -> bool:
    rid = req.get("id")
    if not isinstance(rid, str):
        return False
    return any(reference_key(s) == ("MedicationRequest", rid) for s in selections)


def for_another_patient(req: Resource, patient_id: str | None) -> bool:
    """A draft whose subject names another Patient (relative or absolute reference) is not this chart's order: it is
    never checked, so no card is built on it (everything from the EHR is untrusted, issue #22)."""
    if patient_id is None:
        return False
    subject = req.get("subject") if isinstance(req.get("subject"), dict) else req.get("patient")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    key = reference_key(ref) if isinstance(ref, str) and not ref.startswith(("urn:", "#")) else None
    return key is not None and key[0] == "Patient" and key[1] != patient_id


def checked_orders(bundle: Any, selections: list[str] | None, table: DrugTable, products: ProductTable,
                   fetch: Callable[[str], Resource | None] | None = None,
                   patient_id: str | None = None) -> list[Order]:  # fmt: skip
    """RD-5.1: order-sign (selections None) checks every MedicationRequest whose status is draft, active, on-hold or
    absent; order-select only the selected ones. Orders without medication[x], and orders whose subject is another
    patient than `patient_id`, are not checked. `position` counts the MedicationRequest entries of draftOrders."""
    requests, medications = draft_entries(bundle)
    out = []
    for position, req in enumerate(requests):
        if for_another_patient(req, patient_id):
            continue
        status = req.get("status")
        if status is not None and status not in CHECKED_STATUS:
            continue
        if selections is not None and not selected(req, selections):
            continue
        if not has_medication(req):
            continue
        out.append(read_order(position, req, medications, table, products, fetch))
    return out


# --- the patient (RD-2) -----------------------------------------------------------------------------------------------


def _latest(values: list[Any], as_of: date) -> Measured | None:
    """The latest by date; on one date, the one that comes last in the Bundle (RD-2.4); future dates ignored."""
    best = None
    for v in values:
        if v.date <= as_of and (best is None or v.date >= best.date):
            best = v
    return Measured(value=float(best.value), date=best.date) if best is not None else None


def condition_date(c: ConditionFact) -> date | None:
    return c.onset_datetime or c.onset_period_start or c.recorded


def patient_facts(record: PatientRecord, as_of: date, akd_window: bool = True) -> PatientFacts:
    """RD-2 from a patient record: L and its AKI flag (S4, S5), weight, height, dialysis (S13), AF, recent VTE,
    active medicines with their request ids, deceased (S19). Age is completed years at `as_of` (RD-2.2)."""
    s = stage(record, as_of, akd_window)
    scr = None
    if s.creatinine:
        last = s.creatinine[-1]
        scr = Creatinine(mg_dl=last.value, date=last.date, aki=s.aki[-1] is not None)
    vte_dates = [d for c in record.conditions if ConditionConcept.VTE in c.concepts and not c.refuted
                 and (d := condition_date(c)) is not None and d <= as_of]  # fmt: skip
    af = any(ConditionConcept.ATRIAL_FIBRILLATION in c.concepts and c.counted for c in record.conditions)
    active: dict[str, set[str | None]] = {}
    for med in record.medications:
        for ingredient in med.ingredients:
            active.setdefault(ingredient, set()).add(med.request_id)
    return PatientFacts(
        age=s.age_now, sex=s.sex, scr=scr, weight=_latest(record.weight_kg, as_of),
        height=_latest(record.height_cm, as_of), dialysis=s.dialysis, af=af,
        vte_date=max(vte_dates) if vte_dates else None,
        active={k: frozenset(v) for k, v in active.items()}, deceased=s.deceased,
    )  # fmt: skip
