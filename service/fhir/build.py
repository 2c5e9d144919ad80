"""Small builders for FHIR R4 resources as dicts: demo patients and tests.

They write what the adapter reads (LOINC-coded Observations, ICD-10-CM/SNOMED Conditions, RxNorm
MedicationRequests), nothing more.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from service.clinical import codes

Resource = dict[str, Any]


def patient(pid: str, *, gender: str | None, birth_date: str | None, name: str = "Demo Patient") -> Resource:
    given, _, family = name.partition(" ")
    res: Resource = {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": [given]}]}
    if gender is not None:
        res["gender"] = gender
    if birth_date is not None:
        res["birthDate"] = birth_date
    return res


def observation(
    oid: str,
    pid: str,
    code: str,
    when: date | str,
    value: float | None = None,
    unit: str | None = None,
    *,
    display: str = "",
    status: str = "final",
    comparator: str | None = None,
    value_string: str | None = None,
) -> Resource:
    res: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": codes.LOINC, "code": code, "display": display or code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when.isoformat() if isinstance(when, date) else when,
    }
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
        if comparator is not None:
            quantity["comparator"] = comparator
        res["valueQuantity"] = quantity
    if value_string is not None:
        res["valueString"] = value_string
    return res


def condition(
    cid: str,
    pid: str,
    code: str,
    *,
    system: str = codes.ICD10CM,
    display: str = "",
    onset: date | str | None = None,
    clinical_status: str = "active",
    verification_status: str | None = None,
) -> Resource:
    res: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical_status}]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display or code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if verification_status:
        res["verificationStatus"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification_status}
            ]
        }
    if onset is not None:
        res["onsetDateTime"] = onset.isoformat() if isinstance(onset, date) else onset
    return res


def medication_request(
    mid: str,
    pid: str,
    display: str,
    *,
    rxcui: str | None = None,
    status: str = "active",
    system: str = codes.RXNORM,
    authored: date | None = None,
) -> Resource:
    coding: dict[str, Any] = {"system": system, "display": display}
    if rxcui is not None:
        coding["code"] = rxcui
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [coding], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        **({"authoredOn": authored.isoformat()} if authored else {}),
    }


def bundle(resources: list[Resource], *, bundle_type: str = "collection") -> Resource:
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }
