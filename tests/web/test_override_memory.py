"""Override memory (issue #14) on the real service and store, SQLite and PostgreSQL: an overridden card stays quiet
for that patient until its clinical content gets worse, a newer triggering value arrives, or the snooze ends."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.fhir import build
from service.store import snoozes
from tests.conftest import make_app
from tests.web.test_hooks import URL, call, prefetch_for, resources

FEEDBACK = URL + "/feedback"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    config = {"cards": {"max_cards": 20}}
    if request.param == "sqlite":
        yield make_app(tmp_path, config)
        return
    name = f"ckd_cds_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    application = make_app(tmp_path, config, database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    yield application
    application.extensions["ckd_cds"].store.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def open_chart(client: FlaskClient, bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One chart opening (a new hookInstance): rule -> card."""
    body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle)) | {"hookInstance": str(uuid.uuid4())}
    response = client.post(URL, json=body)
    assert response.status_code == 200
    return {c["extension"]["org.ckd-cds.rule"]["id"]: c for c in response.json["cards"]}


def override(client: FlaskClient, card: dict[str, Any], code: str | None = "patient-declined") -> None:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}
    if code:
        item["overrideReason"] = {"reason": {"code": code, "system": "https://ckd-cds.example.org/override"}}
    assert client.post(FEEDBACK, json={"feedback": [item]}).status_code == 200


def with_creatinine(bundle: dict[str, Any], value: float, days_ago: int) -> dict[str, Any]:
    changed = copy.deepcopy(bundle)
    pid = resources(bundle)[0]["id"]
    obs = build.observation(f"new-{value}-{days_ago}", pid, "2160-0", date.today() - timedelta(days=days_ago), value,
                            "mg/dL")  # fmt: skip
    changed["entry"].append({"fullUrl": f"Observation/{obs['id']}", "resource": obs})
    return changed


def test_override_snooze_worse_stage_and_expiry(app: Flask) -> None:
    client = app.test_client()
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]  # G3a/A2: ACEi/ARB, statin, problem list
    first = open_chart(client, bundle)
    assert "statin" in first
    override(client, first["statin"])
    second = open_chart(client, bundle)
    assert "statin" not in second  # remembered for this patient
    until = (date.today() + timedelta(days=90)).isoformat()  # UTC today may be tomorrow's date near midnight
    note = next(iter(second.values()))["detail"]
    assert "Snoozed after an override: Statin (until " in note
    assert "Each returns earlier if findings worsen or new results arrive." in note
    assert until in note or (date.today() + timedelta(days=91)).isoformat() in note
    audit = app.extensions["ckd_cds"].store.audit_records(1)[0]
    assert audit["cards_snoozed"] == ["statin"]
    assert 'ckd_cds_cards_snoozed_total{rule="statin"}' in client.get("/metrics").get_data(as_text=True)
    # the stage gets worse (creatinine 1.6 today: G3b, and below 1.5 × the past year's median, so not AKI): back
    worse = with_creatinine(bundle, 1.6, 0)
    assert "statin" in open_chart(client, worse)
    assert "statin" not in open_chart(client, bundle)  # the same content as when overridden: still quiet
    # the snooze ends: back
    with app.extensions["ckd_cds"].store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE snoozes SET until = :past"), {"past": date.today() - timedelta(days=1)})
    assert "statin" in open_chart(client, bundle)


def test_a_newer_triggering_value_ends_the_snooze(app: Flask) -> None:
    client = app.test_client()
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]
    override(client, open_chart(client, bundle)["rasi"])
    assert "rasi" not in open_chart(client, bundle)
    newer = with_creatinine(bundle, 1.2, 0)  # same category, but a new eGFR the card rests on
    assert "rasi" in open_chart(client, newer)


