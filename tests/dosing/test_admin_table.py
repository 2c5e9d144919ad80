"""The drug table in the admin console (renal dosing RD-10.2): rows with their evidence and sources, enabling a
`to_verify` row only after pharmacist review, overlays versioned like the thresholds and hot-reloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from service.web.admin_form import fields, form_values
from tests.dosing.shapes import draft_bundle, order_call, patient_resources, sandbox_draft
from tests.web.test_admin import BEARER, admin_app, csrf_of, live, login


def console_form(client: FlaskClient, **changes: str) -> dict[str, Any]:
    document = live(client)["document"]
    all_fields = fields(document)
    form: dict[str, Any] = dict(form_values(document, all_fields))
    form.update(changes)
    form.update(csrf_token=csrf_of(client), base_version=str(live(client)["version"]))
    return form


def test_console_lists_every_row_with_its_evidence_and_source(tmp_path: Path) -> None:
    client = admin_app(tmp_path).test_client()
    login(client, "ann", "ann-pass")
    page = client.get("/admin").get_data(as_text=True)
    assert "sitagliptin enabled (evidence: to verify)" in page
    assert "gabapentin enabled (evidence: confirmed)" in page
    assert "Neurontin (gabapentin) US label §2, Table 1" in page
    assert "&gt; 15 and ≤ 30: reduce, 200-700 mg a day as a single dose" in page


def test_enabling_a_to_verify_row_needs_pharmacist_review(tmp_path: Path) -> None:
    app: Flask = admin_app(tmp_path)
    client = app.test_client()
    login(client, "ann", "ann-pass")
    form = console_form(client, comment="enable sitagliptin", action="save",
                        **{"renal_dosing.drugs.sitagliptin.enabled": "true"})  # fmt: skip
    refused = client.post("/admin", data=form)
    assert refused.status_code == 400
    assert "pharmacist review required" in refused.get_data(as_text=True)
    assert live(client)["version"] == 1
    form["pharmacist_review"] = "yes"
    form["comment"] = "enable sitagliptin after review by J. Pharmacist, PharmD"
    assert client.post("/admin", data=form).status_code == 302
    saved = live(client)
    assert saved["version"] == 2
    assert saved["document"]["renal_dosing"]["drugs"] == {"sitagliptin": {"enabled": True}}
    history = client.get("/admin/api/config/history", headers=BEARER).json
    assert "J. Pharmacist" in str(history)
    # hot reload: the next order-sign call checks sitagliptin (eGFR about 15: 25 mg a day at most; 100 mg is above)
    items = patient_resources("p-sita", age=68, sex="male", scr=4.0, weight=80)
    body = order_call("order-sign", "p-sita", items, draft_bundle(sandbox_draft("p-sita", "665033",
                                                                                "sitagliptin 100 MG Oral Tablet",
                                                                                frequency=1)))  # fmt: skip
    cards = app.test_client().post("/cds-services/ckd-renal-dosing-sign", json=body).json["cards"]
    assert [c["extension"]["org.ckd-cds.rule"]["id"] for c in cards] == ["dose.sitagliptin.lt30"]


def test_overlay_yaml_is_validated_and_disabling_needs_no_review(tmp_path: Path) -> None:
    client = admin_app(tmp_path).test_client()
    login(client, "ann", "ann-pass")
    bad = console_form(client, comment="x", action="save",
                       **{"renal_dosing.drugs": "gabapentin:\n  bands: []\n"})  # fmt: skip
    response = client.post("/admin", data=bad)
    assert response.status_code == 400
    assert "renal_dosing.drugs.gabapentin.bands" in response.get_data(as_text=True)
    off = console_form(client, comment="NSAID row off at this site", action="save",
                       **{"renal_dosing.drugs.nsaids.enabled": "false"})  # fmt: skip
    assert client.post("/admin", data=off).status_code == 302
    assert live(client)["document"]["renal_dosing"]["drugs"] == {"nsaids": {"enabled": False}}
    same = console_form(client, comment="nothing", action="save")
    assert "No change" in client.post("/admin", data=same, follow_redirects=True).get_data(as_text=True)
