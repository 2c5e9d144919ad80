"""The demo patients written for the order hooks (issue #22), as `make demo` signs their orders: each gets the card
its situation was written for, read as a clinician would (examples/patients/25–28, examples/orders)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.demo import demo_bundles, demo_orders
from service.web.state import validator
from tests.dosing.shapes import prefetch
from tests.web.test_hooks import resources

EXPECTED = {
    # age 83 and 56 kg: two criteria (US label §2.1), so 2.5 mg twice daily; the change keeps one tablet twice daily
    "25-af-apixaban-two-criteria": (
        "dose.apixaban.reduced", "warning",
        "Apixaban 5 mg twice daily: 2.5 mg twice daily (age 83, 56 kg, creatinine 1.3 mg/dL)",
        ["Change to apixaban 2.5 MG Oral Tablet, twice daily"],
    ),
    # (140 − 77) × 58 / (72 × 1.7) × 0.85 = 25.3 mL/min: below 30, contraindicated (label; Beers 2019)
    "26-nitrofurantoin-crcl-25": ("dose.nitrofurantoin.lt30", "critical",
                                  "Nitrofurantoin is contraindicated (CrCl 25.3 mL/min)", []),
    "27-dialysis-gabapentin": ("dose.gabapentin.dialysis", "info",
                               "Gabapentin on dialysis: dosing not checked, ask pharmacy", []),
    "28-no-weight-pregabalin": ("dose.pregabalin.insufficient", "info",
                                "Cannot check pregabalin dosing: no weight in the last 90 days", []),
}  # fmt: skip


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_demo_order_sign_cards(client: FlaskClient, slug: str) -> None:
    today = date.today()
    bundle, drafts = demo_bundles(today)[slug], demo_orders(today)[slug]
    items = resources(bundle)
    body: dict[str, Any] = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                            "context": {"patientId": items[0]["id"], "userId": "Practitioner/1", "draftOrders": drafts},
                            "prefetch": prefetch(items)}  # fmt: skip
    response = client.post("/cds-services/ckd-renal-dosing-sign", json=body)
    assert response.status_code == 200
    assert list(validator("cds-response").iter_errors(response.json)) == []
    (card,) = response.json["cards"]
    rule, indicator, summary, suggestions = EXPECTED[slug]
    assert (card["extension"]["org.ckd-cds.rule"]["id"], card["indicator"], card["summary"]) == (rule, indicator,
                                                                                                  summary)  # fmt: skip
    assert [s["label"] for s in card.get("suggestions", [])] == suggestions


def test_every_demo_order_is_covered() -> None:
    assert set(demo_orders()) == set(EXPECTED)
