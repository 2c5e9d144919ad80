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


def test_josue_sipes_g3b_a1_coded_ckd_on_metformin() -> None:
    # Man born 1956-03-10, age 65 on 2021-03-13: two creatinines that day (2.272 and 2.502 mg/dL); the higher eGFR
    # counts as the later (S8): 142 × (2.272/0.9)^−1.2 × 0.9938^65 = 31.20. ACR 18.7 mg/g -> A1; G3b/A1 high.
    out = assessed("Josue_Sipes")
    assert out["egfr"]["date"] == "2021-03-13"
    assert out["egfr"]["value"] == pytest.approx(31.20, abs=0.05)
    assert (out["g_stage"], out["a_stage"], out["kdigo_risk"]) == ("G3b", "A1", "high")
    # KFRE 4-variable: X = −0.2225 -> 5-year 1 − 0.924^exp(X) = 6.13 % (≥ 5 %: referral)
    assert out["kfre"]["risk_5y"] == pytest.approx(0.0613, abs=0.0005)
    assert out["care_gaps"] == []  # SNOMED 431855005 is coded; ACR within 12 months
    # [2.0] S5 (d): the higher same-day value 2.502 >= 1.5 × 1.6626, the median of the 11 creatinines dated 8–365
    # days before (1.0085 1.0886 1.4670 1.5807 1.6009 [1.6626] 1.6709 1.8906 2.0522 2.2622 2.3462): the latest
    # element of C is flagged, so aki_caution fires and the SGLT2i start waits (spec 2.0 §7.2).
    assert out["recommendations"] == ["aki_caution", "metformin_reduce", "nephrology_referral", "statin"]
    assert out["excluded"][-1] == {"date": "2021-03-13", "value": pytest.approx(2.5025, abs=1e-4), "why": "aki"}


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
