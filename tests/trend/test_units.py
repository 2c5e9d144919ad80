"""The trend view's parts without a server: the drug timeline, the scope check, the SMART client registrations."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from flask import Response

from service.config import ConfigError
from service.fhir.timeline import drug_spans
from service.trend.chart import place_in_band
from service.trend.smart import DATA_SCOPES, missing_scopes
from service.web import create_app
from service.web.settings import Settings, SmartSettings, load_service_config, security_fields
from service.web.trend import COOKIE, set_cookie
from service.web.urls import parse_fhir_url


def request(status: str, rxcui: str | None = None, text: str | None = None, **extra: object) -> dict[str, object]:
    concept: dict[str, object] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxcui}]}
    if text is not None:
        concept = {"text": text}
    return {"resourceType": "MedicationRequest", "status": status, "medicationCodeableConcept": concept, **extra}


def test_timeline_keeps_every_status_but_drafts_and_errors() -> None:
    spans = drug_spans([
        request("active", "29046", authoredOn="2024-02-01"),  # lisinopril, RxNorm IN (spec §7.3)
        request("stopped", "6809", authoredOn="2019-05-01",
                dispenseRequest={"validityPeriod": {"start": "2019-05-01", "end": "2021-03-31"}}),  # metformin
        request("completed", text="naproxen 500 mg tablet", authoredOn="2023-01-10"),
        request("entered-in-error", "29046", authoredOn="2020-01-01"),
        request("draft", "29046", authoredOn="2026-01-01"),
        request("active", "197361", authoredOn="2022-01-01"),  # amlodipine: not kidney-relevant, not shown
    ], {})  # fmt: skip
    assert [(s.name, s.classes, s.status, s.start, s.end) for s in spans] == [
        ("metformin", ("metformin",), "stopped", date(2019, 5, 1), date(2021, 3, 31)),
        ("naproxen", ("NSAID",), "completed", date(2023, 1, 10), None),
        ("lisinopril", ("ACEi",), "active", date(2024, 2, 1), None),
    ]
    assert spans[1].ended  # ended on a date the record does not give
    assert not spans[2].ended


def test_timeline_reads_a_contained_medication() -> None:
    req = {"resourceType": "MedicationRequest", "status": "active", "authoredOn": "2025-06-01",
           "medicationReference": {"reference": "#m"},
           "contained": [{"resourceType": "Medication", "id": "m",
                          "code": {"text": "empagliflozin 10 mg"}}]}  # fmt: skip
    (span,) = drug_spans([req], {})
    assert span.name == "empagliflozin"
    assert span.classes == ("SGLT2i",)


def test_scopes_granted_in_smart_2_or_1_form() -> None:
    assert missing_scopes(frozenset(DATA_SCOPES)) == []
    v1 = frozenset(re.sub(r"\.rs?$", ".read", s) for s in DATA_SCOPES)
    assert "patient/Observation.read" in v1
    assert missing_scopes(v1) == []
    assert missing_scopes(frozenset({"patient/*.read"})) == []
    assert missing_scopes(frozenset({"patient/*.rs"})) == []
    wider = frozenset({"patient/Observation.cruds", *DATA_SCOPES} - {"patient/Observation.rs"})
    assert missing_scopes(wider) == []
    read_only = frozenset({"patient/Observation.r", *DATA_SCOPES} - {"patient/Observation.rs"})
    assert missing_scopes(read_only) == ["patient/Observation.rs"]  # no search: the view cannot list results
    assert missing_scopes(frozenset({"launch"})) == list(DATA_SCOPES)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "service.yaml"
    path.write_text(text)
    return str(path)


def test_registrations_are_matched_on_the_normalised_iss(tmp_path: Path) -> None:
    data = load_service_config(
        _write(
            tmp_path,
            """
smart:
  clients:
    - {name: epic, client_id: abc, redirect_uri: "https://ckd.example.org/trend/callback",
       iss: ["https://FHIR.example.org:443/api/FHIR/R4/"]}
""",
        )
    )
    smart = security_fields(data, production=False)["smart"]
    assert smart.client_for(parse_fhir_url("https://fhir.example.org/api/FHIR/R4")).client_id == "abc"
    assert smart.client_for(parse_fhir_url("https://fhir.example.org/api/FHIR/R4/other")) is None  # not by prefix
    assert smart.client_for(parse_fhir_url("http://fhir.example.org/api/FHIR/R4")) is None
    assert smart.session_minutes == 30


@pytest.mark.parametrize("iss", ["https://user@fhir.example.org/r4", "https://fhir.example.org/r4/../x"])
def test_an_unsafe_registered_iss_stops_start_up(tmp_path: Path, iss: str) -> None:
    data = load_service_config(
        _write(
            tmp_path,
            f"""
