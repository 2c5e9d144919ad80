"""The `ckd-patient-view` service (hook `patient-view`): CKD detection, staging and KDIGO care gaps when a chart opens.

What this module declares, and nothing else: the prefetch templates (clinical spec §9.5, CDS Hooks contract D-03) and
the service's own step, `respond`: run the clinical engine on the acquired data, ask override memory which cards are
snoozed, and build the cards. Everything a call shares with other services is in `service.web.hooks`.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from cards.builder import CardRequest, build_cards, card_fingerprints, suppressed, wanted_cards
from service.clinical import codes
from service.clinical.assess import Assessment, assess
from service.clinical.record import PatientRecord
from service.clinical.thresholds import SiteCode, Thresholds
from service.fhir.adapter import record_from_resources, site_code_map
from service.web.acquire import PatientData
from service.web.registry import PATIENT_TOKEN, CdsService, PrefetchKey, ServiceCall, ServiceResult, code_param

KIDNEY_CODES = codes.CREATININE | codes.CYSTATIN_C | frozenset(codes.EGFR_REPORTED)
URINE_CODES = codes.ACR | codes.PCR | codes.DIPSTICK
SUPPORT_CODES = (
    codes.HEIGHT | codes.POTASSIUM | codes.HBA1C_PERCENT | codes.HBA1C_IFCC | codes.ALBUMIN | codes.PHOSPHATE
    | codes.BICARBONATE | codes.CALCIUM
)  # fmt: skip


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


CKD_PREFETCH = ckd_prefetch()


def assess_data(data: PatientData, thresholds: Thresholds) -> tuple[PatientRecord, Assessment]:
    """The patient's record and the clinical engine on it, `as_of` today in the configured time zone (spec §7.4).
    The cards and the kidney trend view (issue #23) both start here."""
    as_of = datetime.now(ZoneInfo(thresholds.service.timezone)).date()
    record = record_from_resources(data.patient, data.resources, site_codes=site_code_map(thresholds.site_codes))
    return record, assess(record, as_of, thresholds)


def run_engine(data: PatientData, thresholds: Thresholds, audit: dict[str, object]) -> Assessment:
    """The clinical engine on the patient's data; the audit gets the dates of the results it read."""
    record, assessment = assess_data(data, thresholds)
    audit["lab_dates"] = sorted({v.date.isoformat() for v in record.creatinine + record.reported_egfr} |
                                {u.date.isoformat() for u in record.urine})[-20:]  # fmt: skip
    return assessment


def respond(call: ServiceCall) -> ServiceResult:
    assessment = run_engine(call.data, call.thresholds, call.audit)
    wanted = wanted_cards(assessment)  # once: for the snooze lookup and for the cards
    snoozed = call.snoozed(card_fingerprints(assessment, wanted)) if wanted else {}
    request = CardRequest(patient_id=call.patient_id, hook_instance=call.body["hookInstance"], service_id=SERVICE.id,
                          config_version=call.config_version, incomplete=call.data.incomplete, snoozed=snoozed,
                          patient_link=call.patient_link, trend=call.trend)  # fmt: skip
    built = build_cards(assessment, request, wanted)
    return ServiceResult(built=built, rules_fired=[o.rule.value for o in assessment.fired],
                         rules_suppressed=suppressed(assessment.outcomes))  # fmt: skip


SERVICE = CdsService(
    id="ckd-patient-view",
    hook="patient-view",
    title="Chronic kidney disease: detection, staging and KDIGO care gaps",
    description="Finds CKD from creatinine and urine albumin results (CKD-EPI 2021, KDIGO chronicity), stages it, "
    "estimates kidney failure risk (KFRE) and suggests KDIGO 2024 care. Decision support only.",
    prefetch=ckd_prefetch,
    respond=respond,
    usage="Read access to Patient, Observation, Condition, MedicationRequest and Procedure (patient/*.read or "
    "user/*.read scopes) for data not sent in prefetch.",
)
