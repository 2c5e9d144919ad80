"""CDS Hooks endpoints: status codes, prefetch states, and the FHIR fallback against the real server."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from service.web.services.patient_view import CKD_PREFETCH

URL = "/cds-services/ckd-patient-view"


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def prefetch_for(bundle: dict[str, Any]) -> dict[str, Any]:
    """Full prefetch as an EHR would send it: the patient read and one searchset Bundle per key."""
    items = resources(bundle)
    patient = items[0]

    def searchset(kinds: set[str], codes: set[str] | None = None) -> dict[str, Any]:
        chosen = [
            r for r in items[1:]
            if r["resourceType"] in kinds and (codes is None or r["code"]["coding"][0]["code"] in codes)
        ]  # fmt: skip
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in chosen],
        }

    kidney = {"2160-0", "14682-9", "38483-4", "35203-9", "33863-2", "98979-8", "98980-6"}
    urine = {"9318-7", "14959-1", "32294-1", "13705-9", "14958-3", "2890-2", "34366-5", "13801-6", "20454-5", "5804-0"}
    return {
        "patient": patient,
        "kidneyLabs": searchset({"Observation"}, kidney),
        "urineLabs": searchset({"Observation"}, urine),
        "conditions": searchset({"Condition"}),
        "medications": searchset({"MedicationRequest"}),
        "supportLabs": searchset({"Observation"}, {"8302-2", "2823-3", "4548-4"}),
        "procedures": searchset({"Procedure"}),  # [2.1] clinical spec §9.5
        "bloodPressure": searchset({"Observation"}, {"85354-9", "55284-4", "8480-6"}),
    }


def call(patient_id: str, **extra: Any) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": "5f8c3c1e-0d0e-4b43-9d4b-0a7d2f7d6a11",
            "context": {"patientId": patient_id, "userId": "Practitioner/1"}, **extra}  # fmt: skip


def rules_of(response_json: dict[str, Any]) -> set[str]:
    return {c["extension"]["org.ckd-cds.rule"]["id"] for c in response_json["cards"]}


def demo(slug: str) -> dict[str, Any]:
    return demo_bundles(date.today())[slug]


def test_discovery_lists_the_service_with_prefetch(client: FlaskClient) -> None:
    body = client.get("/cds-services").json
    (service,) = [s for s in body["services"] if s["id"] == "ckd-patient-view"]  # the order hooks: tests/dosing
    assert service["id"] == "ckd-patient-view"
    assert service["hook"] == "patient-view"
    assert set(service["prefetch"]) == {k.name for k in CKD_PREFETCH}
    for template in service["prefetch"].values():
        assert "{{context.patientId}}" in template
        assert "sort:desc" not in template


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/cds-services/unknown", {"json": {}}, 404),
        ("get", URL, {}, 405),
        ("post", URL, {"data": "x", "content_type": "text/plain"}, 415),
        ("post", URL, {"data": "{not json", "content_type": "application/json"}, 400),
        ("post", URL, {"json": [1, 2]}, 400),
        ("post", URL, {"json": {"hook": "patient-view", "hookInstance": "x", "context": {}}}, 400),
        ("post", URL, {"json": {"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p"}}}, 400),
        ("post", URL, {"json": {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"},
                                "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"}}}, 400),
        ("post", URL, {"json": {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"}}}, 412),
    ],
)  # fmt: skip
def test_error_statuses_are_operation_outcomes(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.headers["X-Request-ID"]


def test_full_prefetch_gives_the_expected_cards(client: FlaskClient) -> None:
    bundle = demo("04-diabetic-ckd-no-sglt2i")
    response = client.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle)))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    cards = response.json["cards"]
    assert len(cards) == 5  # max_cards
    assert all(len(c["summary"]) < 140 for c in cards)
    assert all("Decision support only" in c["detail"] for c in cards)
    # [2.0] §7.4 priority order (safety, specialist care, therapy, documentation), not by indicator; the fifth
    # place lists what did not fit (statin, problem list). The referral card names the progression.
    assert [c["extension"]["org.ckd-cds.rule"]["id"] for c in cards] == [
        "metformin_reduce", "nephrology_referral", "sglt2i", "finerenone", "overflow",
    ]  # fmt: skip
    overflow = cards[-1]
    assert overflow["summary"] == "2 more kidney recommendations"
    assert "Consider a statin (CKD, age 78)" in overflow["detail"]
    assert "is not on the problem list" in overflow["detail"]
    assert "suggestions" not in overflow


def test_null_prefetch_means_no_data_and_no_fetch(client: FlaskClient) -> None:
    bundle = demo("01-normal")
    prefetch = prefetch_for(bundle) | {"urineLabs": None, "medications": None}
    response = client.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch))
    assert response.status_code == 200
    assert response.json == {"cards": []}


def test_operation_outcome_prefetch_without_fhir_access_is_412(client: FlaskClient) -> None:
    bundle = demo("03-g3a-a2-not-coded")
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    response = client.post(
        URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle) | {"kidneyLabs": oo})
    )
    assert response.status_code == 412
    assert "kidneyLabs" in response.json["issue"][0]["diagnostics"]


@pytest.mark.fhir
def test_fallback_against_real_fhir_server_matches_prefetch(client: FlaskClient, fhir_server: RunningServer) -> None:
    bundle = demo("04-diabetic-ckd-no-sglt2i")
    load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    pid = resources(bundle)[0]["id"]
    auth = {"access_token": fhir_server.token, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
            "subject": "Practitioner/1"}  # fmt: skip
    fetched = client.post(URL, json=call(pid, fhirServer=fhir_server.base_url, fhirAuthorization=auth))
    assert fetched.status_code == 200
    prefetched = client.post(URL, json=call(pid, prefetch=prefetch_for(bundle)))
    assert fetched.json == prefetched.json  # both paths give the same advice
    partial = prefetch_for(bundle)
    del partial["conditions"]
    mixed = client.post(URL, json=call(pid, prefetch=partial, fhirServer=fhir_server.base_url, fhirAuthorization=auth))
    assert mixed.json == prefetched.json


@pytest.mark.fhir
def test_fallback_with_a_rejected_token_is_412(client: FlaskClient, fhir_server: RunningServer) -> None:
    auth = {"access_token": "not-the-token", "token_type": "Bearer", "expires_in": 300, "scope": "x", "subject": "y"}
    response = client.post(URL, json=call("nobody", fhirServer=fhir_server.base_url, fhirAuthorization=auth))
    assert response.status_code == 412
    assert "fhir-unauthorized" in response.json["issue"][0]["diagnostics"]


@pytest.mark.fhir
def test_operation_outcome_prefetch_is_fetched_and_pages_are_followed(
    app: Any, client: FlaskClient, fhir_server: RunningServer
) -> None:
    from service.fhir import build

    pid = "paging-patient"
    items: list[dict[str, Any]] = [build.patient(pid, gender="female", birth_date="1950-01-01")]
    for month in range(130):  # more than one page even at _count=100
        items.append(build.observation(f"pg-{month}", pid, "2160-0", date(2015, 1, 1).replace(
            year=2015 + month // 12, month=1 + month % 12), 1.4, "mg/dL"))  # fmt: skip
    bundle = build.bundle(items)
    load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    auth = {"access_token": fhir_server.token, "token_type": "Bearer", "expires_in": 300, "scope": "s", "subject": "u"}
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    prefetch = prefetch_for(bundle) | {"kidneyLabs": oo}
    fetched = client.post(
        URL, json=call(pid, prefetch=prefetch, fhirServer=fhir_server.base_url, fhirAuthorization=auth)
    )
    assert fetched.status_code == 200
    full = client.post(URL, json=call(pid, prefetch=prefetch_for(bundle)))
    assert fetched.json == full.json
    audit = app.extensions["ckd_cds"].store.audit_records()[1]
    assert audit["keys"]["kidneyLabs"]["state"] == "operation-outcome"
    assert audit["keys"]["kidneyLabs"]["fetched"] is True
    assert audit["keys"]["kidneyLabs"]["entries"] == 130
    assert audit["keys"]["kidneyLabs"]["pages"] >= 2
    assert audit["keys"]["conditions"]["fetched"] is False  # satisfied keys are never fetched again


def test_token_for_another_patient_is_not_used(client: FlaskClient) -> None:
    auth = {"access_token": "t", "token_type": "Bearer", "expires_in": 60, "scope": "s", "subject": "u",
            "patient": "someone-else"}  # fmt: skip
    response = client.post(URL, json=call("p1", fhirServer="http://127.0.0.1:9/fhir", fhirAuthorization=auth))
    assert response.status_code == 412
    assert "no-fhir-access" in response.json["issue"][0]["diagnostics"]


def test_wrong_shape_prefetch_is_treated_as_missing(client: FlaskClient) -> None:
    bundle = demo("01-normal")
    prefetch = prefetch_for(bundle) | {"patient": {"resourceType": "Bundle", "entry": []}}
    response = client.post(URL, json=call(resources(bundle)[0]["id"], prefetch=prefetch))
    assert response.status_code == 412
    assert "patient" in response.json["issue"][0]["diagnostics"]


def test_body_over_the_limit_is_413(tmp_path: Any) -> None:
    from service.web import create_app
    from service.web.settings import Settings

    small = create_app(Settings(max_body_bytes=1000, database_url=f"sqlite:///{tmp_path / 'db'}")).test_client()
    response = small.post(URL, json=call("p1") | {"prefetch": {"pad": "x" * 2000}})
    assert response.status_code == 413
    assert response.json["resourceType"] == "OperationOutcome"


ALLOWED_PARAMS = {"patient", "code", "_sort", "_count", "status"}


@pytest.mark.parametrize("key", CKD_PREFETCH, ids=lambda k: k.name)
def test_prefetch_templates_use_only_2_0_tokens_and_the_n16_subset(key: Any) -> None:
    import re
    import urllib.parse

    tokens = re.findall(r"\{\{(.*?)\}\}", key.template)
    assert tokens == ["context.patientId"]  # N-15: root-level context fields only; no FHIRPath, no dates
    path, _, query = key.template.partition("?")
    assert re.fullmatch(r"(Patient/\{\{context\.patientId\}\}|Observation|Condition|MedicationRequest|Procedure)", path)
    params = urllib.parse.parse_qs(query)
    assert set(params) <= ALLOWED_PARAMS  # N-16: token equality, _sort, _count
    if "_sort" in params:
        assert params["_sort"] == ["-date"]  # R4 syntax, not sort:desc=date
    for code in ",".join(params.get("code", [])).split(",") if params.get("code") else []:
        # LOINC for Observations; [2.1] SNOMED CT for the Procedures of S13 (clinical spec §9.5)
        assert re.fullmatch(r"http://loinc\.org\|\d+-\d|http://snomed\.info/sct\|\d+", code)


@pytest.mark.parametrize("server", ["http://[x", "http://", "ftp://ehr.example.org/fhir", "ehr.example.org/fhir"])
def test_malformed_fhir_server_is_400(client: FlaskClient, server: str) -> None:
    # Found by schemathesis: urlsplit raises ValueError on a malformed IPv6 host.
    auth = {"access_token": "t", "token_type": "Bearer"}
    response = client.post(URL, json=call("p1", fhirServer=server, fhirAuthorization=auth))
    assert response.status_code == 400
    assert "fhirServer" in response.json["issue"][0]["diagnostics"]


def test_deeply_nested_json_is_400_and_large_prefetch_413(client: FlaskClient) -> None:
    deep = '{"a":' * 1100 + "{}" + "}" * 1100  # orjson refuses nesting beyond 1,024 levels
    body = '{"hook":"patient-view","hookInstance":"h","context":{"patientId":"p"},"prefetch":{"x":' + deep + "}}"
    assert client.post(URL, data=body, content_type="application/json").status_code == 400
    big = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation"}}] * 2001}
    response = client.post(URL, json=call("p1", prefetch={"kidneyLabs": big}))
    assert response.status_code == 413
    assert "kidneyLabs" in response.json["issue"][0]["diagnostics"]
