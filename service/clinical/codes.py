"""Code lists (clinical spec §8), each with its source and verification status.

Statuses follow the spec: "verified" codes were read in the named public source; "to verify" codes are kept because
the contract requires them, and the name-matching fallback stays in place for medicines (spec §8.5).
"""

from __future__ import annotations

from enum import StrEnum

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"

# --- LOINC (spec §8.1 and §9.5) -------------------------------------------------------------------------------
# Serum creatinine: PEDSnet lab_2021_10_SerumCreatinine_V1.csv; cqframework valueset-creatinine-lab-results.fsh.
CREATININE_MG_DL = frozenset({"2160-0", "38483-4"})
CREATININE_UMOL_L = frozenset({"14682-9"})
CREATININE_EITHER = frozenset({"35203-9"})  # mass or moles: the unit is required
CREATININE = CREATININE_MG_DL | CREATININE_UMOL_L | CREATININE_EITHER
# [2.1] S4 step 3: a whole-blood creatinine (point of care) is set aside beside a serum/plasma one of one specimen.
CREATININE_WHOLE_BLOOD = frozenset({"38483-4"})
CYSTATIN_C = frozenset({"33863-2"})  # PEDSnet lab_2021_11_SerumCystatin_V1.csv; display only
# Reported CKD-EPI 2021 eGFR: hl7ch/ch-lab-report ChLabObservation_eGFR_CKD_EPI_2021.fsh.
EGFR_REPORTED = {"98979-8": "ckd-epi-2021-cr", "98980-6": "ckd-epi-2021-cr-cys"}
# Urine ACR: cqframework valueset-uacr-lab-results.fsh; Columbia eMERGE template (14959-1); 32294-1 to verify.
ACR = frozenset({"9318-7", "14959-1", "32294-1", "13705-9", "14958-3"})
# Urine PCR: PEDSnet lab_2021_10_UrineProteintoCreatineRatio_V1.csv.
PCR = frozenset({"2890-2", "34366-5", "13801-6"})
# Dipstick protein: PEDSnet lab_2021_11_UrineProteinQualitative_V1.csv.
DIPSTICK = frozenset({"20454-5", "5804-0", "2887-8", "50561-0", "57735-3"})
DIPSTICK_MG_DL = frozenset({"5804-0"})  # the only dipstick code read as a quantity in mg/dL
HEIGHT = frozenset({"8302-2"})  # HL7 FHIR R4 vital-signs body height
WEIGHT = frozenset({"29463-7"})  # HL7 FHIR R4 vital-signs body weight (renal dosing spec RD-2.4, RD-11.2)
# [2.1] §8.1/§9.5 blood pressure (HL7 FHIR R4 vital signs): systolic and diastolic alone or as panel components
SYSTOLIC = frozenset({"8480-6"})
DIASTOLIC = frozenset({"8462-4"})
BP_PANELS = frozenset({"85354-9", "55284-4"})
# [2.1] §8.4: Procedure codes read by S13 (SNOMED CT; PEDSnet dialysis and transplant sets; 265764009 is the session
# Procedure synthetichealth/synthea writes for dialysis patients)
DIALYSIS_PROCEDURES = frozenset({"108241001", "302497006", "71192002", "265764009"})
TRANSPLANT_PROCEDURES = frozenset({"70536003"})
POTASSIUM = frozenset({"2823-3", "6298-4", "77142-8", "39789-3", "32713-0"})  # PEDSnet SerumPotassium
HBA1C_PERCENT = frozenset({"4548-4", "17856-6", "4549-2", "17855-8"})  # PEDSnet HemoglobinA1CTest
HBA1C_IFCC = frozenset({"59261-8"})  # mmol/mol, converted to NGSP %
# KFRE-8 labs: to verify (unconfirmed in a public source; spec §8.1).
ALBUMIN = frozenset({"1751-7"})
PHOSPHATE = frozenset({"2777-1"})
BICARBONATE = frozenset({"1963-8", "2028-9"})
CALCIUM = frozenset({"17861-6"})

# Default unit when an Observation carries none (spec §3.2.3); any other unit-less Observation is ignored.
DEFAULT_UNIT = {
    "2160-0": "mg/dl",
    "38483-4": "mg/dl",
    "14682-9": "umol/l",
    "33863-2": "mg/l",
    "8302-2": "cm",
    "29463-7": "kg",  # renal dosing RD-2.4
    "98979-8": "ml/min/1.73m2",
    "98980-6": "ml/min/1.73m2",
}

