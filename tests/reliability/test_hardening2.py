"""Hardening 2 (issue #21), as an attacker or a real EHR would send it; each case failed on the code before it.

1. cross-tenant snooze, 2. safety snoozes that renew or come from anyone, 3. Medication references, 4. feedback not
bound to the card's issuer, tenant and patient, 5. a `coding` that is a number, 11. every result rejected.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.demo import demo_bundles
from service.web.settings import Issuer
from tests.conftest import make_app as make_dev_app
from tests.web.test_auth import BASE, ISS, JWKS, token
from tests.web.test_auth import make_app as make_jwt_app
from tests.web.test_hooks import URL, call, prefetch_for, resources

FEEDBACK = URL + "/feedback"
REASON = {"reason": {"code": "patient-declined", "system": "https://ckd-cds.example.org/override"}}


@pytest.fixture
def bundles() -> dict[str, dict[str, Any]]:
    return demo_bundles(date.today())


def pid(bundle: dict[str, Any]) -> str:
    return str(resources(bundle)[0]["id"])


def as_patient(bundle: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """The same chart under another patient id (another person with the same numbers)."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(bundle).replace(pid(bundle).encode(), patient_id.encode()))
    return out


def chart(client: FlaskClient, bundle: dict[str, Any], headers: dict[str, str] | None = None,
          hook_instance: str | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    body = call(pid(bundle), prefetch=prefetch_for(bundle)) | {"hookInstance": hook_instance or str(uuid.uuid4())}
    response = client.post(URL, json=body, headers=headers or {})
    assert response.status_code == 200, response.json
    return {c["extension"]["org.ckd-cds.rule"]["id"]: c for c in response.json["cards"]}


def answer(client: FlaskClient, card: dict[str, Any], headers: dict[str, str] | None = None,
           outcome: str = "overridden") -> None:  # fmt: skip
    item: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-29T10:00:00Z"}
    if outcome == "overridden":
        item["overrideReason"] = REASON
    assert client.post(FEEDBACK, json={"feedback": [item]}, headers=headers or {}).status_code == 200


def jwt_for(path: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(aud=BASE + path, **claims)}"}


@pytest.fixture
def jwt_app(tmp_path: Path) -> Flask:
    return make_jwt_app(tmp_path, Issuer(iss=ISS, jwks=JWKS))


# --- 1: cross-tenant snooze ------------------------------------------------------------------------------------


def test_one_tenants_override_never_hides_another_tenants_card(
    jwt_app: Flask, bundles: dict[str, dict[str, Any]]
) -> None:
    """Tenant t1 overrode the hyperkalaemia card of its patient "12345"; tenant t2's "12345" is another person."""
    client = jwt_app.test_client()
    bundle = as_patient(bundles["15-hyperkalaemia-on-acei"], "12345")
    t1 = chart(client, bundle, jwt_for(URL, tenant="t1"))
    answer(client, t1["hyperkalaemia"], jwt_for(FEEDBACK, tenant="t1"))
    assert "hyperkalaemia" not in chart(client, bundle, jwt_for(URL, tenant="t1"))  # t1's own snooze holds
    assert "hyperkalaemia" in chart(client, bundle, jwt_for(URL, tenant="t2"))


# --- 2: safety snoozes -----------------------------------------------------------------------------------------


def test_unauthenticated_feedback_never_snoozes_a_safety_card(tmp_path: Path, bundles: dict[str, Any]) -> None:
    """The development profile (no JWT): someone who knew a patient id overrode the safety cards of made-up labs."""
    client = make_dev_app(tmp_path).test_client()
    bundle = bundles["05-g4-on-metformin"]
    cards = chart(client, bundle)
    assert "metformin_stop" in cards
    answer(client, cards["metformin_stop"])
    assert "metformin_stop" in chart(client, bundle)


def test_overriding_a_safety_card_again_never_extends_its_snooze(
    jwt_app: Flask, bundles: dict[str, dict[str, Any]]
) -> None:
    client = jwt_app.test_client()
    bundle = bundles["15-hyperkalaemia-on-acei"]
    first = chart(client, bundle, jwt_for(URL))
    answer(client, first["hyperkalaemia"], jwt_for(FEEDBACK))
    store = jwt_app.extensions["ckd_cds"].store
    link = next(iter(store.cards_by_uuid([first["hyperkalaemia"]["uuid"]]).values())).patient_link
    end = store.active_snoozes(link)["hyperkalaemia"].until
    # the snooze is lifted by hand (as if the chart had shown it again on day 8 of a longer snooze) and the same
    # finding overridden again: no fresh 7 days
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE snoozes SET until = created_at")
    again = chart(client, bundle, jwt_for(URL))
    answer(client, again["hyperkalaemia"], jwt_for(FEEDBACK))
    assert "hyperkalaemia" not in store.active_snoozes(link) or store.active_snoozes(link)["hyperkalaemia"].until <= end


# --- 3: Medication references ----------------------------------------------------------------------------------


def with_medication_reference(bundle: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """The metformin order as Epic writes it: medicationReference to a Medication in the same search Bundle."""
    prefetch = copy.deepcopy(prefetch_for(bundle))
    entries = prefetch["medications"]["entry"]
    request = entries[0]["resource"]
    concept = request.pop("medicationCodeableConcept")
    request["medicationReference"] = {"reference": "Medication/met-1", "display": "metformin"}
    medication = {"resourceType": "Medication", "id": "met-1", "code": concept}
    entries.append({"resource": medication, **({"search": {"mode": mode}} if mode else {})})
    return prefetch


@pytest.mark.parametrize("mode", [None, "include", "match"])
def test_a_medication_reference_keeps_its_drug(client: FlaskClient, bundles: dict[str, Any], mode: str | None) -> None:
    bundle = bundles["05-g4-on-metformin"]
    response = client.post(URL, json=call(pid(bundle), prefetch=with_medication_reference(bundle, mode)))
    assert response.status_code == 200
    rules = {c["extension"]["org.ckd-cds.rule"]["id"] for c in response.json["cards"]}
    assert "metformin_stop" in rules


# --- 4: feedback bound to issuer, tenant and patient -----------------------------------------------------------


def test_another_issuers_feedback_changes_nothing(tmp_path: Path, bundles: dict[str, Any]) -> None:
    other = "https://other-ehr.example.org/fhir"
    app = make_jwt_app(tmp_path, Issuer(iss=ISS, jwks=JWKS))
    client = app.test_client()
    bundle = bundles["16-acei-plus-arb"]
    cards = chart(client, bundle, jwt_for(URL))
    store = app.extensions["ckd_cds"].store
    with store.engine.begin() as conn:  # the cards as if issuer B had been given them; issuer A answers
        conn.exec_driver_sql("UPDATE card_index SET iss = ?", (other,))
    answer(client, cards["statin"], jwt_for(FEEDBACK))
    assert "statin" in chart(client, bundle, jwt_for(URL))
    assert all(r["overridden"] == 0 for r in store.feedback_report())


def test_a_hook_instance_reused_for_two_patients_gives_each_its_own_cards(
    client: FlaskClient, bundles: dict[str, Any]
) -> None:
    a = chart(client, bundles["03-g3a-a2-not-coded"], hook_instance="reused")
    b = chart(client, as_patient(bundles["03-g3a-a2-not-coded"], "another-person"), hook_instance="reused")
    assert a["statin"]["uuid"] != b["statin"]["uuid"]
    answer(client, a["statin"])
    assert "statin" in chart(client, as_patient(bundles["03-g3a-a2-not-coded"], "another-person"))


# --- 5: codings that are numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, True, 1.5, {"code": "x"}])
def test_a_coding_that_is_not_a_list_is_read_as_none(client: FlaskClient, bundles: dict[str, Any], bad: Any) -> None:
    bundle = bundles["05-g4-on-metformin"]
    prefetch = copy.deepcopy(prefetch_for(bundle))
    prefetch["kidneyLabs"]["entry"][0]["resource"]["code"]["coding"] = bad
    prefetch["conditions"]["entry"][0]["resource"]["code"]["coding"] = bad
    prefetch["medications"]["entry"][0]["resource"]["medicationCodeableConcept"]["coding"] = bad
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch))
    assert response.status_code == 200


