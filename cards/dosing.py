"""Kidney dosing cards and suggestions from the dosing engine's lines (renal dosing spec RD-7, RD-8.6).

Text is built here from the line (RD-7.3); request text (product displays) is escaped before it enters Markdown.
Suggestions change only the draft being written (RD-7.4): a same-drug lower dose as one `update` of the draft, a
site's substitution as `create` then `delete`; never `systemActions`, never a dose increase.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cards.builder import (
    CODESYSTEM,
    DISCLAIMER,
    EXTENSION_KEY,
    MAX_SUMMARY,
    OVERRIDE_REASONS,
    PROJECT_NAMESPACE,
    first_upper,
)
from service.clinical.dosing.engine import REASON_ORDER, Line, PatientFacts, decimals, floor1
from service.clinical.dosing.table import InvariantError, number
from service.clinical.equations import Sex

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
KDIGO_2024_URL = "https://kdigo.org/guidelines/ckd-evaluation-and-management/"
URGENCY = {"critical": 0, "warning": 1, "info": 2}
UNDER18 = "dose.under18"
OVERFLOW = "dose.overflow"
TABLE_VERSION_KEY = "tableVersion"
# RD-7.3: each measure's name and unit on cards ({M} and {K})
MEASURES = {"crcl": ("CrCl", "mL/min"), "crcl_indexed": ("CrCl", "mL/min/1.73 m²"), "egfr": ("eGFR", "mL/min/1.73 m²"),
            "egfr_absolute": ("eGFR", "mL/min")}  # fmt: skip


# --- text helpers (RD-7.3) ------------------------------------------------------------------------------------------

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN = set("\\`*_{}[]()#+!|")


def request_text(value: str, limit: int = 100) -> str:
    """Text from the request, safe in card Markdown (RD-7.3): control characters dropped, cut to 100 code points,
    `&`, `<`, `>` as HTML entities, Markdown specials escaped with a backslash (red-team finding #8)."""
    clean = "".join(ch if ch.isprintable() else " " for ch in value)[:limit]
    return "".join(_HTML.get(ch, "\\" + ch if ch in _MARKDOWN else ch) for ch in clean)


def freq_text(per_day: float) -> str:
    known = {1.0: "once daily", 2.0: "twice daily", 3.0: "three times daily", 4.0: "four times daily",
             0.5: "every other day"}  # fmt: skip
    if per_day in known:
        return known[per_day]
    if abs(per_day - 1 / 7) < 1e-9:
        return "once a week"
    return f"{number(per_day)} times a day"


def dose_text(line: Line) -> str:
    """{D}: "5 mg twice daily", "{daily} mg a day" with several entries, "" when unreadable."""
    dose = line.dose
    if dose is None or dose.daily_mg is None:
        return ""
    if dose.entries == 1 and dose.mg_per_admin is not None and dose.per_day is not None:
        return f"{number(dose.mg_per_admin)} mg {freq_text(dose.per_day)}"
    return f"{number(dose.daily_mg)} mg a day"


def _scr(patient: PatientFacts) -> str:
    return patient.scr.text if patient.scr else "not available"


def _age_days(patient: PatientFacts, as_of: date) -> int:
    if patient.scr is None:
        raise InvariantError("patient.scr is missing")
    return (as_of - patient.scr.date).days


def measure_text(line: Line, patient: PatientFacts, as_of: date) -> str:
    """{M} (RD-7.3)."""
    row = line.required_row()
    if line.band == "dialysis":
        return "on dialysis"
    v = line.measure_value
    if row.measure == "apixaban":
        w = patient.weight
        crit = {c.name: c.state for c in line.criteria}
        weight = f"{decimals(w.value, 1)} kg" if crit.get("weight") != "unknown" and w else "weight unknown"
        if patient.scr is None:
            scr = "creatinine unknown"
        elif crit.get("creatinine") == "unknown":
            scr = "creatinine not usable"
        else:
            scr = f"creatinine {decimals(patient.scr.mg_dl, 2)} mg/dL"
        text = f"age {int(patient.age or 0)}, {weight}, {scr}"
    else:
        label, unit = MEASURES[row.measure]
        shown = floor1(v) if v is not None else "not available"
        text = f"{label} {shown}" if row.measure == "egfr" else f"{label} {shown} {unit}"  # {M}: "eGFR 37.0"
    if line.unreliable and patient.scr is not None:
        text += "; creatinine rising" if "aki" in line.reasons else f"; creatinine {_age_days(patient, as_of)} days old"
    return text


def hedge_text(line: Line) -> str:
    if not line.hedged or line.row is None:
        return ""
    return " if for gout prophylaxis" if line.row.indication == "gout_prophylaxis" else " if for AF"


def why_text(line: Line, patient: PatientFacts, as_of: date, weight_days: int, height_days: int) -> str:
    for reason in REASON_ORDER:
        if reason not in line.reasons:
            continue
        if reason == "no_age":
            return "birth date not recorded"
        if reason == "no_sex":
            return "sex not recorded"
        if reason == "no_scr":
            return "no creatinine result"
        if reason == "scr_stale":
            return f"latest creatinine is {_age_days(patient, as_of)} days old"
        if reason == "aki":
            return "creatinine rising (possible AKI)"
        if reason == "no_weight":
            return f"no weight in the last {weight_days} days"
        if reason == "no_height":
            return f"no height in the last {height_days} days"
        if reason == "dose_unreadable":
            return "the dose could not be read"
    return "data missing"


def summary(line: Line, patient: PatientFacts, as_of: date, weight_days: int, height_days: int) -> str:
    line.required_row()  # the invariant every card line keeps
    if line.ingredient is None:
        raise InvariantError("line.ingredient is missing")
    drug, Drug = line.ingredient, first_upper(line.ingredient)
    d = dose_text(line)
    dd = f" {d}" if d else ""
    h = hedge_text(line)
    a = line.action
    if line.band == "aki" and a in ("avoid", "contraindicated"):
        return f"Avoid {drug}: creatinine rising (possible AKI)"
    if a == "insufficient_data":
        return f"Cannot check {drug} dosing: {why_text(line, patient, as_of, weight_days, height_days)}"
    if a == "not_assessed":
        return f"{Drug} on dialysis: dosing not checked, ask pharmacy"
    m = measure_text(line, patient, as_of)
    if a == "avoid":
        return f"Avoid {drug}{h} ({m})"
    if a == "contraindicated":
        return f"{Drug} is contraindicated{h} ({m})"
    rec = line.recommended or ""
    holder = line.band_obj or line.entry
    if a == "reduce":
        if line.band_obj is not None and line.band_obj.regimen is not None:
            return f"{Drug}{dd}: {rec}{h} ({m})"
        if holder is not None and holder.cap_per_day is not None:
            return f"{Drug}{dd}: above the {holder.cap_text()} maximum{h} ({m})"
        return f"{Drug}: reduce the dose{h} ({m})"
    if a == "underdose":
        return f"{Drug}{dd}: below the label dose of {rec}{h} ({m})"
    alt = line.alt
    if alt is None:
        raise InvariantError("alt is missing")
    if line.measure_value is None:
        raise InvariantError("line.measure_value is missing")
    return (f"{Drug}{dd}: CrCl {floor1(line.measure_value)} mL/min with {line.weight_basis} weight, "
            f"{floor1(alt.measure_value)} mL/min with {alt.weight_basis} weight: different dose bands")  # fmt: skip


def _sex(patient: PatientFacts) -> str:
    return patient.sex.value if isinstance(patient.sex, Sex) else "sex not recorded"


def kidney_text(line: Line, patient: PatientFacts) -> str:
    """{K} (RD-7.3)."""
    row = line.required_row()
    if line.band == "dialysis":
        return "on dialysis"
    scr = patient.scr
    scr_part = f"creatinine {_scr(patient)} on {scr.date.isoformat()}" if scr else "creatinine not available"
    age_sex = f"age {int(patient.age) if patient.age is not None else 'not available'}, {_sex(patient)}"
    w = patient.weight
    if row.measure == "apixaban":
        crit = {c.name: c.state for c in line.criteria}
        weight = f"weight {decimals(w.value, 1)} kg on {w.date.isoformat()}" if w and crit.get("weight") != "unknown" \
            else "weight not available"  # fmt: skip
        met = line.apixaban_criteria_met or 0
        return (
            f"Criteria for 2.5 mg: age {int(patient.age or 0)} ({crit.get('age', 'unknown')}); {weight} "
            f"({crit.get('weight', 'unknown')}); {scr_part} ({crit.get('creatinine', 'unknown')}): {met} of 3"
        )
    v = floor1(line.measure_value) if line.measure_value is not None else "not available"
    unit = f" {MEASURES[row.measure][1]}" if line.measure_value is not None else ""
    if row.measure == "egfr":
        return f"eGFR {v}{unit} (CKD-EPI 2021; {scr_part}; {age_sex})"
    if line.weight_kg is not None and w is not None:
        weight = f"{line.weight_basis} weight {decimals(line.weight_kg, 1)} kg on {w.date.isoformat()}"
    else:
        weight = "weight not available"
    if row.measure == "crcl":
        return f"CrCl {v}{unit} (Cockcroft–Gault; {weight}; {scr_part}; {age_sex})"
    height = patient.height
    h = f"height {decimals(height.value, 1)} cm on {height.date.isoformat()}" if height else "height not available"
    if row.measure == "crcl_indexed":
        crcl = floor1(line.crcl_ml_min) if line.crcl_ml_min is not None else "not available"
        bsa = f"{line.bsa:.2f}" if line.bsa is not None else "not available"
        return (f"CrCl {v}{unit} (Cockcroft–Gault {crcl} mL/min × 1.73 / BSA {bsa} m², {h}; {weight}; "
                f"{scr_part}; {age_sex})")  # fmt: skip
    egfr = floor1(line.egfr) if line.egfr is not None else "not available"
    bsa = f"{line.bsa:.2f}" if line.bsa is not None else "not available"
    return f"eGFR {v}{unit} (CKD-EPI 2021 {egfr} × BSA {bsa} m² / 1.73; {h}; {scr_part}; {age_sex})"


def hedge_sentence(line: Line) -> str:
    out = ""
    reason = line.hedge_reason if line.hedged else None
    if reason == "no_af":
        out = (" This applies if the order is for nonvalvular atrial fibrillation; no AF diagnosis was found, and VTE "
               "doses differ.")  # fmt: skip
    elif reason == "vte_reason":
        out = " The order's reason is VTE, where this rule does not apply."
    elif reason == "phases":
        out = (" The order has more than one dosing phase, as VTE treatment starts do: no change is suggested; check "
               "each phase.")  # fmt: skip
    elif reason == "non_af_regimen":
        out = f" {dose_text(line)} is the VTE treatment start, where this rule does not apply: no change is suggested."
    elif reason == "recent_vte":
        out = " A VTE diagnosis dated {date} (within 6 months) means the order may be for VTE: no change is suggested."
    elif reason == "gout":
        out = " For gout prophylaxis; a flare is treated with the usual dose, not repeated within 14 days."
    if line.action == "underdose":
        out += (" A lower dose can be right for other reasons (another indication, interacting drugs), which are not "
                "checked: no change is suggested.")  # fmt: skip
    return out


def reason_sentences(line: Line, patient: PatientFacts, as_of: date, weight_days: int, height_days: int) -> list[str]:
    scr = patient.scr
    scr_on = f"{_scr(patient)} on {scr.date.isoformat()}" if scr else ""
    out = []
    for reason in sorted(set(line.reasons), key=REASON_ORDER.index):
        if reason == "no_age":
            out.append("Birth date not recorded.")
        elif reason == "no_sex":
            out.append("Sex not recorded: Cockcroft–Gault and CKD-EPI need it.")
        elif reason == "no_scr":
            out.append("No creatinine on record: order one.")
        elif reason == "scr_stale" and scr:
            out.append(f"The latest creatinine ({scr_on}) is {_age_days(patient, as_of)} days old: repeat it.")
        elif reason == "aki" and scr:
            out.append(f"The latest creatinine ({scr_on}) is rising (possible AKI): kidney function is not steady, so "
                       "dose on clinical judgement and repeat the creatinine.")  # fmt: skip
        elif reason == "no_weight":
            out.append(f"No body weight in the last {weight_days} days: record one.")
        elif reason == "no_height":
            out.append(f"No height in the last {height_days} days: record one.")
        elif reason == "dose_unreadable":
            out.append("The order's dose or frequency could not be read, so the dose rules were not checked: complete "
                       "it (frequencies read: structured timing, or QD, OD, DAILY, ONCE/TWICE/THREE TIMES/FOUR TIMES "
                       "DAILY, BID, TID, QID, QHS, NIGHTLY, Q6H, Q8H, Q12H, Q24H, EVERY n HOURS).")  # fmt: skip
        elif reason == "dialysis" and line.action == "not_assessed":
            entry = line.entry
            out.append(entry.recommended if entry and entry.recommended else
                       "Dosing on dialysis depends on the dialysis schedule: ask pharmacy.")  # fmt: skip
    return out


def detail(line: Line, patient: PatientFacts, as_of: date, weight_days: int, height_days: int,
           vte_date: date | None) -> str:  # fmt: skip
    row = line.required_row()
    if line.ingredient is None:
        raise InvariantError("line.ingredient is missing")
    d = dose_text(line) or "dose could not be read"
    lines = [f"**{first_upper(line.ingredient)}**: {d} ({request_text(line.order.name or line.ingredient)})"]
    lines.append(f"- Kidney function: {kidney_text(line, patient)}")
    alt = line.alt
    # RD-3.2: both results only where the site's weight option decides (a row pinned to actual weight reports `alt`
    # in the CLI only)
    if (
        alt is not None
        and row.weight == "site"
        and alt.band != line.band
        and line.band not in (None, "dialysis", "aki")
    ):
        alt_band = next((b for b in row.bands if b.id == alt.band), None)
        advice = alt_band.recommended if alt_band and alt_band.recommended else "no change"
        lines.append(
            f"- Other weight: {alt.weight_basis} body weight {decimals(alt.weight_kg, 1)} kg gives CrCl "
            f"{floor1(alt.crcl_ml_min)} mL/min: {advice}; the site setting uses {line.weight_basis} weight."
        )
    if line.floor_used is not None and patient.scr is not None:
        lines.append(f"- Creatinine {patient.scr.text} was raised to {number(line.floor_used)} mg/dL for "
                     "Cockcroft–Gault (site setting).")  # fmt: skip
    if line.unreliable and patient.scr is not None:
        scr = patient.scr
        state = "rising (possible AKI)" if "aki" in line.reasons else f"{_age_days(patient, as_of)} days old"
        lines.append(f"- Based on creatinine {scr.text} on {scr.date.isoformat()}, {state}: the true clearance is "
                     "probably lower still.")  # fmt: skip
    hedge = hedge_sentence(line).replace("{date}", vte_date.isoformat() if vte_date else "")
    if line.recommended or hedge:
        lines.append(f"- Label advice: {((line.recommended or '') + hedge).strip()}")
    if line.action in ("insufficient_data", "not_assessed"):
        sentences = reason_sentences(line, patient, as_of, weight_days, height_days)
        if sentences:
            lines.append(f"- Not checked: {' '.join(sentences)}")
    return "\n".join(lines) + f"\n\n{DISCLAIMER}"


# --- suggestions (RD-7.4) ------------------------------------------------------------------------------------------


def updated_draft(line: Line, draft: dict[str, Any]) -> dict[str, Any]:
    """The draft as received (same id) with the product P, and for a regimen band the regimen (RD-7.4 a)."""
    p = line.suggested
    if p is None:
        raise InvariantError("p is missing")
    resource = copy.deepcopy(draft)
    reference = resource.pop("medicationReference", None)
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str) and \
            reference["reference"].startswith("#"):  # fmt: skip
        target = reference["reference"][1:]
        kept: list[Any] = resource["contained"] if isinstance(resource.get("contained"), list) else []
        contained = [c for c in kept if not (isinstance(c, dict) and c.get("id") == target)]
        if contained:
            resource["contained"] = contained
        else:
            resource.pop("contained", None)
    resource["medicationCodeableConcept"] = {"text": p.name, "coding": [{"system": RXNORM, "code": p.rxcui,
                                                                           "display": p.name}]}  # fmt: skip
    dosages = resource.get("dosageInstruction")
    if not isinstance(dosages, list) or not dosages or not isinstance(dosages[0], dict):
        return resource
    dosage = dosages[0]
    strength = p.components[0].strength or 0
    band = line.band_obj
    dose = line.dose
    if dose is None:
        raise InvariantError("dose is missing")
    if band is not None and band.regimen is not None:
        new_mg = band.regimen.dose_mg
        _set_dose(dosage, new_mg, strength)
        timing: dict[str, Any] = dosage["timing"] if isinstance(dosage.get("timing"), dict) else {}
        bounds = timing["repeat"].get("boundsPeriod") if isinstance(timing.get("repeat"), dict) else None
        per_day = band.regimen.per_day
        repeat: dict[str, Any] = {
            "frequency": int(per_day) if per_day == int(per_day) else per_day,
            "period": 1,
            "periodUnit": "d",
        }
        if bounds is not None:
            repeat["boundsPeriod"] = bounds
        timing = {k: v for k, v in timing.items() if k != "code"}
        timing["repeat"] = repeat
        dosage["timing"] = timing
    else:
        n = dose.count or 0
        new_mg = strength * n
        _set_dose(dosage, new_mg, strength, keep_count=True)
    for ext in dosage["extension"] if isinstance(dosage.get("extension"), list) else []:
        if isinstance(ext, dict) and ext.get("url") == "https://open.epic.com/fhir/extensions/ordered-dose" and \
                isinstance(ext.get("valueQuantity"), dict):  # fmt: skip
            ext["valueQuantity"]["value"] = new_mg
    dosage["text"] = f"{p.name}: {line.recommended or ''}".rstrip(": ")
    return resource


