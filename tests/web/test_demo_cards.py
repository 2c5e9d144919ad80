"""Every demo patient, as an EHR would call: the right cards and no wrong ones, via prefetch and via FHIR fallback.

The expected rules were reviewed against the clinical situation each demo patient was written for
(examples/patients/*.json meta.tag); every response is validated against the CDS Hooks 2.0 response schema.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from service.web.state import validator
from tests.conftest import make_app
from tests.web.test_hooks import call, prefetch_for, resources

URL = "/cds-services/ckd-patient-view"
DRUG_STARTS = {"rasi", "sglt2i", "finerenone", "glp1ra", "statin"}

EXPECTED: dict[str, list[str]] = {
    "01-normal": [],
    "02-single-abnormal": ["progression_review", "staging"],  # 40 % fall: review, and repeat before calling it CKD
    "03-g3a-a2-not-coded": ["problem_list", "rasi", "statin"],
    "04-diabetic-ckd-no-sglt2i": [
        "problem_list", "metformin_reduce", "nephrology_referral", "progression_review", "sglt2i", "finerenone",
        "statin",
    ],
    "05-g4-on-metformin": [
        "problem_list", "metformin_stop", "nephrology_referral", "progression_review", "sglt2i", "rasi", "statin",
    ],
    "06-nsaid-egfr-below-60": ["nsaid_avoid", "problem_list", "statin"],
    "07-aki-spike": ["aki_caution"],
    "08-dialysis": ["staging", "metformin_stop"],
    "09-transplant": ["problem_list", "statin"],
    "10-child-with-height": ["problem_list", "nephrology_referral"],
    "11-si-units": ["problem_list", "progression_review", "sglt2i", "rasi", "statin", "nephrology_referral"],
    "12-progression-high-kfre": [
        "problem_list", "nephrology_referral", "krt_planning", "progression_review", "statin",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def bundles() -> dict[str, dict[str, Any]]:
    return demo_bundles(date.today())


@pytest.fixture
def all_cards(tmp_path: Path) -> FlaskClient:
    return make_app(tmp_path, {"cards": {"max_cards": 20}, "fhir": {"budget_s": 5.0}}).test_client()


def rules(response_json: dict[str, Any]) -> list[str]:
    return [c["extension"]["org.ckd-cds.rule"]["id"] for c in response_json["cards"]]


def assert_valid(body: dict[str, Any]) -> None:
    errors = list(validator("cds-response").iter_errors(body))
    assert errors == []


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_demo_patient_cards_with_full_prefetch(
    all_cards: FlaskClient, bundles: dict[str, dict[str, Any]], slug: str
) -> None:
    bundle = bundles[slug]
    response = all_cards.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle)))
    assert response.status_code == 200
    assert_valid(response.json)
    assert rules(response.json) == EXPECTED[slug]


def test_no_child_dialysis_or_transplant_patient_gets_a_drug_start(
    all_cards: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    for slug in ("10-child-with-height", "08-dialysis"):
        bundle = bundles[slug]
        got = set(rules(all_cards.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))).json))
        assert got.isdisjoint(DRUG_STARTS)
    transplant = bundles["09-transplant"]
    got = rules(all_cards.post(URL, json=call(resources(transplant)[0]["id"], prefetch=prefetch_for(transplant))).json)
    assert set(got) & DRUG_STARTS == {"statin"}  # KDIGO 2013 Lipid: transplant recipients (2B)


@pytest.fixture(scope="module")
def loaded_server(fhir_server: RunningServer, bundles: dict[str, dict[str, Any]]) -> RunningServer:
    for bundle in bundles.values():
        load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    return fhir_server


@pytest.mark.fhir
@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_demo_patient_cards_from_the_fhir_server_match_prefetch(
    all_cards: FlaskClient, loaded_server: RunningServer, bundles: dict[str, dict[str, Any]], slug: str
) -> None:
    bundle = bundles[slug]
    pid = resources(bundle)[0]["id"]
    auth = {"access_token": loaded_server.token, "token_type": "Bearer", "expires_in": 300,
            "scope": "patient/*.read", "subject": "Practitioner/1", "patient": pid}  # fmt: skip
    fetched = all_cards.post(URL, json=call(pid, fhirServer=loaded_server.base_url, fhirAuthorization=auth))
    assert fetched.status_code == 200
    assert_valid(fetched.json)
    prefetched = all_cards.post(URL, json=call(pid, prefetch=prefetch_for(bundle)))
    assert fetched.json == prefetched.json


def test_competing_risk_context_on_an_eligible_demo_patient(
    all_cards: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    # Demo 04: man of 78, CKD G3b/A3, KFRE shown: the referral card weighs kidney failure against death.
    bundle = bundles["04-diabetic-ckd-no-sglt2i"]
    cards = all_cards.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))).json["cards"]
    referral = next(c for c in cards if c["extension"]["org.ckd-cds.rule"]["id"] == "nephrology_referral")
    assert "5-year risk of kidney failure" in referral["detail"]
    assert "vs death" in referral["detail"]
    child = bundles["10-child-with-height"]
    child_cards = all_cards.post(URL, json=call(resources(child)[0]["id"], prefetch=prefetch_for(child))).json["cards"]
    assert not any("vs death" in c["detail"] for c in child_cards)  # no KFRE, no model, under 50
