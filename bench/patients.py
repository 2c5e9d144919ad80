"""Benchmark patients: ten years of monthly labs (about 200 Observations, about 150 KB as a full prefetch) and a
small one, in the shape EHRs send (category, issued, encounter, display text, meta), built with service.fhir.build."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from service.fhir import build
from tests.dosing.shapes import draft_bundle, sandbox_draft
from tests.dosing.shapes import prefetch as dosing_prefetch
from tests.web.test_hooks import prefetch_for

PID = "bench-patient"


def _verbose(obs: dict[str, Any], i: int) -> dict[str, Any]:
    obs["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory", "display": "Laboratory"}]}]  # fmt: skip
    obs["issued"] = obs["effectiveDateTime"] + "T09:30:00.000+00:00"
    obs["encounter"] = {"reference": f"Encounter/enc-{i // 3}"}
    obs["meta"] = {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000+00:00"}
    obs["interpretation"] = [{"coding": [{"code": "N", "display": "Normal"}]}]
    return obs


def ten_year_patient(today: date) -> dict[str, Any]:
    items: list[dict[str, Any]] = [build.patient(PID, gender="female", birth_date="1952-03-14", name="Bench Patient")]
    labs = [("2160-0", "mg/dL", lambda m: 1.1 + m / 150, "Creatinine [Mass/volume] in Serum or Plasma"),
            ("9318-7", "mg/g", lambda m: 40 + m, "Albumin/Creatinine [Mass Ratio] in Urine"),
            ("2823-3", "mmol/L", lambda m: 4.4, "Potassium [Moles/volume] in Serum or Plasma")]  # fmt: skip
    i = 0
    for month in range(0, 120):
        for code, unit, value, display in labs:
            if code != "2160-0" and month % 3:
                continue  # ACR and potassium quarterly, creatinine monthly
            when = today - timedelta(days=30 * (119 - month) + 5)
            obs = build.observation(f"bench-{i}", PID, code, when, round(value(month), 2), unit, display=display)
            items.append(_verbose(obs, i))
            i += 1
    items += [build.condition("bench-dm", PID, "E11.9", display="Type 2 diabetes mellitus"),
              build.condition("bench-htn", PID, "I10", display="Essential hypertension"),
              build.medication_request("bench-med", PID, "Lisinopril 10 MG Oral Tablet", rxcui="314076")]  # fmt: skip
    return build.bundle(items)


def small_patient(today: date) -> dict[str, Any]:
    items = [build.patient(PID + "-small", gender="male", birth_date="1960-01-01"),
             build.observation("s1", PID + "-small", "2160-0", today - timedelta(days=200), 1.5, "mg/dL"),
             build.observation("s2", PID + "-small", "2160-0", today - timedelta(days=10), 1.5, "mg/dL"),
             build.observation("s3", PID + "-small", "9318-7", today - timedelta(days=10), 45, "mg/g")]  # fmt: skip
    return build.bundle(items)


def order_sign_body(today: date) -> dict[str, Any]:
    """Scenario (d), issue #22: order-sign with one draft (gabapentin 300 mg three times daily, as the CDS Hooks
    Sandbox's Rx Sign sends it) and the full dosing prefetch of the ten-year patient, with a weight and a height:
    creatinine about 1.9 mg/dL gives CrCl about 29 mL/min, so the call goes all the way to a card and a suggestion."""
    bundle = ten_year_patient(today)
    items = [e["resource"] for e in bundle["entry"]]
    items += [build.observation("bench-wt", PID, "29463-7", today - timedelta(days=5), 70, "kg", display="Body weight"),
              build.observation("bench-ht", PID, "8302-2", today - timedelta(days=400), 162, "cm",
                                display="Body height")]  # fmt: skip
    draft = sandbox_draft(PID, "310431", "gabapentin 300 MG Oral Capsule", pills=1, frequency=3)
    return {"hook": "order-sign", "hookInstance": "bench-hook-instance",
            "context": {"patientId": PID, "userId": "Practitioner/bench", "draftOrders": draft_bundle(draft)},
            "prefetch": dosing_prefetch(items)}  # fmt: skip


def hook_body(bundle: dict[str, Any], *, prefetch: bool, fhir: tuple[str, str] | None = None) -> dict[str, Any]:
    pid = bundle["entry"][0]["resource"]["id"]
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": "bench-hook-instance",
                            "context": {"patientId": pid, "userId": "Practitioner/bench"}}  # fmt: skip
    if prefetch:
        body["prefetch"] = prefetch_for(bundle)
    if fhir is not None:
        body["fhirServer"], token = fhir
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "bench", "patient": pid}  # fmt: skip
    return body
