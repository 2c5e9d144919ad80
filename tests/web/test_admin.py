"""The admin API and console: authentication, roles, CSRF, login rate limit, validation, versions, hot reload."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from service.demo import demo_bundles
from service.web.settings import AdminUser
from tests.conftest import make_app
from tests.web.test_hooks import call, prefetch_for, resources

TOKEN = "admin-api-token-for-tests"
USERS = {
    "ann": AdminUser(role="editor", password_hash=generate_password_hash("ann-pass")),
    "vic": AdminUser(role="viewer", password_hash=generate_password_hash("vic-pass")),
}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def admin_app(tmp_path: Path, **extra: Any) -> Flask:
    return make_app(tmp_path, None, admin_users=USERS, admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
                    **extra)  # fmt: skip


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return admin_app(tmp_path)


def live(client: FlaskClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/admin/api/config", headers=BEARER).json
    return body


def save(client: FlaskClient, document: dict[str, Any], base: int, comment: str = "test") -> Any:
    return client.put("/admin/api/config", json={"document": document, "base_version": base, "comment": comment},
                      headers=BEARER)  # fmt: skip


def test_api_needs_authentication(client: FlaskClient) -> None:
    assert client.get("/admin/api/config").status_code == 401
    assert client.get("/admin/api/config", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/admin/api/config", headers=BEARER).status_code == 200


@pytest.mark.parametrize(
    ("change", "path", "needle"),
    [
        ({"sglt2i": {"min_egfr": 10}}, "sglt2i.min_egfr", "minimum"),
        ({"sglt2i": {"min_egfr": "twenty"}}, "sglt2i.min_egfr", "not of type"),
        ({"sglt2i": {"typo": 1}}, "sglt2i.typo", "not allowed"),
        ({"glp1ra": {"mode": "nice"}}, "glp1ra.mode", "is not one of"),
        (
            {"krt_planning": {"max_egfr": 20}, "nephrology_referral": {"max_egfr": 15}},
            "krt_planning.max_egfr",
            "exceed",
        ),
        ({"fhir": {"budget_s": 1.0, "read_timeout_s": 2.0}}, "fhir.budget_s", "exceed"),
        (
            {"site_codes": [{"system": "urn:oid:1.2.3", "code": "A1", "loinc": "1234-5"}]},
            "site_codes.0.loinc",
            "engine",
        ),
        (
            {"site_codes": [{"system": "http://lab.example/c?x=1&y", "code": "A1", "loinc": "2160-0"}]},
            "site_codes.0.system",
            "match",
        ),  # issue #13: would end up in a search query
        ({"rasi": {"suggested_agents": ["aspirin"]}}, "rasi.suggested_agents", "unknown ingredient"),
        ({"service": {"timezone": "Mars/Base"}}, "service.timezone", "time zone"),
    ],
)
def test_each_invalid_kind_is_rejected_clearly_and_live_is_untouched(
    client: FlaskClient, change: dict[str, Any], path: str, needle: str
) -> None:
    before = live(client)
    dry = client.post("/admin/api/config/validate", json={"document": change}, headers=BEARER).json
    assert dry["valid"] is False
    assert needle in dry["errors"][path]
    response = save(client, change, before["version"])
    assert response.status_code == 400
    assert path in response.json["errors"]
    assert live(client) == before


def test_save_history_diff_restore_and_stale_409(client: FlaskClient) -> None:
    base = live(client)["version"]
    saved = save(client, {"sglt2i": {"min_egfr": 25}}, base, "raise SGLT2i limit")
    assert saved.status_code == 200
    assert saved.json["version"] == base + 1
    assert live(client)["document"]["sglt2i"]["min_egfr"] == 25
    stale = save(client, {"sglt2i": {"min_egfr": 30}}, base, "based on an old version")
    assert stale.status_code == 409
    assert stale.json["latest_version"] == base + 1
    history = client.get("/admin/api/config/history", headers=BEARER).json["versions"]
    assert [v["comment"] for v in history][:2] == ["raise SGLT2i limit", history[1]["comment"]]
    assert history[0]["author"] == "api-token"
    diff = client.get(f"/admin/api/config/diff?from={base}&to={base + 1}", headers=BEARER).json["diff"]
    assert "-  min_egfr: 20" in diff
    restored = client.post(f"/admin/api/config/restore/{base}", headers=BEARER).json
    assert restored["restored_from"] == base
    assert live(client)["document"]["sglt2i"]["min_egfr"] == 20


def test_hook_calls_use_the_new_version_and_stamp_it(app: Flask, client: FlaskClient) -> None:
    bundle = demo_bundles(date.today())["05-g4-on-metformin"]  # eGFR 22.5, T2D: SGLT2i card at min_egfr 20
    body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))
    rules = {
        c["extension"]["org.ckd-cds.rule"]["id"]
        for c in client.post("/cds-services/ckd-patient-view", json=body).json["cards"]
    }
    assert "sglt2i" in rules
    saved = save(client, {"sglt2i": {"min_egfr": 25}, "cards": {"max_cards": 20}}, live(client)["version"]).json
    app.extensions["ckd_cds"].config.check_interval = 0  # this test need not wait the 1 s polling interval
    cards = client.post("/cds-services/ckd-patient-view", json=body).json["cards"]
    assert "sglt2i" not in {c["extension"]["org.ckd-cds.rule"]["id"] for c in cards}
    assert {c["extension"]["org.ckd-cds.rule"]["configVersion"] for c in cards} == {saved["label"]}
    audit = app.extensions["ckd_cds"].store.audit_records()[0]
    assert audit["config_version"] == saved["label"]


def test_another_instance_on_the_same_database_reloads_within_2_seconds(tmp_path: Path) -> None:
    first, second = admin_app(tmp_path).test_client(), admin_app(tmp_path).test_client()
    assert second.get("/readyz").json["configVersion"].startswith("v1-")
    saved = save(first, {"statin": {"min_age": 45}}, 1).json
    deadline = time.monotonic() + 2.0
    while second.get("/readyz").json["configVersion"] != saved["label"]:
        assert time.monotonic() < deadline, "not reloaded within 2 s"
        time.sleep(0.05)


def login(client: FlaskClient, user: str, password: str) -> Any:
    return client.post("/admin/login", data={"username": user, "password": password})


def csrf_of(client: FlaskClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin").get_data(as_text=True))
    assert match is not None
    return match.group(1)


def test_console_login_roles_and_csrf(client: FlaskClient) -> None:
    assert client.get("/admin").headers["Location"].endswith("/admin/login")
    assert login(client, "ann", "wrong").status_code == 401
    assert login(client, "ann", "ann-pass").status_code == 302
    page = client.get("/admin")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    cookie = page.headers.get("Set-Cookie") or ""
    assert "ckd_cds_admin" not in cookie or "HttpOnly" in cookie
    no_csrf = client.post("/admin/api/config/restore/1")
    assert no_csrf.status_code == 403
    with_csrf = client.post("/admin/api/config/restore/1", headers={"X-CSRF-Token": csrf_of(client)})
    assert with_csrf.status_code == 200


def test_viewer_can_read_but_not_change(client: FlaskClient) -> None:
    login(client, "vic", "vic-pass")
    page = client.get("/admin").get_data(as_text=True)
    assert 'id="save-button"' not in page
    assert client.get("/admin/api/config").status_code == 200
    denied = client.post("/admin/api/config/restore/1", headers={"X-CSRF-Token": csrf_of(client)})
    assert denied.status_code == 403


def test_login_rate_limit(tmp_path: Path) -> None:
    client = admin_app(tmp_path, login_attempts=3).test_client()
    assert [login(client, "ann", "bad").status_code for _ in range(3)] == [401, 401, 401]
    assert login(client, "ann", "ann-pass").status_code == 429  # even the right password waits


@pytest.mark.parametrize(
    "body",
    [{"base_version": 1, "comment": "x"}, {"document": [], "base_version": 1, "comment": "x"},
     {"document": {}, "base_version": "1", "comment": "x"}, {"document": {}, "base_version": 1, "comment": " "}],
)  # fmt: skip
def test_save_request_shape_is_checked(client: FlaskClient, body: dict[str, Any]) -> None:
    # Found by schemathesis: a PUT without a document used to reach an assertion (500).
    response = client.put("/admin/api/config", json=body, headers=BEARER)
    assert response.status_code == 400
    assert response.json["resourceType"] == "OperationOutcome"


def test_a_stored_version_with_an_obsolete_key_still_loads_and_says_so(app: Flask, client: FlaskClient) -> None:
    # Clinical spec 2.0 S18 fixed the trend window: versions saved under 1.0 carry trajectory.lookback_days.
    configs = app.extensions["ckd_cds"].configs
    old = {"sglt2i": {"min_egfr": 25}, "trajectory": {"lookback_days": 1825}}
    saved = configs.save(old, base_version=configs.latest_number(), author="1.0", comment="saved under spec 1.0")
    app.extensions["ckd_cds"].config.reload()
    thresholds, label = app.extensions["ckd_cds"].config.current()
    assert thresholds.sglt2i.min_egfr == 25  # the rest of the version applies
    assert label
    history = client.get("/admin/api/config/history", headers=BEARER).json["versions"]
    entry = next(v for v in history if v["version"] == saved.version)
    assert entry["notes"] == [
        "trajectory.lookback_days is obsolete and ignored: clinical spec 2.0 (S18) fixes the trend window at 3 years"
    ]
    login(client, "vic", "vic-pass")
    page = client.get("/admin/history").get_data(as_text=True)
    assert "trajectory.lookback_days is obsolete and ignored" in page
    # a hook call under that version works, and saving it again (restore) drops the key
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]
    assert client.post("/cds-services/ckd-patient-view", json=call(resources(bundle)[0]["id"],
                       prefetch=prefetch_for(bundle))).status_code == 200  # fmt: skip
    restored = client.post(f"/admin/api/config/restore/{saved.version}", headers=BEARER)
    assert restored.status_code == 200
    assert "trajectory" not in configs.latest().document


def test_a_stored_version_that_disabled_a_safety_card_loads_with_the_card_on(app: Flask, client: FlaskClient) -> None:
    """Clinical spec 2.1 §7.5: 2.0 allowed hyperkalaemia.enabled false; such a stored version still loads (the service
    never refuses to start over it), the value is ignored and the history says so; a new save with it is refused."""
    configs = app.extensions["ckd_cds"].configs
    old = {"hyperkalaemia": {"enabled": False}, "sglt2i": {"min_egfr": 25}}
    saved = configs.save(old, base_version=configs.latest_number(), author="2.0", comment="saved under spec 2.0")
    app.extensions["ckd_cds"].config.reload()
    thresholds, _ = app.extensions["ckd_cds"].config.current()
    assert thresholds.sglt2i.min_egfr == 25
    history = client.get("/admin/api/config/history", headers=BEARER).json["versions"]
    entry = next(v for v in history if v["version"] == saved.version)
    assert entry["notes"] == ["hyperkalaemia.enabled is ignored: a safety card cannot be switched off or downgraded "
                              "(clinical spec 2.1 §7.5)"]  # fmt: skip
    bundle = demo_bundles(date.today())["15-hyperkalaemia-on-acei"]
    response = client.post("/cds-services/ckd-patient-view", json=call(resources(bundle)[0]["id"],
                           prefetch=prefetch_for(bundle)))  # fmt: skip
    assert "hyperkalaemia" in {c["extension"]["org.ckd-cds.rule"]["id"] for c in response.json["cards"]}
    refused = save(client, {"dual_ras": {"enabled": False}}, configs.latest_number())
    assert refused.status_code == 400
    assert "dual_ras.enabled" in refused.get_data(as_text=True)