# --- 11: every result rejected ---------------------------------------------------------------------------------


def test_when_every_result_is_left_out_the_chart_does_not_read_all_clear(
    client: FlaskClient, bundles: dict[str, Any]
) -> None:
    bundle = bundles["05-g4-on-metformin"]
    prefetch = copy.deepcopy(prefetch_for(bundle))
    for key, value in prefetch.items():
        if key != "patient":
            for entry in value["entry"]:
                entry["resource"]["subject"] = {"reference": "Patient/someone-else"}
    response = client.post(URL, json=call(pid(bundle), prefetch=prefetch))
    assert response.status_code == 200
    cards = response.json["cards"]
    assert len(cards) == 1
    assert "did not name this patient" in cards[0]["summary"]


# --- 8: the link secret is not in the store, SQLite files are 0600 -------------------------------------------------


def test_the_link_secret_is_not_in_the_database_and_the_files_are_private(tmp_path: Path) -> None:
    import os
    import stat

    import sqlalchemy as sa

    app = make_dev_app(tmp_path)
    store = app.extensions["ckd_cds"].store
    with store.engine.connect() as conn:
        names = {row[0] for row in conn.execute(sa.text("SELECT name FROM app_secrets"))}
    assert "patient-link" not in names  # a copy of the database alone re-identifies no link
    database = tmp_path / "store.db"
    assert stat.S_IMODE(os.stat(database).st_mode) == 0o600
    wal = tmp_path / "store.db-wal"
    if wal.exists():
        assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o400, True), (0o644, False), (0o640, False)])
