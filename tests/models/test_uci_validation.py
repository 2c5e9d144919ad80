"""The UCI CKD validation: figures with intervals, both sex assumptions, and docs/validation.md kept current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.validation.uci_ckd import DEFAULT_DATA, read_records, render, validate, wilson

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason="../shared/data is not beside the checkout")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return validate(DEFAULT_DATA)


def test_malformed_arff_is_read_completely() -> None:
    rows = read_records(DEFAULT_DATA)
    assert len(rows) == 400
    assert sum(r["class"] == "ckd" for r in rows) == 250  # stray tabs and extra commas handled


def test_every_figure_has_an_interval_containing_it(results: dict[str, Any]) -> None:
    for assumption in ("all_female", "all_male"):
        s = results[assumption]
        assert s["tp"] + s["fn"] == 250
        assert s["tn"] + s["fp"] == 150
        for measure in ("sensitivity", "specificity"):
            low, high = s[f"{measure}_95ci"]
            assert low <= s[measure] <= high
    # The female assumption lowers eGFR for the same creatinine: more flagged, never fewer.
    assert results["all_female"]["tp"] >= results["all_male"]["tp"]
    assert results["all_female"]["fp"] >= results["all_male"]["fp"]


def test_wilson_interval_known_value() -> None:
    # 8 of 10, worked by hand from the Wilson formula (Newcombe, Stat Med 1998, method 3): 0.490–0.943
    assert wilson(8, 10) == [0.49, 0.943]


def test_validation_doc_is_current(results: dict[str, Any]) -> None:
    # the page starts with this script's part; the alert-burden section (make review) follows it
    assert (ROOT / "docs" / "validation.md").read_text(encoding="utf-8").startswith(render(results))
