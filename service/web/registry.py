"""The registry of CDS services; discovery is generated from it (CDS Hooks contract D-01, D-03)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from service.clinical import codes

PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105 - a CDS Hooks prefetch token, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefetchKey:
    """One prefetch template: a FHIR read or search in the N-16 subset, with only the 2.0 context tokens."""

    name: str
    template: str
    required: bool
    kind: str = "search"  # "read" or "search"

    @property
    def expect(self) -> str:
        return "Patient" if self.kind == "read" else "Bundle"

    def path(self, patient_id: str) -> str:
        """The template with its token filled in and the query URL-encoded (| -> %7C), as we run it ourselves."""
        filled = self.template.replace(PATIENT_TOKEN, urllib.parse.quote(patient_id, safe=""))
        path, _, query = filled.partition("?")
        if not query:
            return path
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        return f"{path}?{urllib.parse.urlencode(pairs, safe=',-')}"


def code_param(*groups: frozenset[str] | dict[str, str]) -> str:
    return ",".join(f"{codes.LOINC}|{c}" for group in groups for c in sorted(group))


KIDNEY = code_param(codes.CREATININE, codes.CYSTATIN_C, codes.EGFR_REPORTED)
URINE = code_param(codes.ACR, codes.PCR, codes.DIPSTICK)
SUPPORT = code_param(
    codes.HEIGHT, codes.POTASSIUM, codes.HBA1C_PERCENT, codes.HBA1C_IFCC, codes.ALBUMIN, codes.PHOSPHATE,
    codes.BICARBONATE, codes.CALCIUM,
)  # fmt: skip

CKD_PREFETCH = (
    PrefetchKey(name="patient", template=f"Patient/{PATIENT_TOKEN}", required=True, kind="read"),
    PrefetchKey(
        name="kidneyLabs",
        template=f"Observation?patient={PATIENT_TOKEN}&code={KIDNEY}&_sort=-date&_count=100",
        required=True,
    ),
    PrefetchKey(
        name="urineLabs",
        template=f"Observation?patient={PATIENT_TOKEN}&code={URINE}&_sort=-date&_count=50",
        required=True,
    ),
    PrefetchKey(name="conditions", template=f"Condition?patient={PATIENT_TOKEN}&_count=100", required=True),
    PrefetchKey(
        name="medications",
        template=f"MedicationRequest?patient={PATIENT_TOKEN}&status=active,on-hold&_count=100",
        required=True,
    ),
    PrefetchKey(
        name="supportLabs",
        template=f"Observation?patient={PATIENT_TOKEN}&code={SUPPORT}&_sort=-date&_count=50",
        required=False,
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...]

    def discovery(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {k.name: k.template for k in self.prefetch},
            "usageRequirements": "Read access to Patient, Observation, Condition and MedicationRequest "
            "(patient/*.read or user/*.read scopes) for data not sent in prefetch.",
        }


CKD_PATIENT_VIEW = CdsService(
    id="ckd-patient-view",
    hook="patient-view",
    title="Chronic kidney disease: detection, staging and KDIGO care gaps",
    description="Finds CKD from creatinine and urine albumin results (CKD-EPI 2021, KDIGO chronicity), stages it, "
    "estimates kidney failure risk (KFRE) and suggests KDIGO 2024 care. Decision support only.",
    prefetch=CKD_PREFETCH,
)

SERVICES: dict[str, CdsService] = {CKD_PATIENT_VIEW.id: CKD_PATIENT_VIEW}
