"""Load FHIR Bundles into a FHIR server as transactions that keep the resource ids (PUT {type}/{id}).

Synthea bundles use `urn:uuid:` fullUrls and POST; references are rewritten to `{type}/{id}` so that searches by
`patient=` work on any server. Used by the test fixture, the demo and the FHIR server script.
"""

from __future__ import annotations

import json
from typing import Any

import requests

Resource = dict[str, Any]
KEEP = frozenset({"Patient", "Observation", "Condition", "MedicationRequest", "Medication"})


def as_put_transaction(bundle: Resource, keep: frozenset[str] = KEEP) -> Resource:
    """A transaction Bundle of PUTs for the resources the service reads, with urn:uuid references resolved."""
    entries = [e for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
    targets = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries if "fullUrl" in e
    }
    text = json.dumps([e["resource"] for e in entries if e["resource"]["resourceType"] in keep])
    for urn, ref in targets.items():
        text = text.replace(f'"{urn}"', f'"{ref}"')
    resources = json.loads(text)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }


def load_bundle(base_url: str, token: str | None, bundle: Resource, timeout: float = 60.0) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = requests.post(base_url.rstrip("/"), json=as_put_transaction(bundle), headers=headers, timeout=timeout)
    response.raise_for_status()
