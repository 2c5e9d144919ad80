"""`ckd-cds dose` (renal dosing spec RD-9): the contract's example, the FHIR form, JSON Lines and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.dosing.shapes import draft_bundle, patient_resources, sandbox_draft

FACTS = {"as_of": "2026-12-01",
         "patient": {"age": 82, "sex": "female", "weight_kg": 58, "weight_date": "2026-11-28", "height_cm": 160,
                     "scr_mg_dl": 1.6, "scr_date": "2026-11-20", "scr_aki": False, "dialysis": False, "af": True,
                     "active": ["metformin"]},
         "orders": [{"id": "o1", "rxnorm": "1364445", "count": 1, "per_day": 2}]}  # fmt: skip
# RD-9.3's example line, verbatim
EXAMPLE = {"order": 0, "order_id": "o1", "rxnorm": "1364445", "ingredient": "apixaban", "row": "apixaban",
           "rule_id": "dose.apixaban.reduced", "measure": "apixaban", "measure_value": 3, "crcl_ml_min": None,
           "crcl_indexed": None, "egfr": None, "egfr_ml_min": None, "apixaban_criteria_met": 3, "weight_kg": 58.0,
           "weight_basis": "actual", "alt": None, "band": "reduced", "action": "reduce", "indicator": "warning",
           "hedged": False, "dose_mg_per_day": 10.0, "recommended": "2.5 mg twice daily",
           "suggested_rxnorm": "1364435", "reasons": []}  # fmt: skip


def run(tmp_path: Path, data: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any], str]:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    code = main(["dose", str(path), *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_the_contract_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(tmp_path, FACTS, capsys)
    assert (code, err) == (0, "")
    assert lines == [EXAMPLE]
    assert list(lines[0]) == list(EXAMPLE)  # every key, in the contract's order


def test_fhir_form_and_several_orders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = patient_resources("p1", age=68, sex="male", scr=4.0, weight=80, af=True)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in items]}
    drafts = draft_bundle(sandbox_draft("p1", "310431", "gabapentin 300 MG Oral Capsule", frequency=3, rid="a"),
                          sandbox_draft("p1", "1364445", "apixaban 5 MG Oral Tablet", rid="b"),
                          sandbox_draft("p1", None, rid="typing"))  # fmt: skip
    from datetime import date

    code, lines, _ = run(tmp_path, {"as_of": date.today().isoformat(), "bundle": bundle, "draftOrders": drafts}, capsys)
    assert code == 0
    assert [(x["order"], x["order_id"], x["rule_id"]) for x in lines] == [
        (0, "a", "dose.gabapentin.15to30"), (1, "b", "dose.apixaban.standard")]  # fmt: skip
    assert lines[0]["crcl_ml_min"] == pytest.approx(20.0)  # (140 − 68) × 80 / (72 × 4.0)
    assert lines[0]["suggested_rxnorm"] == "310430"


def test_zero_checked_orders_print_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, {**FACTS, "orders": []}, capsys)[:2] == (0, [])


def test_no_rule_line_and_as_of_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {**FACTS, "orders": [{"id": "x", "ingredient": "amoxicillin", "count": 1, "per_day": 3}]}
    code, lines, _ = run(tmp_path, data, capsys, "--as-of", "2026-12-02")
    assert code == 0
    assert (lines[0]["action"], lines[0]["rule_id"], lines[0]["ingredient"]) == ("no_rule", None, "amoxicillin")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "must be a JSON object"),
        ({"patient": {}, "orders": []}, "as_of is required"),
        ({**FACTS, "as_of": "2026-13-01"}, "as_of must be a date"),
        ({**FACTS, "patient": []}, "patient must be an object"),
        ({**FACTS, "orders": {}}, "orders must be an array"),
        ({**FACTS, "orders": [1]}, "orders[0] must be an object"),
        ({**FACTS, "patient": {**FACTS["patient"], "sex": "f"}}, "patient.sex"),
        ({**FACTS, "patient": {**FACTS["patient"], "scr_umol_l": 120}}, "not both"),
        ({**FACTS, "patient": {**FACTS["patient"], "scr_date": None}}, "scr_date is required"),
        ({**FACTS, "patient": {**FACTS["patient"], "scr_date": "2026-12-05"}}, "after as_of"),
        ({**FACTS, "patient": {**FACTS["patient"], "vte_date": "2027-01-01"}}, "vte_date is after as_of"),
        ({**FACTS, "patient": {**FACTS["patient"], "weight_kg": -1}}, "weight_kg must be positive"),
        ({**FACTS, "patient": {**FACTS["patient"], "af": "yes"}}, "patient.af must be true or false"),
        ({**FACTS, "patient": {**FACTS["patient"], "active": "metformin"}}, "patient.active"),
        ({**FACTS, "orders": [{"id": "o", "per_day": 0}]}, "per_day must be positive"),
        ({"as_of": "2026-12-01", "bundle": {"resourceType": "Bundle", "entry": []},
          "draftOrders": {"resourceType": "Bundle"}}, "exactly one Patient"),
        ({"as_of": "2026-12-01", "bundle": {}, "draftOrders": []}, "draftOrders must be a FHIR Bundle"),
        ({"as_of": "2026-12-01", "something": 1}, "must hold patient and orders"),
    ],
)  # fmt: skip
def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any,
                                           message: str) -> None:  # fmt: skip
    code, lines, err = run(tmp_path, data, capsys)
    assert (code, lines) == (2, [])
    assert err.count("\n") == 1
    assert err.startswith("ckd-cds: error: ")
    assert message in err


def test_an_invalid_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("renal_dosing:\n  drugs:\n    gabapentin:\n      bands: []\n")
    code, _, err = run(tmp_path, FACTS, capsys, "--config", str(config))
    assert code == 2
    assert "renal_dosing.drugs.gabapentin.bands" in err