def test_a_link_secret_file_must_be_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, ok: bool
) -> None:
    from service.config import ConfigError
    from service.web.settings import read_link_secret

    path = tmp_path / "link.secret"
    path.write_text("k" * 64, encoding="utf-8")
    path.chmod(mode)
    monkeypatch.delenv("CKD_CDS_PATIENT_LINK_SECRET", raising=False)
    monkeypatch.setenv("CKD_CDS_PATIENT_LINK_SECRET_FILE", str(path))
    if ok:
        assert read_link_secret() == "k" * 64
    else:
        with pytest.raises(ConfigError, match="chmod 600"):
            read_link_secret()


def test_the_link_depends_on_the_secret_so_rotation_ends_every_snooze(tmp_path: Path, bundles: dict[str, Any]) -> None:
    """docs/operations.md: a new secret makes every stored link unmatched: snoozes end (the safe direction)."""
    (tmp_path / "a").mkdir()
    client = make_dev_app(tmp_path / "a", patient_link_secret="a" * 64).test_client()
    bundle = bundles["03-g3a-a2-not-coded"]
    answer(client, chart(client, bundle)["statin"])
    assert "statin" not in chart(client, bundle)
    rotated = make_dev_app(tmp_path / "a", patient_link_secret="b" * 64).test_client()
    assert "statin" in chart(rotated, bundle)


# --- 7: the dashboard and feedback volume ------------------------------------------------------------------------


def test_answers_dated_1901_do_not_stretch_the_chart(tmp_path: Path, bundles: dict[str, Any]) -> None:
    """The chart bins on the server's clock over the last year, whatever outcomeTimestamp says."""
    app = make_dev_app(tmp_path)
    client = app.test_client()
    card = chart(client, bundles["03-g3a-a2-not-coded"])["statin"]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "1901-01-07T10:00:00Z",
            "overrideReason": REASON}  # fmt: skip
    assert client.post(FEEDBACK, json={"feedback": [item]}).status_code == 200
    weeks = app.extensions["ckd_cds"].store.feedback_weekly()
    assert len(weeks) == 1  # this week only: before, one bin per week back to 1901 (65 s of CPU for 7,610 answers)
    assert weeks[0]["week"] >= (date.today() - timedelta(days=7)).isoformat()
    assert (weeks[0]["shown"], weeks[0]["overridden"]) == (3, 1)  # 3 cards shown, the statin overridden


def test_answers_per_card_are_capped(tmp_path: Path, bundles: dict[str, Any]) -> None:
    from service.store import MAX_ANSWERS_PER_CARD

    app = make_dev_app(tmp_path)
    client = app.test_client()
    card = chart(client, bundles["03-g3a-a2-not-coded"])["statin"]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z",
            "overrideReason": REASON}  # fmt: skip
    assert client.post(FEEDBACK, json={"feedback": [item] * MAX_ANSWERS_PER_CARD}).status_code == 200
    refused = client.post(FEEDBACK, json={"feedback": [item]})
    assert refused.status_code == 429
    assert refused.json["resourceType"] == "OperationOutcome"
    assert app.extensions["ckd_cds"].store.feedback_count() == MAX_ANSWERS_PER_CARD  # nothing stored in part


def test_retention_purges_old_rows_and_ended_snoozes(tmp_path: Path, bundles: dict[str, Any]) -> None:
    import sqlalchemy as sa

    app = make_dev_app(tmp_path)
    client = app.test_client()
    answer(client, chart(client, bundles["03-g3a-a2-not-coded"])["statin"])
    store = app.extensions["ckd_cds"].store
    long_ago = datetime.now(UTC) - timedelta(days=800)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE feedback SET received_at = :t"), {"t": long_ago})
        conn.execute(sa.text("UPDATE card_index SET created_at = :t"), {"t": long_ago})
        conn.execute(sa.text("UPDATE snoozes SET until = :t"), {"t": long_ago})
    deleted = store.purge(730)
    assert deleted["feedback"] == 1
    assert deleted["card_index"] >= 1
    assert deleted["snoozes"] == 1
    assert store.feedback_count() == 0


@pytest.mark.parametrize("stamp", ["2026-W48-7T10:00:00Z", "2026-11-29 10:00:00Z", "20261129T100000Z"])
def test_only_rfc_3339_timestamps(client: FlaskClient, stamp: str) -> None:
    valid = {"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:00:00Z"}
    assert client.post(FEEDBACK, json={"feedback": [valid]}).status_code == 200  # the same item is otherwise fine
    refused = client.post(FEEDBACK, json={"feedback": [{**valid, "outcomeTimestamp": stamp}]})
    assert refused.status_code == 400
    assert "outcomeTimestamp" in refused.json["issue"][0]["diagnostics"]


