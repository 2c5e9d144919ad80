"""Request shapes for the renal dosing services: the patient (FHIR, prefetch as an EHR sends it) and draft orders as
the CDS Hooks Sandbox's Rx View / Rx Sign and Epic send them (docs/integration.md, "Order hooks")."""

from __future__ import annotations

import copy
from datetime import date, timedelta
from typing import Any

from service.clinical import codes
from service.fhir import build

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
EPIC_RXNORM = "urn:oid:2.16.840.1.113883.6.88"


def birth_date(age: int, today: date | None = None) -> str:
    """A birth date that makes the patient `age` completed years today (born 200 days after the birthday)."""
    today = today or date.today()
    return (date(today.year - age - 1, today.month, 1) + timedelta(days=200)).isoformat() if today.month else ""


def patient_resources(pid: str, *, age: int | None, sex: str | None, scr: float | None = None, scr_days_ago: int = 10,
                      scr_unit: str = "mg/dL", weight: float | None = None, weight_days_ago: int = 5,
                      height: float | None = None, af: bool = False, dialysis: bool = False,
                      earlier_scr: float | None = None, vte_days_ago: int | None = None,
                      active: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    today = date.today()
    out: list[dict[str, Any]] = [
        build.patient(pid, gender=sex, birth_date=birth_date(age) if age is not None else None)
    ]
    if earlier_scr is not None:
        out.append(build.observation(f"{pid}-cr0", pid, "2160-0", today - timedelta(days=scr_days_ago + 3),
                                     earlier_scr, "mg/dL"))  # fmt: skip
    if scr is not None:
        out.append(build.observation(f"{pid}-cr1", pid, "2160-0", today - timedelta(days=scr_days_ago), scr, scr_unit))
    if weight is not None:
        out.append(build.observation(f"{pid}-wt", pid, "29463-7", today - timedelta(days=weight_days_ago), weight,
                                     "kg"))  # fmt: skip
    if height is not None:
        out.append(build.observation(f"{pid}-ht", pid, "8302-2", today - timedelta(days=30), height, "cm"))
    if af:
        out.append(build.condition(f"{pid}-af", pid, "I48.91", display="Unspecified atrial fibrillation"))
    if dialysis:
        out.append(build.condition(f"{pid}-hd", pid, "Z99.2", display="Dependence on renal dialysis"))
    if vte_days_ago is not None:
        out.append(build.condition(f"{pid}-pe", pid, "I26.99", display="Pulmonary embolism",
                                   onset=today - timedelta(days=vte_days_ago)))  # fmt: skip
    for i, (display, rxcui) in enumerate(active or []):
        out.append(build.medication_request(f"{pid}-med{i}", pid, display, rxcui=rxcui))
    return out


def searchset(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in items]}


def prefetch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The seven dosing prefetch keys (renal dosing RD-8.2) as an EHR fills them."""

    def obs(loincs: set[str]) -> dict[str, Any]:
        return searchset([r for r in items if r["resourceType"] == "Observation"
                          and r["code"]["coding"][0]["code"] in loincs])  # fmt: skip

    return {
        "patient": items[0],
        "renalLabs": obs(set(codes.CREATININE)),
        "bodyWeight": obs({"29463-7"}),
        "bodyHeight": obs({"8302-2"}),
        "conditions": searchset([r for r in items if r["resourceType"] == "Condition"]),
        "medications": searchset([r for r in items if r["resourceType"] == "MedicationRequest"]),
        "procedures": searchset([]),
    }


def sandbox_draft(pid: str, rxcui: str | None, name: str = "", *, pills: float = 1, frequency: int = 2,
                  rid: str = "request-123", reason: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The draft the CDS Hooks Sandbox's Rx View builds (src/reducers/medication-reducers.js): STU3-style Dosage-level
    doseQuantity in `{pill}`, timing.repeat per day, category and reasonCode as single objects, no intent. Without
    `rxcui`: the draft sent while the user is still typing (no medication)."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": rid, "authoredOn": date.today().isoformat(), "status": "draft",
        "subject": {"reference": f"Patient/{pid}"},
        "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                 "code": "outpatient"}]},
    }  # fmt: skip
    if rxcui is not None:
        resource["dosageInstruction"] = [{
            "doseQuantity": {"value": pills, "system": "http://unitsofmeasure.org", "code": "{pill}"},
            "timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}},
        }]  # fmt: skip
        resource["medicationCodeableConcept"] = {"text": name, "coding": [{"display": name, "system": RXNORM,
                                                                           "code": rxcui}]}  # fmt: skip
    if reason is not None:
        resource["reasonCode"] = reason
    return resource


def epic_draft(pid: str, rid: str, med_id: str, display: str, rxcui: str, *, mg: float, timing_code: str,
               contained: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """An Epic-style draft: medicationReference to a Medication (contained or a separate entry) coded with the RxNorm
    OID, a Dosage-level doseQuantity in mg, the ordered-dose extension and timing.code "BID"."""
    medication = {"resourceType": "Medication", "id": med_id,
                  "code": {"text": display, "coding": [{"system": EPIC_RXNORM, "code": rxcui, "display": display}]},
                  # Epic's published example: numerator = denominator (never used, RD-5.2 step 4)
                  "ingredient": [{"strength": {"numerator": {"value": 1, "unit": "mg"},
                                               "denominator": {"value": 1, "unit": "mg"}}}]}  # fmt: skip
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationReference": {"reference": f"#{med_id}" if contained else f"Medication/{med_id}",
                                "display": display},
        "dosageInstruction": [{
            "text": f"{display}, {timing_code}",
            "timing": {"code": {"text": timing_code}},
            "doseQuantity": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
            "extension": [{"url": "https://open.epic.com/fhir/extensions/ordered-dose",
                           "valueQuantity": {"value": mg, "unit": "mg", "code": "mg"}}],
        }],
    }  # fmt: skip
    if contained:
        request["contained"] = [copy.deepcopy(medication)]
    return request, medication


def draft_bundle(*resources: dict[str, Any], with_type: bool = False) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    if with_type:
        bundle["type"] = "collection"
    return bundle


def order_call(hook: str, pid: str, items: list[dict[str, Any]], drafts: dict[str, Any],
               selections: list[str] | None = None, hook_instance: str = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    context: dict[str, Any] = {"patientId": pid, "userId": "Practitioner/example", "draftOrders": drafts}
    if selections is not None:
        context["selections"] = selections
    return {"hook": hook, "hookInstance": hook_instance, "context": context, "prefetch": prefetch(items), **extra}