def test_other_patients_and_accepted_cards_are_not_snoozed(app: Flask) -> None:
    client = app.test_client()
    bundles = demo_bundles(date.today())
    a = open_chart(client, bundles["03-g3a-a2-not-coded"])
    override(client, a["statin"])
    assert "statin" in open_chart(client, bundles["06-nsaid-egfr-below-60"])  # another patient
    problem = a["problem_list"]
    accepted = {"card": problem["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z",
                "acceptedSuggestions": [{"id": problem["suggestions"][0]["uuid"]}]}  # fmt: skip
    assert client.post(FEEDBACK, json={"feedback": [accepted]}).status_code == 200
    assert "problem_list" in open_chart(client, bundles["03-g3a-a2-not-coded"])


def test_without_a_verified_caller_a_safety_card_is_never_snoozed(app: Flask) -> None:
    """Issue #21, item 2: in the development profile anyone can post feedback; a safety card stays."""
    client = app.test_client()
    bundle = demo_bundles(date.today())["15-hyperkalaemia-on-acei"]
    override(client, open_chart(client, bundle)["hyperkalaemia"])
    assert "hyperkalaemia" in open_chart(client, bundle)
    with app.extensions["ckd_cds"].store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(snoozes)).scalar_one() == 0


def test_snooze_settings(tmp_path: Path) -> None:
    (tmp_path / "off").mkdir()
    (tmp_path / "rule").mkdir()
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]
    off = make_app(tmp_path / "off", {"feedback": {"snooze_days": 0}}).test_client()
    override(off, open_chart(off, bundle)["statin"])
    assert "statin" in open_chart(off, bundle)
    rule_only = make_app(tmp_path / "rule", {"cards": {"rules": {"statin": {"snooze_days": 0}}}}).test_client()
    cards = open_chart(rule_only, bundle)
    override(rule_only, cards["statin"])
    override(rule_only, cards["rasi"])
    after = open_chart(rule_only, bundle)
    assert "statin" in after
    assert "rasi" not in after


def test_no_patient_identifier_is_stored(app: Flask) -> None:
    client = app.test_client()
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]
    override(client, open_chart(client, bundle)["statin"])
    pid = resources(bundle)[0]["id"]
    with app.extensions["ckd_cds"].store.engine.connect() as conn:
        for table in ("card_index", "snoozes", "snoozed_cards", "feedback", "audit"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()  # noqa: S608 - fixed table names
            assert pid not in repr(rows)


def test_each_card_counts_once_as_its_final_outcome(app: Flask) -> None:
    # The Sandbox keeps a card on screen after its suggestion is taken, so it can also be dismissed: before, the
    # report counted that card as accepted and as overridden.
    client = app.test_client()
    card = open_chart(client, demo_bundles(date.today())["03-g3a-a2-not-coded"])["problem_list"]
    events = [
        {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z",
         "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]},
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:01:00Z",
         "overrideReason": {"reason": {"code": "already-addressed"}}},
    ]  # fmt: skip
    assert client.post(FEEDBACK, json={"feedback": events}).status_code == 200
    store = app.extensions["ckd_cds"].store
    report = {r["rule"]: r for r in store.feedback_report()}["problem_list"]
    assert (report["accepted"], report["overridden"], report["feedback_events"]) == (0, 1, 2)
    assert report["reasons"] == {"already-addressed": 1}
    assert store.feedback_count() == 2  # the raw events are kept


def test_no_snooze_lookup_for_a_chart_without_cards(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #15: most charts show no card; nothing could be snoozed, so the store is not asked (one SELECT less)."""
    store = app.extensions["ckd_cds"].store
    lookups: list[str] = []
    real = store.active_snoozes
    monkeypatch.setattr(store, "active_snoozes", lambda link: lookups.append(link) or real(link))
    client = app.test_client()
    bundles = demo_bundles(date.today())
    assert open_chart(client, bundles["01-normal"]) == {}
    assert lookups == []
    assert open_chart(client, bundles["03-g3a-a2-not-coded"])  # cards: the lookup runs
    assert len(lookups) == 1