def _set_dose(dosage: dict[str, Any], mg: float, strength: float, keep_count: bool = False) -> None:
    """Rewrite the dose quantity where it was read: count-based keeps its unit, mg-based becomes mg."""
    rates = dosage["doseAndRate"] if isinstance(dosage.get("doseAndRate"), list) else []
    for holder in [r for r in rates if isinstance(r, dict)] + [dosage]:
        q = holder.get("doseQuantity")
        if isinstance(q, dict):
            unit = str(q.get("code") or q.get("unit") or "").lower()
            if unit in ("mg", "g", "mcg", "ug"):
                holder["doseQuantity"] = {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org",
                                          "code": "mg"}  # fmt: skip
            elif not keep_count and strength:
                q["value"] = mg / strength
            return


def suggestions_for(line: Line, card_uuid: str, draft: dict[str, Any] | None, as_of: date) -> list[dict[str, Any]]:
    if line.suggested is not None and draft is not None and line.dose is not None:
        p = line.suggested
        band = line.band_obj
        per_day = band.regimen.per_day if band and band.regimen else (line.dose.per_day or 1)
        label = f"Change to {p.name}, {freq_text(per_day)}"[:120]
        return [
            {
                "label": label,
                "uuid": str(uuid.uuid5(uuid.UUID(card_uuid), "update:" + p.rxcui)),
                "isRecommended": True,
                "actions": [{"type": "update", "description": label, "resource": updated_draft(line, draft)}],
            }
        ]
    row = line.row
    if row is None or line.hedged or line.action not in ("avoid", "contraindicated") or draft is None:
        return []
    if line.unreliable or not row.alternatives or not isinstance(draft.get("id"), str):
        return []
    out: list[dict[str, Any]] = []
    for alt in row.alternatives:
        label = f"Replace with {alt.name}"[:120]
        create: dict[str, Any] = {
            "resourceType": "MedicationRequest", "status": "draft",
            "intent": draft.get("intent") if isinstance(draft.get("intent"), str) else "order",
            "subject": draft.get("subject"), "authoredOn": as_of.isoformat(),
            "medicationCodeableConcept": {"text": alt.name, "coding": [{"system": RXNORM, "code": alt.rxcui,
                                                                        "display": alt.name}]},
            "dosageInstruction": [{"text": alt.instructions}],
        }  # fmt: skip
        reason = draft.get("reasonCode")
        if reason is not None:
            create["reasonCode"] = [reason] if isinstance(reason, dict) else reason
        out.append({"label": label, "uuid": str(uuid.uuid5(uuid.UUID(card_uuid), "replace:" + alt.rxcui)),
                    "actions": [{"type": "create", "description": label, "resource": create},
                                {"type": "delete", "description": f"Remove the {line.ingredient} order",
                                 "resourceId": [f"MedicationRequest/{draft['id']}"]}]})  # fmt: skip
    if out:
        out[0] = {**out[0], "isRecommended": True}
    return out


