"""A SMART launch of the kidney trend view for the tests: the real FHIR test server with demo patients, the test
EHR's authorization server (authlib) in front of it, and ckd-cds on a port of its own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from service.demo import demo_bundles
from service.fhir.loader import load_bundle
from service.fhir.testehr import Ehr, Options, running
from service.fhir.testserver import RunningServer
from service.web.settings import SmartClient, SmartSettings
from service.web.urls import parse_fhir_url
from tests.conftest import make_app

CLIENT_ID = "ckd-cds-test"


@dataclass
class Stack:
    ehr: Ehr
    app: Flask
    base: str  # ckd-cds
    patients: dict[str, str]  # demo slug -> patient id

    @property
    def launch_url(self) -> str:
        return f"{self.base}/trend/launch"


def reset(options: Options) -> None:
    """The test EHR behaving again, for the next test."""
    defaults = Options()
    for f in fields(Options):
        setattr(options, f.name, getattr(defaults, f.name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def patient_id(bundle: dict[str, Any]) -> str:
    return str(next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))


@contextmanager
def smart_stack(fhir: RunningServer, tmp_path: Path, slugs: tuple[str, ...], **settings: Any) -> Iterator[Stack]:
    bundles = demo_bundles()
    patients = {}
    for slug in slugs:
        load_bundle(fhir.base_url, fhir.token, bundles[slug])
        patients[slug] = patient_id(bundles[slug])
    ehr = Ehr(base_url="", fhir_base=fhir.base_url, fhir_token=fhir.token, options=Options(),
              patients=list(patients.values()))  # fmt: skip
    with running(ehr):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ehr.register(CLIENT_ID, f"{base}/trend/callback")
        client = SmartClient(name="test-ehr", client_id=CLIENT_ID, redirect_uri=f"{base}/trend/callback",
                             iss=(parse_fhir_url(ehr.iss),))  # fmt: skip
        app = make_app(tmp_path, {"fhir": {"budget_s": 5.0}}, smart=SmartSettings(clients=(client,)), **settings)
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Stack(ehr=ehr, app=app, base=base, patients=patients)
        finally:
            server.shutdown()
