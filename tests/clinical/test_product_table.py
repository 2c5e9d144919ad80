"""The RxNorm product -> ingredient table of clinical spec 2.1 §7.3 (service/clinical/data, PROVENANCE.md)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from service.clinical.medications import INGREDIENTS, DrugClass, product_table
from service.fhir.adapter import medication_fact
from tests.clinical.helpers import Pt

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea-smart-r4"


def fact(code: str, display: str = "") -> set[str]:
    found = medication_fact({"coding": [{"system": RXNORM, "code": code, "display": display}]})
    return set(found.ingredients) if found else set()


def test_spec_examples() -> None:
    assert fact("316672", "Simvistatin 10 MG") == {"simvastatin"}  # the display misspells it: the code decides
    assert fact("1656356") == {"sacubitril", "valsartan"}
    assert fact("1545150") == {"canagliflozin", "metformin"}  # a combination maps to every ingredient


def test_a_code_absent_from_the_table_falls_through_to_atc_and_names() -> None:
    assert fact("999999999", "Lisinopril 10 MG Oral Tablet") == {"lisinopril"}
    atc = medication_fact({"coding": [{"system": RXNORM, "code": "999999999"},
                                      {"system": "http://www.whocc.no/atc", "code": "C10AA01"}]})  # fmt: skip
    assert atc is not None
    assert DrugClass.STATIN in atc.classes


def test_brand_names() -> None:
    zocor = medication_fact({"text": "Zocor 20 mg tablet"})
    entresto = medication_fact({"text": "Entresto 97/103"})
    assert zocor is not None
    assert entresto is not None
    assert set(zocor.ingredients) == {"simvastatin"}
    assert set(entresto.ingredients) == {"sacubitril", "valsartan"}


def test_every_row_names_spec_ingredients_only() -> None:
    products, brands = product_table()
    assert len(products) > 400
    assert all(names and names <= INGREDIENTS.keys() for names in [*products.values(), *brands.values()])


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/data is not beside the checkout")
def test_every_synthea_order_with_a_spec_ingredient_is_covered() -> None:
    products, _ = product_table()
    missing = set()
    for path in SYNTHEA.glob("*.json.gz"):
        for entry in json.loads(gzip.decompress(path.read_bytes()))["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "MedicationRequest":
                continue
            for coding in resource.get("medicationCodeableConcept", {}).get("coding", []):
                display = coding.get("display", "").lower()
                named = any(name in display for name in INGREDIENTS) or "simvistatin" in display
                if named and coding["code"] not in products:
                    missing.add(coding["code"])
    assert missing == set()


def test_a_patient_on_simvastatin_by_product_code_gets_no_statin_card() -> None:
    on_statin = Pt().ckd_g3a().med("Simvistatin 10 MG", rxcui="316672")
    outcome = next(o for o in on_statin.assess().outcomes if o.rule.value == "statin")
    assert outcome.suppressed_by == "on_statin"