# --- cards (RD-7.1, RD-7.2, RD-7.5, RD-7.6) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DosingRequest:
    hook_instance: str
    service_id: str
    config_version: str
    table_version: str
    patient_link: str
    select: bool  # order-select (RD-7.1)
    max_cards: int = 5
    weight_days: int = 90
    height_days: int = 1825
    drafts: dict[int, dict[str, Any]] = field(default_factory=dict)  # order position -> the draft as received


def shown(line: Line, select: bool) -> bool:
    """RD-7.1."""
    if line.action == "no_rule" or "deceased" in line.reasons or "under_18" in line.reasons:
        return False
    if line.action == "ok" and line.indicator is None:
        return False
    return not (select and line.action == "insufficient_data" and set(line.reasons) == {"dose_unreadable"})


def fingerprint(line: Line, patient: PatientFacts) -> dict[str, Any]:
    """RD-8.6: what the override covers; any other difference is new content."""
    dose = line.dose
    return {"order": line.order.id, "rxnorm": line.order.rxnorm or line.ingredient,
            "mg_per_day": dose.daily_mg if dose else None, "band": line.band, "indicator": line.indicator,
            "values": {"scr": patient.scr.date.isoformat() if patient.scr else None,
                       "weight": patient.weight.date.isoformat() if patient.weight else None}}  # fmt: skip


