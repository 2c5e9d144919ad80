"""The registry of CDS services; discovery is generated from it (CDS Hooks contract D-01, D-03)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from service.clinical import codes
from service.clinical.thresholds import SiteCode

PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105 - a CDS Hooks prefetch token, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefetchKey:
    """One prefetch template: a FHIR read or search in the N-16 subset, with only the 2.0 context tokens."""

    name: str
    template: str
    required: bool
    kind: str = "search"  # "read" or "search"
    every_page: bool = False  # [2.1] the fallback follows `next` to the last page, within the budget (procedures)

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


KIDNEY_CODES = codes.CREATININE | codes.CYSTATIN_C | frozenset(codes.EGFR_REPORTED)
URINE_CODES = codes.ACR | codes.PCR | codes.DIPSTICK
SUPPORT_CODES = (
    codes.HEIGHT | codes.POTASSIUM | codes.HBA1C_PERCENT | codes.HBA1C_IFCC | codes.ALBUMIN | codes.PHOSPHATE
    | codes.BICARBONATE | codes.CALCIUM
)  # fmt: skip


def code_param(loincs: frozenset[str], site_codes: tuple[SiteCode, ...]) -> str:
    """LOINC codes, then the site's local codes that mean one of them (contract D-03)."""
    standard = [f"{codes.LOINC}|{c}" for c in sorted(loincs)]
    local = [f"{s.system}|{s.code}" for s in site_codes if s.loinc in loincs]
    return ",".join(standard + local)


@cache
def ckd_prefetch(site_codes: tuple[SiteCode, ...] = ()) -> tuple[PrefetchKey, ...]:
    """The ckd-patient-view templates; the code lists, and so discovery, follow the configuration.

    Cached per set of site codes: every request and discovery call reads them, a configuration change rarely.
    """
    kidney, urine = code_param(KIDNEY_CODES, site_codes), code_param(URINE_CODES, site_codes)
    support = code_param(SUPPORT_CODES, site_codes)
    bp = code_param(codes.BP_PANELS | codes.SYSTOLIC, site_codes)
    procedures = ",".join(
        f"{codes.SNOMED}|{c}" for c in sorted(codes.DIALYSIS_PROCEDURES | codes.TRANSPLANT_PROCEDURES)
    )
    obs = f"Observation?patient={PATIENT_TOKEN}&code="
    return (
        PrefetchKey(name="patient", template=f"Patient/{PATIENT_TOKEN}", required=True, kind="read"),
        PrefetchKey(name="kidneyLabs", template=f"{obs}{kidney}&_sort=-date&_count=100", required=True),
        PrefetchKey(name="urineLabs", template=f"{obs}{urine}&_sort=-date&_count=50", required=True),
        PrefetchKey(name="conditions", template=f"Condition?patient={PATIENT_TOKEN}&_count=100", required=True),
        PrefetchKey(
            name="medications",
            template=f"MedicationRequest?patient={PATIENT_TOKEN}&status=active,on-hold&_count=100",
            required=True,
        ),
        PrefetchKey(name="supportLabs", template=f"{obs}{support}&_sort=-date&_count=50", required=False),
        # [2.1] clinical spec §9.5: dialysis and transplant from Procedures (S13), blood pressure (bp_above_target)
        PrefetchKey(
            name="procedures",
            template=f"Procedure?patient={PATIENT_TOKEN}&code={procedures}&_sort=-date&_count=200",
            required=False,
            every_page=True,
        ),
        PrefetchKey(name="bloodPressure", template=f"{obs}{bp}&_sort=-date&_count=20", required=False),
    )


CKD_PREFETCH = ckd_prefetch()


@dataclass(frozen=True, slots=True, kw_only=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Callable[[tuple[SiteCode, ...]], tuple[PrefetchKey, ...]]

    def discovery(self, site_codes: tuple[SiteCode, ...] = ()) -> dict[str, object]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {k.name: k.template for k in self.prefetch(site_codes)},
            "usageRequirements": "Read access to Patient, Observation, Condition, MedicationRequest and Procedure "
            "(patient/*.read or user/*.read scopes) for data not sent in prefetch.",
        }


CKD_PATIENT_VIEW = CdsService(
    id="ckd-patient-view",
    hook="patient-view",
    title="Chronic kidney disease: detection, staging and KDIGO care gaps",
    description="Finds CKD from creatinine and urine albumin results (CKD-EPI 2021, KDIGO chronicity), stages it, "
    "estimates kidney failure risk (KFRE) and suggests KDIGO 2024 care. Decision support only.",
    prefetch=ckd_prefetch,
)

SERVICES: dict[str, CdsService] = {CKD_PATIENT_VIEW.id: CKD_PATIENT_VIEW}
