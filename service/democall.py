"""Print example calls to the running service and the cards they return (used by `make demo`): patient-view for every
demo patient, then order-sign for the demo patients written with an order (issue #22)."""

from __future__ import annotations

import json
import sys
import urllib.parse
import uuid
from typing import Any

import requests

from service.demo import demo_bundles, demo_orders
from service.fhir.testehr import DEMO_PORT
from service.fhir.testserver import STATE_FILE, wait_ready

SERVICE = "http://127.0.0.1:8080"


def hook_call(patient_id: str, fhir: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": patient_id, "userId": "Practitioner/demo"},
        "fhirServer": fhir["base_url"],
        "fhirAuthorization": {"access_token": fhir["token"], "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "demo"},
    }  # fmt: skip


def order_call(patient_id: str, drafts: dict[str, Any], fhir: dict[str, Any]) -> dict[str, Any]:
    """An order-sign call as the Sandbox's Rx Sign tab makes it: the draft in context.draftOrders, the record read
    from the FHIR server with the token."""
    body = hook_call(patient_id, fhir)
    body["hook"] = "order-sign"
    body["context"]["draftOrders"] = drafts
    return body


def show(slug: str, situation: str, body: dict[str, Any], service: str = "ckd-patient-view") -> None:
    response = requests.post(f"{SERVICE}/cds-services/{service}", json=body, timeout=10)
    cards = response.json().get("cards", []) if response.ok else []
    print(f"\n# {slug}: {situation} -> HTTP {response.status_code}, {len(cards)} card(s)")
    for card in cards:
        print(f"  [{card['indicator']:8}] {card['summary']}")
        for suggestion in card.get("suggestions", []):
            print(f"              suggestion: {suggestion['label']}")


def main() -> int:
    try:
        wait_ready(f"{SERVICE}/healthz", timeout=30)
    except RuntimeError:
        raise SystemExit("ckd-cds did not start on 127.0.0.1:8080") from None
    fhir = json.loads(STATE_FILE.read_text())
    bundles = demo_bundles()
    example_slug = "04-diabetic-ckd-no-sglt2i"
    example = STATE_FILE.parent / f"example-{example_slug}.json"
    example.write_text(json.dumps(hook_call(bundles[example_slug]["entry"][0]["resource"]["id"], fhir), indent=1))
    example.chmod(0o600)  # holds the local test FHIR server's token
    print("# What the EHR sends (no prefetch: the service reads the FHIR server with the token it is given):")
    print(f"curl -s -X POST {SERVICE}/cds-services/ckd-patient-view -H 'Content-Type: application/json' \\")
    print(f"     -d @{example.relative_to(STATE_FILE.parent.parent)}")
    for slug, bundle in bundles.items():
        situation = bundle["meta"]["tag"][0]["display"]
        show(slug, situation, hook_call(bundle["entry"][0]["resource"]["id"], fhir))
    orders = demo_orders()
    order_slug = "25-af-apixaban-two-criteria"
    example = STATE_FILE.parent / f"example-order-sign-{order_slug}.json"
    pid = bundles[order_slug]["entry"][0]["resource"]["id"]
    example.write_text(json.dumps(order_call(pid, orders[order_slug], fhir), indent=1))
    example.chmod(0o600)
    print("\n# Kidney dose check when an order is signed (order-sign; the draft is in context.draftOrders):")
    print(f"curl -s -X POST {SERVICE}/cds-services/ckd-renal-dosing-sign -H 'Content-Type: application/json' \\")
    print(f"     -d @{example.relative_to(STATE_FILE.parent.parent)}")
    for slug, drafts in orders.items():
        situation = bundles[slug]["meta"]["tag"][0]["display"]
        body = order_call(bundles[slug]["entry"][0]["resource"]["id"], drafts, fhir)
        show(slug, f"order-sign: {situation}", body, "ckd-renal-dosing-sign")
    print_trend_urls(bundles[example_slug]["entry"][0]["resource"]["id"])
    return 0


def print_trend_urls(patient_id: str) -> None:
    """Issue #23: the kidney trend view through the test EHR (service.fhir.testehr on :8092)."""
    iss = f"http://127.0.0.1:{DEMO_PORT}/fhir"
    print("\n# The kidney trend view (SMART on FHIR), through the local test EHR:")
    print(f"  standalone launch (pick a patient):  {SERVICE}/trend/launch?iss={urllib.parse.quote(iss, safe='')}")
    print(f"  EHR launch for the example patient:  http://127.0.0.1:{DEMO_PORT}/ehr/launch?patient={patient_id}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