def still_covered(now: dict[str, Any], then: dict[str, Any]) -> bool:
    """RD-8.6: the same order, product, daily dose and band, an indicator not more urgent, no newer creatinine or
    weight date."""
    if any(now.get(k) != then.get(k) for k in ("order", "rxnorm", "mg_per_day", "band")):
        return False
    if URGENCY.get(str(now.get("indicator")), 3) < URGENCY.get(str(then.get("indicator")), 3):
        return False
    before, after = then.get("values") or {}, now.get("values") or {}
    return not any(after.get(k) and (not before.get(k) or after[k] > before[k]) for k in ("scr", "weight"))


def card_uuid(req: DosingRequest, rule: str, order_id: str) -> str:
    """RD-7.2, with the pseudonymous patient link added (issue #21: a reused hookInstance and the Sandbox's one order
    id "request-123" must not give two patients one card id)."""
    return str(uuid.uuid5(PROJECT_NAMESPACE, f"{req.hook_instance}/{req.service_id}/{rule}/{order_id}/"
                                             f"{req.patient_link}"))  # fmt: skip


def _card(req: DosingRequest, rule: str, order_id: str, indicator: str, summary_: str, detail_: str, label: str,
          url: str, topic: str) -> dict[str, Any]:  # fmt: skip
    if len(summary_) > MAX_SUMMARY:
        summary_ = summary_[: MAX_SUMMARY - 1] + "…"
    return {
        "uuid": card_uuid(req, rule, order_id),
        "summary": summary_,
        "detail": detail_,
        "indicator": indicator,
        "source": {"label": label, "url": url, "topic": {"system": CODESYSTEM, "code": rule, "display": topic}},
        "links": [{"label": ("Source: " + label)[:100], "url": url, "type": "absolute"}],
        "overrideReasons": [{"system": CODESYSTEM + "-override", "code": c, "display": d} for c, d in OVERRIDE_REASONS],
        "extension": {EXTENSION_KEY: {"id": rule, "configVersion": req.config_version,
                                      TABLE_VERSION_KEY: req.table_version,
                                      "order": f"MedicationRequest/{order_id}"}},
    }  # fmt: skip