# --- Dipstick answers (spec §8.2; all to verify): SNOMED CT and LOINC answer codes -> grade -------------------
DIPSTICK_ANSWER_CODES = {
    "260385009": "negative",
    "LA6577-6": "negative",
    "260405006": "trace",
    "LA11832-5": "trace",
    "260347006": "1+",
    "LA11841-6": "1+",
    "260348001": "2+",
    "LA11842-4": "2+",
    "260349009": "3+",
    "LA11843-2": "3+",
    "260350009": "4+",
    "LA11844-0": "4+",
}
DIPSTICK_TEXT = {
    "negative": "negative", "neg": "negative", "-": "negative", "0": "negative",
    "trace": "trace", "tr": "trace", "+-": "trace", "±": "trace",
    "1+": "1+", "+": "1+",
    "2+": "2+", "++": "2+",
    "3+": "3+", "+++": "3+",
    "4+": "4+", "++++": "4+",
}  # fmt: skip


class ConditionConcept(StrEnum):
    DIALYSIS = "dialysis"
    TRANSPLANT = "kidney_transplant"
    AKI = "aki"
    CKD_DIAGNOSIS = "ckd_diagnosis"
    T1D = "t1d"
    T2D = "t2d"
    DIABETES_OTHER = "diabetes_other"
    HYPERTENSION = "hypertension"
    HEART_FAILURE = "heart_failure"
    ATRIAL_FIBRILLATION = "atrial_fibrillation"  # renal dosing spec RD-11.1 (to verify)
    VTE = "vte"  # renal dosing spec RD-11.1: PE, acute and chronic lower-extremity DVT (to verify)


# --- ICD-10-CM (spec §8.3), matched after normalisation (upper case, dot after the third character) -----------
# Each entry: (code or prefix, is_prefix). Sources: PEDSnet dx_2021_11_KidneyDialysis_V1.csv (dialysis),
# dx_2021_11_KidneyTransplant_V1.csv (transplant), dx_2022_03_CKDAllStages_V1.csv (CKD),
# dx_2022_01_Hypertension_V1.csv (HTN, HF); Z91.15, N17, E13, I11.9, I15, I16, I50 are to verify.
ICD10_CONCEPTS: dict[ConditionConcept, tuple[tuple[str, bool], ...]] = {
    ConditionConcept.DIALYSIS: (
        ("Z99.2", False), ("Z49.01", False), ("Z49.02", False), ("Z49.31", False), ("Z49.32", False),
        ("Z91.15", False),
    ),
    ConditionConcept.TRANSPLANT: (("Z94.0", False), ("T86.1", True)),
    ConditionConcept.AKI: (("N17", True),),
    ConditionConcept.CKD_DIAGNOSIS: (
        ("N18.1", False), ("N18.2", False), ("N18.3", False), ("N18.30", False), ("N18.31", False),
        ("N18.32", False), ("N18.4", False), ("N18.5", False), ("N18.6", False), ("N18.9", False),
        ("E10.22", False), ("E11.22", False), ("I12.0", False), ("I12.9", False), ("I13.0", False),
        ("I13.10", False), ("I13.11", False), ("I13.2", False),
    ),
    ConditionConcept.T1D: (("E10", True),),
    ConditionConcept.T2D: (("E11", True),),
    ConditionConcept.DIABETES_OTHER: (("E13", True),),
    ConditionConcept.HYPERTENSION: (
        ("I10", True), ("I11", True), ("I12", True), ("I13", True), ("I15", True), ("I16", True),
    ),
    ConditionConcept.HEART_FAILURE: (("I50", True), ("I11.0", False), ("I13.0", False), ("I13.2", False)),
    # renal dosing spec RD-11.1 (to verify): I48.x; I26.x, I82.4x, I82.5x (Z86.71x and Z79.01 are not VTE)
    ConditionConcept.ATRIAL_FIBRILLATION: (("I48", True),),
    ConditionConcept.VTE: (("I26", True), ("I82.4", True), ("I82.5", True)),
}  # fmt: skip