smart:
  clients: [{{name: x, client_id: a, redirect_uri: "https://ckd.example.org/trend/callback", iss: ["{iss}"]}}]
""",
        )
    )
    with pytest.raises(ConfigError, match=r"smart\.clients x"):
        security_fields(data, production=False)


def test_a_registration_without_iss_is_refused_by_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="iss"):
        load_service_config(
            _write(tmp_path, "smart: {clients: [{name: x, client_id: a, redirect_uri: 'https://a/b'}]}")
        )


def test_urine_results_sit_in_their_a_band_on_their_own_tests_scale() -> None:
    # spec §3.3 cut-offs: ACR 30/300 mg/g, PCR 150/500 mg/g; the geometric mean of a band's cut-offs is its middle
    assert place_in_band("acr", "mg/g", (30 * 300) ** 0.5, "A2") == pytest.approx(0.5)
    assert place_in_band("pcr", "mg/g", (150 * 500) ** 0.5, "A2") == pytest.approx(0.5)
    assert place_in_band("acr", "mg/mmol", (3 * 30) ** 0.5, "A2") == pytest.approx(0.5)
    assert place_in_band("acr", "mg/g", 3.0, "A1") == pytest.approx(0.05)  # a tenth of the A2 cut-off: the bottom
    assert place_in_band("acr", "mg/g", 5000.0, "A3") == pytest.approx(0.95)  # kept inside the band
    assert place_in_band("dipstick", None, None, "A3") == 0.5


def test_the_view_cookie_is_secure_in_production(tmp_path: Path) -> None:
    for production, secure in ((False, False), (True, True)):
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}", patient_link_secret="s" * 64,
                            smart=SmartSettings())  # fmt: skip
        app = create_app(settings)
        app.extensions["ckd_cds"].settings = replace(settings, profile="production" if production else "development")
        with app.test_request_context("/trend/launch"):
            response = Response()
            set_cookie(response, "sid", 60)
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=sid;")
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


def evidence_of(slug: str, linked: bool) -> list[str]:
    from cards.builder import CardRequest, build_cards
    from service.clinical.assess import assess
    from service.demo import demo_bundles
    from service.fhir.adapter import record_from_bundle

    record = record_from_bundle(demo_bundles()[slug])
    request = CardRequest(patient_id="p", hook_instance="h", service_id="ckd-patient-view", config_version="v",
                          trend=("https://ckd.example.org/trend/launch", "tag") if linked else None)  # fmt: skip
    detail = build_cards(assess(record, date.today()), request).cards[0]["detail"]
    block = detail.split("**Evidence**", 1)[1]
    return [line for line in block.splitlines() if line.startswith("- ")]


def test_with_the_view_linked_the_evidence_block_keeps_the_lines_the_cards_rest_on() -> None:
    full = evidence_of("04-diabetic-ckd-no-sglt2i", linked=False)
    short = evidence_of("04-diabetic-ckd-no-sglt2i", linked=True)
    assert any(line.startswith("- Trend:") for line in full)
    assert any("KFRE" in line for line in full)
    undated = [re.sub(r"\d{4}-\d\d-\d\d", "DATE", line) for line in short]  # demo dates move with today
    assert undated == [
        "- eGFR 47 mL/min/1.73 m² on DATE (CKD-EPI 2021 (creatinine), from creatinine 1.50 mg/dL)",  # the oldest
        "- Urine ACR 480 mg/g on DATE (A3)",
        "- Every value, the trend, the KDIGO category and kidney failure risk: open **Kidney trend** below",
    ]  # the latest eGFR (38) is already in this card's own detail, so the block leaves it out (spec 2.1)
    aki = evidence_of("07-aki-spike", linked=True)
    assert "- 2 creatinine results excluded as possible acute kidney injury" in aki  # a set-aside value never hides


@pytest.mark.parametrize("name", ["service.example.yaml", "demo-service.yaml"])
def test_shipped_service_configurations_register_the_view(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "config" / name
    smart = security_fields(load_service_config(str(path)), production=False)["smart"]
    assert len(smart.clients) == 1
    assert smart.clients[0].redirect_uri.endswith("/trend/callback")


def test_a_grant_never_prints_its_token() -> None:
    from service.trend.smart import Grant

    grant = Grant(access_token="tok-3f9a", patient="p1", scopes=frozenset(), expires_in=60, app_context=None)
    assert "tok-3f9a" not in repr(grant)
    assert "p1" in repr(grant)