def line_card(line: Line, patient: PatientFacts, req: DosingRequest, as_of: date) -> dict[str, Any]:
    row = line.required_row()
    if line.rule_id is None:
        raise InvariantError("line.rule_id is missing")
    if line.indicator is None:
        raise InvariantError("line.indicator is missing")
    order_id = line.order.id or str(line.order.position)
    card = _card(req, line.rule_id, order_id, line.indicator,
                 summary(line, patient, as_of, req.weight_days, req.height_days),
                 detail(line, patient, as_of, req.weight_days, req.height_days, patient.vte_date),
                 row.source.label, row.source.url, row.topic)  # fmt: skip
    items = suggestions_for(line, card["uuid"], req.drafts.get(line.order.position), as_of)
    if items:
        card["suggestions"] = items
        card["selectionBehavior"] = "at-most-one"
    return card


def under18_card(lines: list[Line], req: DosingRequest) -> dict[str, Any]:
    names: list[str] = []
    for line in lines:
        if line.ingredient and line.ingredient not in names:
            names.append(line.ingredient)
    head = "Kidney dosing not checked under 18 years ("
    joined = ", ".join(names)
    if len(head) + len(joined) + 1 > MAX_SUMMARY:
        joined = joined[: MAX_SUMMARY - len(head) - 2] + "…"
    text = ("Adult label dosing by kidney function does not apply under 18 years; use a paediatric dosing reference."
            f"\n\n{DISCLAIMER}")  # fmt: skip
    return _card(
        req,
        UNDER18,
        "-",
        "info",
        f"{head}{joined})",
        text,
        "ckd-cds kidney dosing: adults only",
        KDIGO_2024_URL,
        "Kidney dosing not checked in children",
    )


