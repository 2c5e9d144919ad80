"""The mortality model: reproducible training, published hazard ratios, and the request-time dot product."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from service.clinical.equations import Sex
from service.clinical.mortality import MODEL_PATH, load_model

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "mortality_flchain" / "1"


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    subprocess.run([sys.executable, str(MODEL_DIR / "train.py"), "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    return out


def test_training_reproduces_model_json_exactly(retrained: Path) -> None:
    assert (retrained / "model.json").read_bytes() == MODEL_PATH.read_bytes()


def test_published_hazard_ratios_lie_inside_our_intervals(retrained: Path) -> None:
    hrs = json.loads((retrained / "metrics.json").read_text())["hazard_ratios_vs_egfr_ge_60"]
    for band in ("45-59", "30-44", "15-29"):
        low, high = hrs[band]["hr_95ci"]
        assert low <= hrs[band]["ckd_pc_published"] <= high, band
    assert hrs["45-59"]["hr"] < hrs["30-44"]["hr"] < hrs["15-29"]["hr"]


def test_validation_has_intervals_and_discriminates(retrained: Path) -> None:
    metrics = json.loads((retrained / "metrics.json").read_text())
    for split in ("random_split", "temporal_split"):
        low, high = metrics[split]["auc_95ci"]
        assert low <= metrics[split]["auc"] <= high
        assert low > 0.7
    assert len(metrics["calibration_random_split"]) == 10


def test_request_time_risk_is_the_logistic_dot_product() -> None:
    data = json.loads(MODEL_PATH.read_text())
    c = data["coefficients"]
    # woman, 80 years, eGFR 35: features (1.0, 0, 2.5, 0)
    z = data["intercept"] + c["age_per_decade_from_70"] * 1.0 + c["egfr_below_60_per_10"] * 2.5
    assert load_model().risk_5y(80, Sex.FEMALE, 35) == pytest.approx(1 / (1 + math.exp(-z)))
    assert load_model().risk_5y(45, Sex.FEMALE, 35) is None  # outside the training population


def test_risk_rises_with_age_and_lower_egfr() -> None:
    model = load_model()
    risk = model.risk_5y
    assert risk(60, Sex.MALE, 50) < risk(80, Sex.MALE, 50)  # type: ignore[operator]
    assert risk(70, Sex.FEMALE, 55) < risk(70, Sex.FEMALE, 25)  # type: ignore[operator]
    assert risk(70, Sex.FEMALE, 50) < risk(70, Sex.MALE, 50)  # type: ignore[operator]


def test_no_scikit_learn_on_the_request_path() -> None:
    code = (
        "import sys; import service.web; from service.clinical.mortality import load_model; load_model(); "
        "print('sklearn' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"
