"""SMART 2.0 discovery against a real HTTP server (issue #23): an EHR whose `.well-known/smart-configuration` lacks
S256, is not JSON, is too large, names http endpoints in production, or does not answer, is refused with a sentence;
a good one is read once and kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from flask import Flask, Response
from requests.adapters import HTTPAdapter
from werkzeug.serving import make_server

from service.trend.smart import DISCOVERY_BYTES, LaunchRefused, discover, session
from service.web.urls import parse_fhir_url

GOOD = {"authorization_endpoint": "https://ehr.example.org/authorize", "token_endpoint": "https://ehr.example.org/token",
        "code_challenge_methods_supported": ["S256"]}  # fmt: skip
DOCUMENTS: dict[str, bytes] = {
    "good": json.dumps(GOOD).encode(),
    "plain-only": json.dumps({**GOOD, "code_challenge_methods_supported": ["plain"]}).encode(),
    "no-methods": json.dumps({k: v for k, v in GOOD.items() if k != "code_challenge_methods_supported"}).encode(),
    "not-json": b"<html>sign in</html>",
    "array": b"[]",
    "http-endpoints": json.dumps({**GOOD, "token_endpoint": "http://ehr.example.org/token"}).encode(),
    "no-token-endpoint": json.dumps({k: v for k, v in GOOD.items() if k != "token_endpoint"}).encode(),
    "huge": json.dumps({**GOOD, "padding": "x" * (DISCOVERY_BYTES + 10)}).encode(),
}


@pytest.fixture(scope="module")
def ehr() -> Iterator[tuple[str, dict[str, int]]]:
    app = Flask(__name__)
    hits: dict[str, int] = {}

    @app.get("/<name>/fhir/.well-known/smart-configuration")
    def configuration(name: str) -> Response:
        hits[name] = hits.get(name, 0) + 1
        if name not in DOCUMENTS:
            return Response("{}", status=404)
        return Response(DOCUMENTS[name], mimetype="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def run(base: str, name: str, production: bool = False) -> object:
    return discover(parse_fhir_url(f"{base}/{name}/fhir"), session(HTTPAdapter(), 5.0), production)


def test_a_good_configuration_is_read_once(ehr: tuple[str, dict[str, int]]) -> None:
    base, hits = ehr
    first = run(base, "good")
    assert first == run(base, "good")
    assert first.token == GOOD["token_endpoint"]  # type: ignore[attr-defined]
    assert hits["good"] == 1  # kept: a burst of launches is not a burst of requests to the EHR


@pytest.mark.parametrize(
    ("name", "reason"),
    [("plain-only", "no-pkce"), ("no-methods", "no-pkce"), ("not-json", "discovery"), ("array", "discovery"),
     ("no-token-endpoint", "discovery"), ("huge", "discovery"), ("missing", "discovery")],
)  # fmt: skip
def test_an_unusable_configuration_is_refused(ehr: tuple[str, dict[str, int]], name: str, reason: str) -> None:
    base, hits = ehr
    with pytest.raises(LaunchRefused) as refused:
        run(base, name)
    assert refused.value.reason == reason
    assert refused.value.status == 502
    with pytest.raises(LaunchRefused):
        run(base, name)
    assert hits[name] == 2  # a failure is not kept


def test_production_wants_https_endpoints(ehr: tuple[str, dict[str, int]]) -> None:
    base, _ = ehr
    assert run(base, "http-endpoints", production=False) is not None
    with pytest.raises(LaunchRefused, match="https"):
        run(base, "http-endpoints", production=True)


def test_an_ehr_that_does_not_answer_is_refused() -> None:
    with pytest.raises(LaunchRefused) as refused:
        run("http://127.0.0.1:9", "good")
    assert refused.value.reason == "discovery"
