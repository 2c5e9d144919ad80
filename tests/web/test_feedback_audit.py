"""Feedback (D-06), the card index, audit records (D-09), CORS (D-08), metrics, and no token or PHI anywhere."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from service.web import create_app
from service.web.settings import Settings
from tests.web.test_hooks import call, prefetch_for, resources

URL = "/cds-services/ckd-patient-view"
FEEDBACK = URL + "/feedback"


def cards_for(client: FlaskClient, slug: str, hook_instance: str = "hi-1") -> list[dict[str, Any]]:
    bundle = demo_bundles(date.today())[slug]
    body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle)) | {"hookInstance": hook_instance}
    response = client.post(URL, json=body)
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.json["cards"]
    return cards


def test_feedback_is_stored_with_rule_and_config_version(app: Flask, client: FlaskClient) -> None:
    cards = cards_for(client, "03-g3a-a2-not-coded")
    card = next(c for c in cards if c.get("suggestions"))
    items = [
        {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-01-01T10:00:00+01:00",
         "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]},
        {"card": cards[-1]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-01T09:00:00Z",
         "overrideReason": {"reason": {"code": "patient-declined"}, "userComment": "Name: Jane Doe"}},
        {"card": "unknown-card", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T09:00:00Z"},
    ]  # fmt: skip
    response = client.post(FEEDBACK, json={"feedback": items})
    assert (response.status_code, response.json) == (200, {})
    store = app.extensions["ckd_cds"].store
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select * from feedback order by id")).mappings().all()
    assert [r["rule_id"] for r in rows] == [
        card["extension"]["org.ckd-cds.rule"]["id"], cards[-1]["extension"]["org.ckd-cds.rule"]["id"], None,
    ]  # fmt: skip
    assert [r["matched"] for r in rows] == [True, True, False]
    assert rows[0]["config_version"] == card["extension"]["org.ckd-cds.rule"]["configVersion"]
    assert str(rows[0]["outcome_timestamp"]).startswith("2026-01-01 09:00:00")  # normalised to UTC
    assert "Jane Doe" not in str([dict(r) for r in rows])  # userComment is never stored


@pytest.mark.parametrize(
    "item",
    [
        {"outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z", "acceptedSuggestions": [{"id": "s"}]},
        {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00"},  # no time zone
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "0001-01-01T00:03:01+01:00"},  # before year 1 in UTC
        {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"},  # no suggestions
        "not an object",
    ],
)
def test_one_invalid_item_rejects_the_whole_batch(app: Flask, client: FlaskClient, item: Any) -> None:
    good = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}
    response = client.post(FEEDBACK, json={"feedback": [good, item]})
    assert response.status_code == 400
    assert response.json["resourceType"] == "OperationOutcome"
    assert app.extensions["ckd_cds"].store.feedback_count() == 0


@pytest.mark.parametrize("body", [{}, {"feedback": []}, {"feedback": "x"}, []])
def test_feedback_body_shape(client: FlaskClient, body: Any) -> None:
    assert client.post(FEEDBACK, json=body).status_code == 400


def test_feedback_unknown_service_is_404(client: FlaskClient) -> None:
    assert client.post("/cds-services/nope/feedback", json={"feedback": []}).status_code == 404


def test_feedback_report_rates_per_rule(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'db'}", admin_token_sha256=SHA_OF_SECRET))
    client = app.test_client()
    cards = cards_for(client, "05-g4-on-metformin")
    first, second = cards[0], cards[1]
    answers = [
        {"card": first["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
        {"card": first["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:01:00Z"},  # repeat
        {"card": second["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"},
    ]
    assert client.post(FEEDBACK, json={"feedback": answers}).status_code == 200
    assert client.get("/admin/api/feedback-report").status_code == 401
    report = client.get("/admin/api/feedback-report", headers={"Authorization": "Bearer s3cret"}).json["rules"]
    by_rule = {r["rule"]: r for r in report}
    rule = first["extension"]["org.ckd-cds.rule"]["id"]
    assert by_rule[rule]["overridden"] == 1  # the repeat is counted once
    assert by_rule[rule]["override_rate"] == 1.0
    assert by_rule[rule]["cards_shown"] == 1


SHA_OF_SECRET = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"


def test_admin_token_hash_constant_is_sha256_of_the_secret() -> None:
    import hashlib

    assert hashlib.sha256(b"s3cret").hexdigest() == SHA_OF_SECRET


def test_audit_record_per_invocation_without_phi(app: Flask, client: FlaskClient) -> None:
    cards = cards_for(client, "04-diabetic-ckd-no-sglt2i", hook_instance="hook-audit-1")
    client.post(URL, json=call("p-missing"))  # a 412 is audited too
    records = app.extensions["ckd_cds"].store.audit_records()
    assert [r["status"] for r in records] == [412, 200]
    ok = records[1]
    assert ok["hook_instance"] == "hook-audit-1"
    assert ok["service_id"] == "ckd-patient-view"
    assert ok["keys"]["kidneyLabs"]["state"] == "present"
    assert ok["config_version"] == cards[0]["extension"]["org.ckd-cds.rule"]["configVersion"]
    assert {c["uuid"] for c in ok["cards"]} == {c["uuid"] for c in cards}
    assert "sglt2i" in ok["rules_fired"]
    assert ok["patient_key"] is None  # pseudonymous key is opt-in
    patient_id = resources(demo_bundles(date.today())["04-diabetic-ckd-no-sglt2i"])[0]["id"]
    assert patient_id not in str(records)
    assert records[0]["missing_keys"] == ["patient", "kidneyLabs", "urineLabs", "conditions", "medications"]


def test_cors_dev_and_allowlist(tmp_path: Path) -> None:
    dev = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a'}")).test_client()
    pre = dev.options(URL, headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    err = dev.post(URL, json={}, headers={"Origin": "https://x.example"})
    assert err.status_code == 400
    assert err.headers["Access-Control-Allow-Origin"] == "*"  # errors carry CORS too
    assert "Access-Control-Allow-Credentials" not in err.headers
    strict = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'b'}", cors_allowed_origins=("https://ehr.example.org",))
    ).test_client()
    assert strict.options(URL, headers={"Origin": "https://evil.example"}).status_code == 403
    ok = strict.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Origin" in ok.headers["Vary"]


def test_metrics_count_cards_and_412s(client: FlaskClient) -> None:
    cards_for(client, "12-progression-high-kfre")
    client.post(URL, json=call("nobody"))
    page = client.get("/metrics").get_data(as_text=True)
    assert 'ckd_cds_cards_total{indicator="warning",rule="krt_planning"}' in page
    assert 'ckd_cds_412_total{reason="no-fhir-access"}' in page
    assert "nobody" not in page


@pytest.mark.fhir
def test_sentinel_token_never_logged_or_stored(
    app: Flask, client: FlaskClient, fhir_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = "SENTINEL-TOKEN-7f3a9c"
    bundle = demo_bundles(date.today())["06-nsaid-egfr-below-60"]
    load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    pid = resources(bundle)[0]["id"]
    auth = {"access_token": sentinel, "token_type": "Bearer", "expires_in": 60, "scope": "s", "subject": "u"}
    caplog.set_level(logging.DEBUG)
    rejected = client.post(URL, json=call(pid, fhirServer=fhir_server.base_url, fhirAuthorization=auth))
    assert rejected.status_code == 412  # the FHIR server refuses the sentinel token
    good = auth | {"access_token": fhir_server.token}
    accepted = client.post(URL, json=call(pid, fhirServer=fhir_server.base_url, fhirAuthorization=good))
    assert accepted.status_code == 200
    cards = accepted.json["cards"]
    client.post(FEEDBACK, json={"feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                                              "outcomeTimestamp": "2026-01-01T00:00:00Z"}]})  # fmt: skip
    store = app.extensions["ckd_cds"].store
    with store.engine.connect() as conn:
        dump = [list(map(str, row)) for t in ("audit", "card_index", "feedback", "seen_jti")
                for row in conn.execute(sa.text(f"select * from {t}")).all()]  # noqa: S608 - fixed names  # fmt: skip
    everything = str(dump) + caplog.text + str(rejected.json) + str(accepted.json)
    assert sentinel not in everything
    assert fhir_server.token not in everything
    assert pid not in str(dump) + caplog.text
