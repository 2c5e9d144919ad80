"""The two renal dosing services on the real app and store (renal dosing spec RD-8): discovery, the request shapes
of the CDS Hooks Sandbox's Rx View / Rx Sign and of Epic, request checks, cards and suggestions, feedback, override
memory and audit. Every response is checked against the project's CDS Hooks response schema."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.web.state import validator
from tests.conftest import make_app
from tests.dosing.shapes import (
    draft_bundle,
    epic_draft,
    order_call,
    patient_resources,
    sandbox_draft,
)

SELECT = "/cds-services/ckd-renal-dosing-select"
SIGN = "/cds-services/ckd-renal-dosing-sign"
AF_82F = {"age": 82, "sex": "female", "scr": 1.6, "weight": 58, "height": 160, "af": True}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, {"fhir": {"budget_s": 5.0}})


def post(client: FlaskClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(url, json=body)
    assert response.status_code == 200, response.json
    problems = list(validator("cds-response").iter_errors(response.json))
    assert problems == []
    cards: list[dict[str, Any]] = response.json["cards"]
    return cards


def rule(card: dict[str, Any]) -> str:
    return str(card["extension"]["org.ckd-cds.rule"]["id"])


def select(client: FlaskClient, pid: str, items: list[dict[str, Any]], *drafts: dict[str, Any],
           selected: str = "MedicationRequest/request-123", **extra: Any) -> list[dict[str, Any]]:  # fmt: skip
    return post(client, SELECT, order_call("order-select", pid, items, draft_bundle(*drafts), [selected], **extra))


def sign(client: FlaskClient, pid: str, items: list[dict[str, Any]], *drafts: dict[str, Any],
         **extra: Any) -> list[dict[str, Any]]:  # fmt: skip
    return post(client, SIGN, order_call("order-sign", pid, items, draft_bundle(*drafts), **extra))


def test_discovery_lists_both_services_with_the_rd_8_2_templates(client: FlaskClient) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").json["services"]}
    assert set(services) == {"ckd-patient-view", "ckd-renal-dosing-select", "ckd-renal-dosing-sign"}
    assert services["ckd-renal-dosing-select"]["hook"] == "order-select"
    assert services["ckd-renal-dosing-sign"]["hook"] == "order-sign"
    for sid in ("ckd-renal-dosing-select", "ckd-renal-dosing-sign"):
        prefetch = services[sid]["prefetch"]
        assert set(prefetch) == {"patient", "renalLabs", "bodyWeight", "bodyHeight", "conditions", "medications",
                                 "procedures"}  # fmt: skip
        assert "http://loinc.org|29463-7" in prefetch["bodyWeight"]
        assert prefetch["renalLabs"].endswith("&_sort=-date&_count=100")
        assert prefetch["conditions"] == services["ckd-patient-view"]["prefetch"]["conditions"]
        assert all("{{context.patientId}}" in t and "draft" not in t for t in prefetch.values())
        assert "context.draftOrders" in services[sid]["usageRequirements"]


def test_sandbox_rx_view_apixaban_reduce_with_an_update_suggestion(client: FlaskClient) -> None:
    """Appendix C row 1: 82 F, 58 kg, creatinine 1.6, AF; apixaban 5 mg (1364445), 1 pill twice daily."""
    items = patient_resources("p-apx", **AF_82F)
    draft = sandbox_draft("p-apx", "1364445", "apixaban 5 MG Oral Tablet", pills=1, frequency=2)
    (card,) = select(client, "p-apx", items, draft)
    assert (rule(card), card["indicator"]) == ("dose.apixaban.reduced", "warning")
    assert card["summary"] == "Apixaban 5 mg twice daily: 2.5 mg twice daily (age 82, 58 kg, creatinine 1.6 mg/dL)"
    assert "3 of 3" in card["detail"]
    assert card["detail"].endswith("_Decision support only; verify before acting._")
    assert card["source"]["topic"]["code"] == "dose.apixaban.reduced"
    assert card["extension"]["org.ckd-cds.rule"]["order"] == "MedicationRequest/request-123"
    (suggestion,) = card["suggestions"]
    assert suggestion["label"] == "Change to apixaban 2.5 MG Oral Tablet, twice daily"
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    updated = action["resource"]
    assert updated["id"] == "request-123"
    assert updated["medicationCodeableConcept"]["coding"][0]["code"] == "1364435"
    assert updated["dosageInstruction"][0]["doseQuantity"] == {**draft["dosageInstruction"][0]["doseQuantity"],
                                                               "value": 1.0}  # fmt: skip
    assert updated["category"] == draft["category"]  # the draft in its entirety, as received
    assert "systemActions" not in card
    # the Sandbox swaps the drug code, then Rx View fires again: no card
    taken = copy.deepcopy(draft)
    taken["medicationCodeableConcept"] = updated["medicationCodeableConcept"]
    assert select(client, "p-apx", items, taken) == []


def test_sandbox_while_typing_and_without_af(client: FlaskClient) -> None:
    items = patient_resources("p-apx2", **{**AF_82F, "af": False})
    assert select(client, "p-apx2", items, sandbox_draft("p-apx2", None)) == []  # no medication yet
    (card,) = select(client, "p-apx2", items, sandbox_draft("p-apx2", "1364445", "apixaban 5 MG Oral Tablet"))
    assert rule(card) == "dose.apixaban.reduced"
    assert card["indicator"] == "info"  # RD-6.7: a hedged reduce is info
    assert " if for AF (" in card["summary"]
    assert "no AF diagnosis was found" in card["detail"]
    assert "suggestions" not in card


def test_dabigatran_gabapentin_nitrofurantoin_metformin(client: FlaskClient) -> None:
    """Appendix C scenarios at CrCl 20: a 68-year-old man, 80 kg, creatinine 4.0 mg/dL: (140 − 68) × 80 / (72 × 4.0)
    = 20 mL/min; CKD-EPI 2021 eGFR about 15 (metformin contraindicated below 30)."""
    items = patient_resources("p-crcl20", age=68, sex="male", scr=4.0, weight=80, af=True)
    dabi = sandbox_draft("p-crcl20", "1037045", "dabigatran etexilate 150 MG Oral Capsule", frequency=2)
    (card,) = sign(client, "p-crcl20", items, dabi)
    assert (rule(card), card["indicator"]) == ("dose.dabigatran.15to30", "warning")
    assert card["suggestions"][0]["actions"][0]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == \
        "1037179"  # fmt: skip
    gaba = sandbox_draft("p-crcl20", "310431", "gabapentin 300 MG Oral Capsule", frequency=3)
    (card,) = sign(client, "p-crcl20", items, gaba)
    assert (rule(card), card["indicator"]) == ("dose.gabapentin.15to30", "warning")
    assert card["summary"] == "Gabapentin 300 mg three times daily: above the 700 mg/day maximum (CrCl 20.0 mL/min)"
    assert card["suggestions"][0]["label"] == "Change to gabapentin 100 MG Oral Capsule, three times daily"
    nitro = sandbox_draft("p-crcl20", "311992", "nitrofurantoin 100 MG Oral Capsule", frequency=2)
    (card,) = sign(client, "p-crcl20", items, nitro)
    assert (rule(card), card["indicator"], "suggestions" in card) == ("dose.nitrofurantoin.lt30", "critical", False)
    # eGFR of a 68-year-old man with creatinine 4.0 is about 15: metformin is contraindicated
    met = sandbox_draft("p-crcl20", "861004", "metformin hydrochloride 1000 MG Oral Tablet", frequency=2)
    (card,) = sign(client, "p-crcl20", items, met)
    assert (rule(card), card["indicator"]) == ("dose.metformin.lt30", "critical")


def test_two_drafts_one_selected(client: FlaskClient) -> None:
    items = patient_resources("p-two", age=68, sex="male", scr=4.0, weight=80, af=True)
    nitro = sandbox_draft("p-two", "311992", "nitrofurantoin 100 MG Oral Capsule", rid="rx-1")
    gaba = sandbox_draft("p-two", "310431", "gabapentin 300 MG Oral Capsule", frequency=3, rid="rx-2")
    selected = select(client, "p-two", items, nitro, gaba, selected="MedicationRequest/rx-2")
    assert [rule(c) for c in selected] == ["dose.gabapentin.15to30"]
    absolute = select(
        client, "p-two", items, nitro, gaba, selected="https://ehr.example.org/fhir/MedicationRequest/rx-1"
    )
    assert [rule(c) for c in absolute] == ["dose.nitrofurantoin.lt30"]
    both = sign(client, "p-two", items, nitro, gaba)
    assert [rule(c) for c in both] == ["dose.nitrofurantoin.lt30", "dose.gabapentin.15to30"]  # critical first


def test_select_hides_dose_rules_until_the_dose_can_be_read(client: FlaskClient) -> None:
    items = patient_resources("p-nodose", age=68, sex="male", scr=4.0, weight=80)
    draft = sandbox_draft("p-nodose", "310431", "gabapentin 300 MG Oral Capsule")
    del draft["dosageInstruction"]
    assert select(client, "p-nodose", items, draft) == []
    (card,) = sign(client, "p-nodose", items, draft)
    assert card["summary"] == "Cannot check gabapentin dosing: the dose could not be read"


@pytest.mark.parametrize("contained", [True, False])
def test_epic_medication_reference(client: FlaskClient, contained: bool) -> None:
    """Epic: medicationReference (contained, or a Medication entry of draftOrders), the RxNorm OID, a Dosage-level
    doseQuantity in mg, the ordered-dose extension and timing.code "BID", R4-strict Bundle.type."""
    items = patient_resources("p-epic", age=68, sex="male", scr=4.0, weight=80, af=True)
    request, medication = epic_draft("p-epic", "epic-rx-1", "med-1", "DABIGATRAN 150 MG PO CAPS", "1037045", mg=150,
                                     timing_code="BID", contained=contained)  # fmt: skip
    drafts = draft_bundle(request, with_type=True) if contained else draft_bundle(request, medication, with_type=True)
    body = order_call("order-sign", "p-epic", items, drafts)
    cards = post(client, SIGN, body)
    (card,) = cards
    assert rule(card) == "dose.dabigatran.15to30"
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert "medicationReference" not in updated
    assert "contained" not in updated
    dosage = updated["dosageInstruction"][0]
    assert dosage["doseQuantity"]["value"] == 75
    assert dosage["doseQuantity"]["code"] == "mg"
    assert dosage["extension"][0]["valueQuantity"]["value"] == 75
    assert dosage["timing"] == {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}


@pytest.mark.parametrize(
    ("url", "change", "message"),
    [
        (SIGN, lambda b: b["context"].pop("draftOrders"), "context.draftOrders is required"),
        (SIGN, lambda b: b["context"].update(draftOrders=[]), "context.draftOrders is required"),
        (SELECT, lambda b: b["context"].pop("selections"), "context.selections is required"),
        (SELECT, lambda b: b["context"].update(selections=[]), "context.selections is required"),
        (SELECT, lambda b: b["context"].update(selections=[1]), "context.selections is required"),
        (SIGN, lambda b: b.update(hook="order-select"), "hook is not registered"),
    ],
)
def test_malformed_order_calls_are_400(client: FlaskClient, url: str, change: Any, message: str) -> None:
    items = patient_resources("p-bad", age=70, sex="male", scr=1.0, weight=70)
    body = order_call("order-select" if url == SELECT else "order-sign", "p-bad", items,
                      draft_bundle(sandbox_draft("p-bad", "310431", "gabapentin 300 MG Oral Capsule")),
                      ["MedicationRequest/request-123"] if url == SELECT else None)  # fmt: skip
    change(body)
    response = client.post(url, json=body)
    assert response.status_code == 400
    assert message in str(response.json)


def test_switched_off_services_are_not_listed_and_answer_503(tmp_path: Path) -> None:
    client = make_app(tmp_path, {"renal_dosing": {"enabled": False}}).test_client()
    assert [s["id"] for s in client.get("/cds-services").json["services"]] == ["ckd-patient-view"]
    items = patient_resources("p-off", age=70, sex="male", scr=1.0, weight=70)
    body = order_call("order-sign", "p-off", items, draft_bundle(sandbox_draft("p-off", "310431", "gabapentin")))
    assert client.post(SIGN, json=body).status_code == 503


def feedback(client: FlaskClient, url: str, card: dict[str, Any], outcome: str = "overridden",
             reason: str | None = "not-applicable") -> None:  # fmt: skip
    item: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-12-01T10:00:00Z"}
    if reason:
        item["overrideReason"] = {
            "reason": {"code": reason, "system": "https://ckd-cds.example.org/CodeSystem/card-topic-override"}
        }
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    assert client.post(url + "/feedback", json={"feedback": [item]}).status_code == 200


def test_override_memory_for_the_same_draft(client: FlaskClient) -> None:
    """Appendix C last row: Sign, override, Sign again: no card; change the count: it returns. An override at
    select also holds at sign (shared rule id); an accepted suggestion is not remembered."""
    items = patient_resources("p-mem", age=68, sex="male", scr=4.0, weight=80)
    draft = sandbox_draft("p-mem", "310431", "gabapentin 300 MG Oral Capsule", frequency=3)
    (card,) = sign(client, "p-mem", items, draft, hook_instance=str(uuid.uuid4()))
    feedback(client, SIGN, card, reason=None)  # dismissed without a reason: remembered too (RD-8.6)
    assert sign(client, "p-mem", items, draft, hook_instance=str(uuid.uuid4())) == []
    more = sandbox_draft("p-mem", "310431", "gabapentin 300 MG Oral Capsule", pills=2, frequency=3)
    (again,) = sign(client, "p-mem", items, more, hook_instance=str(uuid.uuid4()))
    assert rule(again) == "dose.gabapentin.15to30"
    # select -> sign
    nitro = sandbox_draft("p-mem", "311992", "nitrofurantoin 100 MG Oral Capsule", rid="rx-n")
    (card,) = select(client, "p-mem", items, nitro, selected="MedicationRequest/rx-n")
    feedback(client, SELECT, card)
    assert sign(client, "p-mem", items, nitro, hook_instance=str(uuid.uuid4())) == []
    # a newer creatinine is new content
    newer = patient_resources("p-mem", age=68, sex="male", scr=4.1, scr_days_ago=1, weight=80)
    assert [rule(c) for c in sign(client, "p-mem", newer, nitro, hook_instance=str(uuid.uuid4()))] == [
        "dose.nitrofurantoin.lt30"]  # fmt: skip


def test_override_memory_off_and_accepted(tmp_path: Path) -> None:
    client = make_app(tmp_path, {"renal_dosing": {"override_memory_hours": 0}}).test_client()
    items = patient_resources("p-off2", age=68, sex="male", scr=4.0, weight=80)
    draft = sandbox_draft("p-off2", "310431", "gabapentin 300 MG Oral Capsule", frequency=3)
    (card,) = sign(client, "p-off2", items, draft, hook_instance=str(uuid.uuid4()))
    feedback(client, SIGN, card)
    assert len(sign(client, "p-off2", items, draft, hook_instance=str(uuid.uuid4()))) == 1
    on = make_app(tmp_path / "on").test_client()
    (card,) = sign(on, "p-off2", items, draft, hook_instance=str(uuid.uuid4()))
    feedback(on, SIGN, card, outcome="accepted", reason=None)
    assert len(sign(on, "p-off2", items, draft, hook_instance=str(uuid.uuid4()))) == 1


def test_audit_holds_rule_ids_but_no_drug_dose_or_order(app: Flask) -> None:
    client = app.test_client()
    items = patient_resources("p-audit", age=68, sex="male", scr=4.0, weight=80)
    draft = sandbox_draft("p-audit", "310431", "gabapentin 300 MG Oral Capsule", frequency=3, rid="order-xyz")
    (card,) = sign(client, "p-audit", items, draft)
    (record,) = app.extensions["ckd_cds"].store.audit_records()
    assert record["service_id"] == "ckd-renal-dosing-sign"
    assert record["rules_fired"] == ["dose.gabapentin.15to30"]
    assert [c["uuid"] for c in record["cards"]] == [card["uuid"]]
    text = str(record)
    for secret in ("gabapentin 300", "order-xyz", "p-audit", "310431", "mg_per_day", "900.0", "dosage"):
        assert secret not in text


def test_children_get_one_card_and_deceased_none(client: FlaskClient) -> None:
    items = patient_resources("p-child", age=12, sex="female", scr=0.5, weight=40)
    drafts = [sandbox_draft("p-child", "310431", "gabapentin 300 MG Oral Capsule", rid="a"),
              sandbox_draft("p-child", "311992", "nitrofurantoin 100 MG Oral Capsule", rid="b")]  # fmt: skip
    (card,) = sign(client, "p-child", items, *drafts)
    assert rule(card) == "dose.under18"
    assert card["summary"] == "Kidney dosing not checked under 18 years (gabapentin, nitrofurantoin)"
    dead = patient_resources("p-dead", age=80, sex="male", scr=4.0, weight=70)
    dead[0]["deceasedBoolean"] = True
    assert sign(client, "p-dead", dead, drafts[1]) == []


def test_request_text_is_escaped(client: FlaskClient) -> None:
    items = patient_resources("p-esc", age=68, sex="male", scr=4.0, weight=80)
    draft = sandbox_draft("p-esc", None)
    draft["medicationCodeableConcept"] = {"text": "nitrofurantoin <img src=x onerror=alert(1)> [x](javascript:1)"}
    draft["dosageInstruction"] = [{"doseQuantity": {"value": 100, "unit": "mg"}, "timing": {"code": {"text": "BID"}}}]
    (card,) = sign(client, "p-esc", items, draft)
    assert "<img" not in card["detail"]
    assert "&lt;img" in card["detail"]
    assert "\\[x\\]\\(javascript:1\\)" in card["detail"]


def test_a_draft_for_another_patient_is_never_checked(client: FlaskClient) -> None:
    items = patient_resources("p-own", age=68, sex="male", scr=4.0, weight=80)
    other = sandbox_draft("p-someone-else", "311992", "nitrofurantoin 100 MG Oral Capsule", rid="x1")
    absolute = sandbox_draft("p-own", "311992", "nitrofurantoin 100 MG Oral Capsule", rid="x2")
    absolute["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p-own"}
    cards = sign(client, "p-own", items, other, absolute)
    assert [c["extension"]["org.ckd-cds.rule"]["order"] for c in cards] == ["MedicationRequest/x2"]


def test_both_weights_shown_only_where_the_site_option_decides(client: FlaskClient) -> None:
    """RD-3.2, Appendix C: 70 y man, 130 kg, 170 cm, creatinine 2.0: CrCl 63.1 with actual weight (band ge60), 44.5
    with adjusted weight (30to60). Gabapentin follows the site option: an info card names both. Rivaroxaban is pinned
    to actual weight: its card (15 mg, below the 20 mg label dose: underdose) does not offer the other weight."""
    items = patient_resources("p-obese", age=70, sex="male", scr=2.0, weight=130, height=170, af=True)
    gaba = sandbox_draft("p-obese", "310431", "gabapentin 300 MG Oral Capsule", pills=2, frequency=3, rid="g")
    (card,) = sign(client, "p-obese", items, gaba)
    assert (rule(card), card["indicator"]) == ("dose.gabapentin.ge60", "info")
    assert card["summary"] == ("Gabapentin 600 mg three times daily: CrCl 63.1 mL/min with actual weight, 44.5 mL/min "
                               "with adjusted weight: different dose bands")  # fmt: skip
    assert "- Other weight: adjusted body weight 91.6 kg gives CrCl 44.5 mL/min" in card["detail"]
    assert "suggestions" not in card
    riva = sandbox_draft("p-obese", "1232082", "rivaroxaban 15 MG Oral Tablet", pills=1, frequency=1, rid="r")
    (card,) = sign(client, "p-obese", items, riva)
    assert (rule(card), card["indicator"]) == ("dose.rivaroxaban.gt50", "info")
    assert "Other weight" not in card["detail"]
