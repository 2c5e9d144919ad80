"""Alert burden over the Synthea patients (issue #12): the two lines that must be zero, and the page kept current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.validation.alert_burden import (
    BASELINE,
    CURRENT,
    DEFAULT_DATA,
    DOC,
    RESULTS,
    SECTION_END,
    SECTION_START,
    render,
    review,
    says_ckd,
)

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="../shared/data is not beside the checkout")


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return review(DEFAULT_DATA, CURRENT)


def test_no_card_says_ckd_for_a_patient_without_ckd(figures: dict[str, Any]) -> None:
    assert figures["patients"] == 263
    assert figures["patients"] - figures["with_ckd"] > 150  # the check has patients to fail on
    assert figures["ckd_text_without_ckd"] == 0


@pytest.mark.parametrize("line", ["statin_on_statin", "aki_one_specimen", "new_fall_below_30_no_warning",
                                  "stale_drug_start"])  # fmt: skip
def test_the_four_zero_lines_of_spec_21(figures: dict[str, Any], line: str) -> None:
    """Issue #20: on the Synthea set no statin card for a patient on a statin (28 of 34 under 2.0), no AKI card on one
    specimen, no new fall below 30 without a warning, no drug start on a stale eGFR."""
    assert figures[line] == 0


def test_the_checks_have_patients_to_fail_on(figures: dict[str, Any]) -> None:
    # the statin line is only meaningful if statin cards are still shown where due, and the new-fall line if there
    # are new falls below 30 (the Synthea alternating-creatinine patients)
    assert figures["cards_per_rule"].get("statin", 0) > 0
    assert figures["cards_per_rule"].get("new_egfr_fall", 0) > 0


def test_no_card_for_a_deceased_patient(figures: dict[str, Any]) -> None:
    assert figures["deceased"] > 50  # S19 has patients to act on in this data set
    assert figures["cards_for_deceased"] == 0


def test_nothing_cut_by_the_cap_goes_unlisted(figures: dict[str, Any]) -> None:
    assert figures["overflow_cards"] == figures["charts_over_cap"]
    assert figures["cards_per_patient_with_cards"]["max"] <= figures["max_cards"]


@pytest.mark.parametrize(
    ("summary", "detail", "says"),
    [
        ("Possible CKD: repeat eGFR/ACR at ≥ 90 days", "eGFR 55 (CKD-EPI 2021 (creatinine))", False),
        ("CKD G3a/A2 (high risk) is not on the problem list", "", True),
        ("Consider a statin (CKD, age 65)", "", True),
        ("No urine ACR in the last 12 months: order one", "needed to stage CKD", True),
    ],
)
def test_says_ckd(summary: str, detail: str, says: bool) -> None:
    assert says_ckd({"summary": summary, "detail": detail}) is says


def test_validation_page_shows_the_current_figures(figures: dict[str, Any]) -> None:
    old = json.loads((RESULTS / f"alert-burden-{BASELINE}.json").read_text(encoding="utf-8"))
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION_START) : text.index(SECTION_END) + len(SECTION_END)] + "\n"
    assert section == render(old, figures)  # `make review` regenerates it
    assert (Path(DOC).parent / "img" / "alert-burden.png").is_file()
