"""FHIR server faults: the service answers within its budget plus 250 ms, with 412 when it cannot obtain required
data, never with partial data presented as complete; retries only idempotent GETs within budget; a circuit breaker
stops a dead server from tying up workers. The real FHIR test server sits behind a local fault proxy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir import build, testserver
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from tests.conftest import make_app
from tests.reliability.faultproxy import FaultProxy
from tests.web.test_hooks import call, resources

pytestmark = pytest.mark.fhir
URL = "/cds-services/ckd-patient-view"
BUDGET_S = 1.0
SLACK_S = 0.25  # the bound: budget + 250 ms
FHIR = {"fhir": {"connect_timeout_s": 0.3, "read_timeout_s": 0.6, "budget_s": BUDGET_S}}
PAGED = "paged-patient"


@pytest.fixture(scope="module")
def proxy(fhir_server: RunningServer) -> Iterator[FaultProxy]:
    load_bundle(fhir_server.base_url, fhir_server.token, demo_bundles(date.today())["04-diabetic-ckd-no-sglt2i"])
    items: list[dict[str, Any]] = [build.patient(PAGED, gender="female", birth_date="1950-01-01")]
    items += [build.observation(f"pg-{i}", PAGED, "2160-0", date(2015, 1, 1) + timedelta(days=20 * i), 1.5, "mg/dL")
              for i in range(130)]  # fmt: skip
    load_bundle(fhir_server.base_url, fhir_server.token, build.bundle(items))
    fault = FaultProxy(fhir_server.base_url)
    yield fault
    fault.stop()


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, FHIR)


def timed_call(client: FlaskClient, patient_id: str, base: str, token: str) -> tuple[Any, float]:
    auth = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "s", "subject": "u"}
    started = time.monotonic()
    response = client.post(URL, json=call(patient_id, fhirServer=base, fhirAuthorization=auth))
    return response, time.monotonic() - started


def demo_id() -> str:
    return str(resources(demo_bundles(date.today())["04-diabetic-ckd-no-sglt2i"])[0]["id"])


@pytest.mark.parametrize(
    ("mode", "only", "reason"),
    [
        ("delay", "Observation", "fhir-timeout"),
        ("drop", "Condition", "fhir-error"),
        ("500", "MedicationRequest", "fhir-error"),
        ("401", "Patient", "fhir-unauthorized"),
        ("malformed", "Condition", "fhir-error"),
    ],
)
def test_fault_gives_412_within_budget(
    client: FlaskClient, proxy: FaultProxy, fhir_server: RunningServer, mode: str, only: str, reason: str
) -> None:
    proxy.set(mode, only, delay_s=5.0)
    response, elapsed = timed_call(client, demo_id(), proxy.base, fhir_server.token)
    assert response.status_code == 412
    assert reason in response.json["issue"][0]["diagnostics"]
    assert elapsed <= BUDGET_S + SLACK_S


def test_pass_through_gives_cards(client: FlaskClient, proxy: FaultProxy, fhir_server: RunningServer) -> None:
    proxy.set("pass")
    response, elapsed = timed_call(client, demo_id(), proxy.base, fhir_server.token)
    assert response.status_code == 200
    assert response.json["cards"]
    assert elapsed <= BUDGET_S + SLACK_S


def test_503_is_retried_once_and_then_fails(client: FlaskClient, proxy: FaultProxy, fhir_server: RunningServer) -> None:
    proxy.set("503", "Condition")
    response, _ = timed_call(client, demo_id(), proxy.base, fhir_server.token)
    assert response.status_code == 412
    assert sum("Condition" in p for p in proxy.requests) == 2  # one retry of an idempotent GET, no more
    proxy.set("500", "Condition")
    timed_call(client, demo_id(), proxy.base, fhir_server.token)
    assert sum("Condition" in p for p in proxy.requests) == 1  # 500 is not retried


def test_failed_later_page_keeps_newer_results_and_says_so(
    app: Flask, client: FlaskClient, proxy: FaultProxy, fhir_server: RunningServer
) -> None:
    proxy.set("fail-next-pages")
    response, elapsed = timed_call(client, PAGED, proxy.base, fhir_server.token)
    assert response.status_code == 200
    assert elapsed <= BUDGET_S + SLACK_S
    cards = response.json["cards"]
    assert cards
    assert all("Incomplete data" in c["detail"] for c in cards)  # never partial data presented as complete
    audit = app.extensions["ckd_cds"].store.audit_records()[0]
    assert audit["keys"]["kidneyLabs"]["truncated"] is True
    assert audit["keys"]["kidneyLabs"]["entries"] == 100


def test_optional_key_failure_is_reported_not_fatal(
    client: FlaskClient, proxy: FaultProxy, fhir_server: RunningServer
) -> None:
    proxy.set("500", "8302-2")  # only the supportLabs query carries the height code
    response, _ = timed_call(client, demo_id(), proxy.base, fhir_server.token)
    assert response.status_code == 200
    assert all("height, potassium, HbA1c" in c["detail"] for c in response.json["cards"])


def test_dead_server_opens_the_circuit(client: FlaskClient, fhir_server: RunningServer) -> None:
    dead = FaultProxy(fhir_server.base_url)
    dead.stop()  # nothing listens any more: connection refused
    for _ in range(5):
        response, elapsed = timed_call(client, demo_id(), dead.base, fhir_server.token)
        assert response.status_code == 412
        assert elapsed <= BUDGET_S + SLACK_S
    response, elapsed = timed_call(client, demo_id(), dead.base, fhir_server.token)
    assert response.status_code == 412
    assert elapsed < 0.05  # open circuit: no connection attempted


def test_real_fhir_server_stopped(client: FlaskClient) -> None:
    server = testserver.start(port=8291)
    testserver.stop(server)
    time.sleep(0.3)
    response, elapsed = timed_call(client, "anyone", server.base_url, server.token)
    assert response.status_code == 412
    assert "fhir-error" in response.json["issue"][0]["diagnostics"]
    assert elapsed <= BUDGET_S + SLACK_S
