"""Print an example patient-view call to the running service and the cards it returns (used by `make demo`)."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import requests

from service.demo import demo_bundles
from service.fhir.testserver import STATE_FILE, wait_ready

SERVICE = "http://127.0.0.1:8080"


def main() -> int:
    try:
        wait_ready(f"{SERVICE}/healthz", timeout=30)
    except RuntimeError:
        raise SystemExit("ckd-cds did not start on 127.0.0.1:8080") from None
    fhir = json.loads(STATE_FILE.read_text())
    for slug in ("04-diabetic-ckd-no-sglt2i", "07-aki-spike"):
        patient_id = demo_bundles()[slug]["entry"][0]["resource"]["id"]
        body: dict[str, Any] = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": patient_id, "userId": "Practitioner/demo"},
            "fhirServer": fhir["base_url"],
            "fhirAuthorization": {"access_token": "(set below)", "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "demo"},
        }  # fmt: skip
        body["fhirAuthorization"] = {**body["fhirAuthorization"], "access_token": fhir["token"]}
        example = STATE_FILE.parent / f"example-{slug}.json"
        example.write_text(json.dumps(body, indent=1))
        example.chmod(0o600)  # holds the local test FHIR server's token
        print(f"\n# Demo patient {slug}: what the EHR sends (no prefetch: the service reads the FHIR server)")
        print(f"curl -s -X POST {SERVICE}/cds-services/ckd-patient-view -H 'Content-Type: application/json' \\")
        print(f"     -d @{example.relative_to(STATE_FILE.parent.parent)}")
        response = requests.post(f"{SERVICE}/cds-services/ckd-patient-view", json=body, timeout=10)
        print(f"# -> HTTP {response.status_code}, cards:")
        for card in response.json().get("cards", []):
            print(f"  [{card['indicator']:7}] {card['summary']}")
            for suggestion in card.get("suggestions", []):
                print(f"             suggestion: {suggestion['label']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