# --- low findings ------------------------------------------------------------------------------------------------


def test_a_compressed_body_is_415_not_400(client: FlaskClient, bundles: dict[str, Any]) -> None:
    import gzip

    body = gzip.compress(orjson.dumps(call("p1")))
    response = client.post(URL, data=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert response.json["resourceType"] == "OperationOutcome"


def test_a_client_request_id_is_kept_beside_the_services_own(app: Flask, client: FlaskClient) -> None:
    response = client.get("/cds-services", headers={"X-Request-ID": "abc123"})
    assert response.headers["X-Request-ID"] != "abc123"  # the service's own id: a client cannot collide with another
    client.post(URL, json=call("p1"), headers={"X-Request-ID": "abc123"})
    record = app.extensions["ckd_cds"].store.audit_records(1)[0]
    assert record["client_request_id"] == "abc123"
    assert record["request_id"] != "abc123"


def test_the_console_shows_no_message_a_link_carries(tmp_path: Path) -> None:
    from tests.reliability.test_hardening import admin, sign_in

    client = admin(tmp_path).test_client()
    assert sign_in(client, "ann", "ann-pass") == 302
    page = client.get("/admin?saved=Your+session+expired:+sign+in+at+evil.example").get_data(as_text=True)
    assert "evil.example" not in page
    assert "Saved version 3." in client.get("/admin?saved=Saved+version+3.").get_data(as_text=True)


def test_failed_sign_ins_from_one_address_do_not_lock_the_account_elsewhere(tmp_path: Path) -> None:
    from tests.reliability.test_hardening import admin

    app = admin(tmp_path, login_attempts=3)
    attacker = app.test_client()
    for _ in range(6):
        attacker.post("/admin/login", data={"username": "ann", "password": "wrong"},
                      environ_overrides={"REMOTE_ADDR": "10.9.9.9"})  # fmt: skip
    locked = attacker.post("/admin/login", data={"username": "ann", "password": "ann-pass"},
                           environ_overrides={"REMOTE_ADDR": "10.9.9.9"})  # fmt: skip
    assert locked.status_code == 429  # the guessing address stays locked out
    owner = app.test_client().post("/admin/login", data={"username": "ann", "password": "ann-pass"},
                                   environ_overrides={"REMOTE_ADDR": "192.0.2.7"})  # fmt: skip
    assert owner.status_code == 302  # before: the account itself was locked, from every address


def test_the_admin_preview_refuses_an_oversized_bundle(tmp_path: Path) -> None:
    from tests.web.test_admin import admin_app, csrf_of, login

    client = admin_app(tmp_path).test_client()
    login(client, "ann", "ann-pass")
    entries = [{"resource": {"resourceType": "Observation", "id": str(i)}} for i in range(2001)]
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).decode()
    response = client.post("/admin", data={"csrf_token": csrf_of(client), "action": "preview", "bundle": bundle})
    assert response.status_code == 200
    assert "more than 2,000 entries" in response.get_data(as_text=True)


def test_a_trickling_fhir_response_is_not_read_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #21: a server trickling its body held the fetch thread past the request deadline (iter_content waited
    for 64 KiB). On a fake clock: one byte per read, one second per read; the read stops at the deadline."""
    import requests

    from service.web import acquire

    clock = [0.0]

    class Trickle:
        reads = 0

        def read1(self, amt: int, decode_content: bool = True) -> bytes:
            Trickle.reads += 1
            clock[0] += 1.0
            return b"x"

    class Response:
        def __init__(self) -> None:
            self.headers: dict[str, str] = {}
            self.raw = Trickle()
            self.closed = False

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(acquire.time, "monotonic", lambda: clock[0])
    response = Response()
    with pytest.raises(requests.Timeout):
        acquire.read_capped(response, 10_000_000, deadline=3.0)  # type: ignore[arg-type]
    assert response.closed
    assert Trickle.reads <= 4  # stopped at the deadline: before, it read on until 64 KiB had arrived


@pytest.mark.parametrize("tenant", ["t" * 201, "", "line\nbreak", 5])
def test_an_unusable_tenant_claim_is_a_401(jwt_app: Flask, tenant: Any) -> None:
    """Issue #21: the tenant claim was unbounded (the audit was lost on PostgreSQL) and a non-string tenant was read as
    no tenant, sharing override memory with tenant-less calls."""
    client = jwt_app.test_client()
    response = client.post(URL, json=call("p1"), headers=jwt_for(URL, tenant=tenant))
    assert response.status_code == 401