# --- SNOMED CT (spec §8.4), exact codes. PEDSnet dialysis/transplant/CKD sets; cqframework for 709044004. ------
SNOMED_CONCEPTS: dict[ConditionConcept, frozenset[str]] = {
    ConditionConcept.DIALYSIS: frozenset({"108241001", "302497006", "71192002", "265764009", "714152005"}),
    ConditionConcept.TRANSPLANT: frozenset({"70536003", "161665007", "236436003", "714153000"}),
    ConditionConcept.CKD_DIAGNOSIS: frozenset(
        {
            "431855005", "431856006", "433144002", "700378005", "700379002", "431857002", "433146000",
            "46177005", "714152005", "714153000", "236436003", "709044004",
            # [2.1] diabetic kidney disease (no stage): synthetichealth/synthea kidney_conditions.json
            "127013003", "90781000119102", "157141000119108",
        }
    ),
    ConditionConcept.T2D: frozenset({"44054006"}),
    ConditionConcept.T1D: frozenset({"46635009"}),
    ConditionConcept.DIABETES_OTHER: frozenset({"73211009"}),
    # [2.1] 59621000 essential hypertension (synthetichealth/synthea hypertension.json)
    ConditionConcept.HYPERTENSION: frozenset({"38341003", "59621000"}),
    # [2.1] 88805009 chronic congestive heart failure (synthetichealth/synthea congestive_heart_failure.json)
    ConditionConcept.HEART_FAILURE: frozenset({"84114007", "88805009"}),
    # renal dosing spec RD-11.1 (to verify)
    ConditionConcept.ATRIAL_FIBRILLATION: frozenset({"49436004", "5370000", "282825002", "440059007", "440028005"}),
    ConditionConcept.VTE: frozenset({"128053003", "59282003"}),
}  # fmt: skip

# --- [2.1] Coded CKD stages (spec §8.6): the G category a CKD diagnosis code states ("none": no stage stated). A
# stage-3 code is compared as G3b; end-stage codes as G5. Names from PEDSnet CKD and hypertension sets.
NO_STAGE = "none"
ICD10_STAGES: dict[str, str] = {
    "N18.1": "1", "N18.2": "2", "N18.3": "3", "N18.30": "3", "N18.31": "3a", "N18.32": "3b", "N18.4": "4",
    "N18.5": "5", "N18.6": "5", "I12.0": "5", "I13.11": "5", "I13.2": "5",
    "N18.9": NO_STAGE, "E10.22": NO_STAGE, "E11.22": NO_STAGE, "I12.9": NO_STAGE, "I13.0": NO_STAGE,
    "I13.10": NO_STAGE,
}  # fmt: skip
SNOMED_STAGES: dict[str, str] = {
    "431855005": "1", "431856006": "2", "433144002": "3", "700378005": "3a", "700379002": "3b", "431857002": "4",
    "433146000": "5", "46177005": "5", "714152005": "5", "714153000": "5", "236436003": "5",
    "709044004": NO_STAGE, "127013003": NO_STAGE, "90781000119102": NO_STAGE, "157141000119108": NO_STAGE,
}  # fmt: skip
# The stated stage as a G category for comparison with g_stage (§8.6: "3" compares as G3b)
STAGE_AS_G = {"1": "G1", "2": "G2", "3": "G3b", "3a": "G3a", "3b": "G3b", "4": "G4", "5": "G5"}


def normalise_icd10(code: str) -> str:
    """Upper-case, drop spaces, and insert the dot after the third character if missing (Z992 -> Z99.2; spec §8.3)."""
    code = code.upper().replace(" ", "")
    if len(code) > 3 and "." not in code:
        code = f"{code[:3]}.{code[3:]}"
    return code


def icd10_concepts(code: str) -> set[ConditionConcept]:
    """The concepts an ICD-10-CM code belongs to; prefixes match the category and its children."""
    code = normalise_icd10(code)
    found: set[ConditionConcept] = set()
    for concept, entries in ICD10_CONCEPTS.items():
        for entry, is_prefix in entries:
            if code == entry or (is_prefix and code.startswith(entry)):
                found.add(concept)
    return found


def snomed_concepts(code: str) -> set[ConditionConcept]:
    return {concept for concept, codes in SNOMED_CONCEPTS.items() if code in codes}


# --- Problem-list stage codes (spec §7.4) ---------------------------------------------------------------------
STAGE_CODES: dict[str, tuple[str, str, str]] = {
    # stage: (ICD-10-CM, SNOMED CT, display)
    "G1": ("N18.1", "431855005", "Chronic kidney disease stage 1"),
    "G2": ("N18.2", "431856006", "Chronic kidney disease stage 2"),
    "G3a": ("N18.31", "700378005", "Chronic kidney disease stage 3a"),
    "G3b": ("N18.32", "700379002", "Chronic kidney disease stage 3b"),
    "G4": ("N18.4", "431857002", "Chronic kidney disease stage 4"),
    "G5": ("N18.5", "433146000", "Chronic kidney disease stage 5"),
    "dialysis": ("N18.6", "714152005", "End stage renal disease (on dialysis)"),
    "unstaged": ("N18.9", "709044004", "Chronic kidney disease, unspecified"),
}