def overflow_card(omitted: list[dict[str, Any]], req: DosingRequest) -> dict[str, Any]:
    n = len(omitted)
    body = "\n".join(f"- {c['summary']}" for c in omitted)
    return _card(req, OVERFLOW, "-", "info", f"{n} more kidney dosing alerts",
                 f"Not shown, to keep the list short:\n{body}\n\n{DISCLAIMER}", "Card limit of this service",
                 KDIGO_2024_URL, "More kidney dosing alerts")  # fmt: skip


@dataclass(slots=True, kw_only=True)
class DosingCards:
    cards: list[dict[str, Any]]
    index: list[dict[str, Any]]
    overflow: int
    snoozed: list[str]


def build_dosing_cards(lines: list[Line], patient: PatientFacts, req: DosingRequest, as_of: date,
                       snoozes: dict[str, dict[str, Any]]) -> DosingCards:  # fmt: skip
    """RD-7.1 to RD-7.6 and RD-8.6: cards of the shown lines, without those an override still covers, in indicator,
    order and table order, at most `max_cards` (the last place lists the rest)."""
    if patient.deceased:
        return DosingCards(cards=[], index=[], overflow=0, snoozed=[])
    built: list[tuple[tuple[int, int, int], dict[str, Any], dict[str, Any]]] = []
    snoozed: list[str] = []
    table_rank: dict[str, int] = {}
    for line in lines:
        if not shown(line, req.select) or line.rule_id is None:
            continue
        fp = fingerprint(line, patient)
        before = snoozes.get(line.rule_id)
        if before is not None and still_covered(fp, before):
            snoozed.append(line.rule_id)
            continue
        row_id = line.row.id if line.row else ""
        table_rank.setdefault(row_id, len(table_rank))
        key = (URGENCY.get(line.indicator or "info", 2), line.order.position, table_rank[row_id])
        built.append((key, line_card(line, patient, req, as_of), fp))
    built.sort(key=lambda item: item[0])
    children = [line for line in lines if "under_18" in line.reasons]
    if children:
        built.append(((2, 10**6, 0), under18_card(children, req), {}))
    omitted: list[dict[str, Any]] = []
    if len(built) > req.max_cards:
        keep, rest = built[: req.max_cards - 1], built[req.max_cards - 1 :]
        omitted = [card for _, card, _ in rest]
        built = [*keep, ((3, 0, 0), overflow_card(omitted, req), {})]
    cards = [card for _, card, _ in built]
    index = [{"card": card["uuid"], "rule": card["extension"][EXTENSION_KEY]["id"], "indicator": card["indicator"],
              "suggestions": [s["uuid"] for s in card.get("suggestions", [])], "fingerprint": fp}
             for _, card, fp in built]  # fmt: skip
    return DosingCards(cards=cards, index=index, overflow=len(omitted), snoozed=snoozed)
