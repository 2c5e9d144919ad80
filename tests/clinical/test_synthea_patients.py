"""Assessments of Synthea patients (../shared/data, as of 2021-04-01) against expectations derived by hand.

The eGFR values were worked out from the raw results with the published CKD-EPI 2021 formula, independently of the
code (four significant figures), hence the 0.05 tolerance.
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.clinical.assess import assess, assessment_to_json
from service.fhir.adapter import record_from_bundle

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-smart-r4"
AS_OF = date(2021, 4, 1)

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/data is not beside the checkout")


def assessed(name: str) -> dict[str, Any]:
    path = next(SYNTHEA.glob(f"{name}_*.json.gz"))
    return assessment_to_json(assess(record_from_bundle(json.loads(gzip.decompress(path.read_bytes()))), AS_OF))


def test_josue_sipes_g4_a1_coded_ckd_on_metformin() -> None:
    # Man born 1956-03-10, age 65 on 2021-03-13: two whole-blood creatinines with one timestamp (21:37:43), 2.2722 and
    # 2.5025 mg/dL. [2.1] S4: one specimen; 0.23 < 0.3 and 2.5025 < 1.2 × 2.2722 = 2.7266, so they agree and C holds
    # their mean 2.3873: 142 × (2.3873/0.9)^−1.2 × 0.9938^65 = 29.40 (2.0 took the higher eGFR, 31.20, from 2.2722).
    out = assessed("Josue_Sipes")
    assert out["egfr"]["date"] == "2021-03-13"
    assert out["egfr"]["value"] == pytest.approx(29.40, abs=0.05)
    assert (out["g_stage"], out["a_stage"], out["kdigo_risk"]) == ("G4", "A1", "very high")
    assert out["kfre"]["risk_5y"] >= 0.05  # referral by KFRE as under 2.0 (X rises as eGFR falls)
    # [2.1] SNOMED 431855005 (CKD stage 1) is coded while the labs show G4: the coded stage is out of date; ACR
    # within 12 months
    assert out["care_gaps"] == ["ckd_stage_outdated"]
    # S5 (d): the 8–365-day median is 1.6626 (the 2020-05-16 pair, 1.0085 and 1.8906, now conflicts and leaves C:
    # 1.0886 1.4670 1.5807 1.6009 [1.6626] 1.6709 2.0522 2.2622 2.3462), and 2.3873 < 1.5 × 1.6626 = 2.4939: not
    # flagged, so no AKI card (2.0 flagged the higher same-minute value 2.5025 alone). eGFR 29.4 < 30: stop metformin.
    # [2.1] blood pressure (55284-4 panels): systolic 167.0 (2021-01-16), 179.4 (02-13), 179.6 (03-13), mean 175.3 >=
    # 120 + 10: bp_above_target, after the drug starts and before the statin (§7.4 order)
    assert out["blood_pressure"]["systolic_mean"] == pytest.approx((166.9956 + 179.4025 + 179.6044) / 3, abs=1e-3)
    assert out["recommendations"] == ["metformin_stop", "nephrology_referral", "sglt2i", "bp_above_target", "statin"]
    assert {"date": "2020-05-16", "value": pytest.approx(1.0085, abs=1e-4), "why": "conflict"} in out["excluded"]


def test_dirk_kuhlman_g3a_a1_chronic() -> None:
    # Man born 1971-12-07, age 49: creatinine 1.5107 on 2021-03-02 -> 142 × (1.6786)^−1.2 × 0.9938^49 = 56.23;
    # 1.4867 on 2020-10-06 (147 days earlier) -> eGFR about 57.4, also < 60: chronic. ACR 9.46 mg/g -> A1.
    out = assessed("Dirk_Kuhlman")
    assert out["egfr"]["value"] == pytest.approx(56.23, abs=0.05)
    assert (out["reason"], out["g_stage"], out["a_stage"], out["kdigo_risk"]) == (
        "egfr_lt60_chronic", "G3a", "A1", "moderate",
    )  # fmt: skip
    assert "statin" in out["recommendations"]  # 49 y with diabetes (KDIGO 2013 Lipid 2A)
    assert "sglt2i" in out["recommendations"]  # T2D


def test_adalberto_hartmann_normal() -> None:
    # Man born 1949-11-29, age 71: creatinine 0.83 on 2021-03-31 -> 142 × (0.83/0.9)^−0.302 × 0.9938^71 = 93.57.
    out = assessed("Adalberto_Hartmann")
    assert out["egfr"]["value"] == pytest.approx(93.57, abs=0.05)
    assert (out["ckd"], out["reason"], out["g_stage"], out["kdigo_risk"]) == (False, "normal", "G1", None)
    assert out["recommendations"] == []


def test_every_synthea_bundle_assesses_without_error() -> None:
    patients = 0
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        if not any(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"]):
            continue
        out = assessment_to_json(assess(record_from_bundle(bundle), AS_OF))
        assert out["chronic"] is out["ckd"]
        patients += 1
    assert patients == 263
