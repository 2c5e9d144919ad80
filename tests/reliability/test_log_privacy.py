"""A full session, and no bearer token, patient name or raw patient id appears in any log line (issue #6, D-09).

The session runs against the real service under gunicorn (its access and error logs captured) and the real FHIR
server: discovery, prefetch and fallback hook calls, a refused token, feedback, admin sign-in and a config change.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import pytest
import requests

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testserver import RunningServer
from tests import live
from tests.web.test_hooks import call, prefetch_for, resources

pytestmark = pytest.mark.fhir
PORT = 18771
TOKEN = "admin-token-not-for-logs"


def test_full_session_leaves_no_secret_or_identifier_in_logs(tmp_path: Path, fhir_server: RunningServer) -> None:
    bundle = demo_bundles(date.today())["03-g3a-a2-not-coded"]
    load_bundle(fhir_server.base_url, fhir_server.token, bundle)
    patient = resources(bundle)[0]
    pid = patient["id"]
    names = [patient["name"][0]["family"], *patient["name"][0]["given"]]
    sentinel = "SENTINEL-BEARER-4c1d"
    env = {"CKD_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "CKD_CDS_ADMIN_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest(),
           "GUNICORN_LOGLEVEL": "debug"}  # fmt: skip
    with live.served(PORT, env) as base:
        hook = f"{base}/cds-services/ckd-patient-view"
        auth = {"token_type": "Bearer", "expires_in": 60, "scope": "patient/*.read", "subject": "u"}
        assert requests.get(f"{base}/cds-services", timeout=5).ok
        assert requests.post(hook, json=call(pid, prefetch=prefetch_for(bundle)), timeout=10).ok
        good = call(pid, fhirServer=fhir_server.base_url, fhirAuthorization={**auth, "access_token": fhir_server.token})
        cards = requests.post(hook, json=good, timeout=10).json()["cards"]
        bad = call(pid, fhirServer=fhir_server.base_url, fhirAuthorization={**auth, "access_token": sentinel})
        assert requests.post(hook, json=bad, timeout=10).status_code == 412
        requests.post(hook, data="{broken", headers={"Content-Type": "application/json"}, timeout=5)
        feedback = {"feedback": [{"card": cards[0]["uuid"], "outcome": "overridden",
                                  "outcomeTimestamp": "2026-01-01T00:00:00Z",
                                  "overrideReason": {"userComment": f"patient {names[0]} declined"}}]}  # fmt: skip
        assert requests.post(f"{hook}/feedback", json=feedback, timeout=5).ok
        admin = {"Authorization": f"Bearer {TOKEN}"}
        current = requests.get(f"{base}/admin/api/config", headers=admin, timeout=5).json()
        body = {"document": {"statin": {"min_age": 45}}, "base_version": current["version"], "comment": "log test"}
        assert requests.put(f"{base}/admin/api/config", json=body, headers=admin, timeout=5).ok
        requests.get(f"{base}/admin/api/config", headers={"Authorization": f"Bearer {sentinel}"}, timeout=5)
    log = (Path(live.ROOT) / "test-artifacts" / f"server-{PORT}.log").read_text()
    assert '"status":200' in log  # the access log was captured
    for secret in (sentinel, fhir_server.token, TOKEN, pid, *names):
        assert not re.search(re.escape(secret), log), f"found in the service log: {secret[:4]}…"
