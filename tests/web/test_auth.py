"""JWT verification with real keys: accept, and each D-07 reject case answers 401 with one fixed body."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service.config import ConfigError
from service.web import create_app
from service.web.settings import AuthSettings, Issuer, Settings, SmartClient, SmartSettings, check_safe
from service.web.urls import parse_fhir_url

ISS = "https://ehr.example.org/fhir"
BASE = "https://cds.example.org"
URL = "/cds-services/ckd-patient-view"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC = ec.generate_private_key(ec.SECP384R1())


def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = ECAlgorithm(ECAlgorithm.SHA384) if alg.startswith("ES") else RSAAlgorithm(RSAAlgorithm.SHA384)
    data: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    return {**data, "kid": kid, "use": "sig"}


JWKS = {"keys": [jwk(EC_KEY, "ec-1", "ES384"), jwk(RSA_KEY, "rsa-1", "RS384")]}


def token(
    *, key: Any = EC_KEY, alg: str = "ES384", kid: str | None = "ec-1", headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:  # fmt: skip
    now = int(time.time())
    body = {"iss": ISS, "aud": BASE + URL, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), **claims}
    body = {k: v for k, v in body.items() if v is not None}
    head = {"typ": "JWT", **({"kid": kid} if kid else {}), **(headers or {})}
    return jwt.encode(body, key, algorithm=alg, headers=head)


def make_app(tmp_path: Path, issuer: Issuer, **settings: Any) -> Flask:
    auth = AuthSettings(mode="required", issuers=(issuer,))
    return create_app(
        Settings(auth=auth, public_base_urls=(BASE,), database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **settings)
    )


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return make_app(tmp_path, Issuer(iss=ISS, jwks=JWKS)).test_client()


BODY = {"hook": "patient-view", "hookInstance": "h-1", "context": {"patientId": "p1"}}


def post(client: FlaskClient, jwt_token: str | None, path: str = URL) -> Any:
    headers = {"Authorization": f"Bearer {jwt_token}"} if jwt_token else {}
    return client.post(path, json=BODY, headers=headers)


@pytest.mark.parametrize(("key", "alg", "kid"), [(EC_KEY, "ES384", "ec-1"), (RSA_KEY, "RS384", "rsa-1")])
def test_valid_token_passes_authentication(client: FlaskClient, key: Any, alg: str, kid: str) -> None:
    response = post(client, token(key=key, alg=alg, kid=kid))
    assert response.status_code == 412  # authenticated; no data in this request


def hs256_with_public_key() -> str:
    # Key confusion: sign HS256 with the public key bytes as the HMAC secret.
    now = int(time.time())
    claims = {"iss": ISS, "aud": BASE + URL, "exp": now + 300, "iat": now, "jti": "x"}
    header = {"alg": "HS256", "typ": "JWT", "kid": "ec-1"}
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    secret = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{signing}.{b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


def alg_none() -> str:
    return jwt.encode({"iss": ISS, "aud": BASE + URL, "exp": int(time.time()) + 60, "iat": int(time.time()),
                       "jti": "n"}, None, algorithm="none", headers={"kid": "ec-1"})  # fmt: skip


REJECTS = {
    "missing": lambda: None,
    "malformed": lambda: "not.a.jwt",
    "none": alg_none,
    "hs256-key-confusion": hs256_with_public_key,
    "wrong-aud": lambda: token(aud=BASE + "/cds-services/other"),
    "expired": lambda: token(exp=int(time.time()) - 3600, iat=int(time.time()) - 3700),
    "future-iat": lambda: token(iat=int(time.time()) + 600, exp=int(time.time()) + 900),
    "too-long-lived": lambda: token(exp=int(time.time()) + 7200),
    "unknown-kid": lambda: token(kid="nope"),
    "no-kid": lambda: token(kid=None),
    "unknown-issuer": lambda: token(iss="https://evil.example.org"),
    "wrong-signature": lambda: token(key=OTHER_EC),
    "no-jti": lambda: token(jti=None),
    "es256-on-p384-key": lambda: token(alg="ES256", key=ec.generate_private_key(ec.SECP256R1())),
}


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_each_reject_case_is_401_with_one_fixed_body(client: FlaskClient, case: str) -> None:
    response = post(client, REJECTS[case]())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": "authentication required"}],
    }


def test_replayed_jti_is_rejected(client: FlaskClient) -> None:
    once = token()
    assert post(client, once).status_code == 412
    assert post(client, once).status_code == 401


def test_replay_store_is_shared_by_two_app_instances(tmp_path: Path) -> None:
    # Two "workers" on one database: a jti seen by one is refused by the other.
    first = make_app(tmp_path, Issuer(iss=ISS, jwks=JWKS)).test_client()
    second = make_app(tmp_path, Issuer(iss=ISS, jwks=JWKS)).test_client()
    shared = token()
    assert post(first, shared).status_code == 412
    assert post(second, shared).status_code == 401


def test_tenant_allowlist(tmp_path: Path) -> None:
    client = make_app(tmp_path, Issuer(iss=ISS, jwks=JWKS, tenants=("t1",))).test_client()
    assert post(client, token(tenant="t1")).status_code == 412
    assert post(client, token(tenant="t2")).status_code == 401


class JwksHandler(BaseHTTPRequestHandler):
    fetched: list[str] = []  # noqa: RUF012 - test recorder

    def do_GET(self) -> None:
        JwksHandler.fetched.append(self.path)
        body = json.dumps(JWKS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_jku_on_the_allowlist_is_fetched_and_others_never(tmp_path: Path, jwks_server: str) -> None:
    JwksHandler.fetched.clear()
    # https prefixes only: an http prefix never matches, so allow the exact URL here.
    good = f"{jwks_server}/keys/jwks.json"
    client = make_app(tmp_path, Issuer(iss=ISS, jku_allowlist=(good,))).test_client()
    assert post(client, token(headers={"jku": good})).status_code == 412
    assert post(client, token(headers={"jku": f"{jwks_server}/evil.json"})).status_code == 401
    assert JwksHandler.fetched == ["/keys/jwks.json"]


def test_fixed_jwks_url(tmp_path: Path, jwks_server: str) -> None:
    client = make_app(tmp_path, Issuer(iss=ISS, jwks_url=f"{jwks_server}/jwk")).test_client()
    assert post(client, token(kid="rsa-1", key=RSA_KEY, alg="RS384")).status_code == 412


def test_unreachable_jwks_fails_closed(tmp_path: Path) -> None:
    client = make_app(tmp_path, Issuer(iss=ISS, jwks_url="http://127.0.0.1:9/jwk")).test_client()
    assert post(client, token()).status_code == 401


def test_discovery_accepts_no_token_but_rejects_a_bad_one(client: FlaskClient) -> None:
    assert client.get("/cds-services").status_code == 200
    bad = client.get("/cds-services", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    good = token(aud=BASE + "/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_feedback_needs_its_own_audience(client: FlaskClient) -> None:
    fb = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2025-01-01T00:00:00Z"}]}
    path = URL + "/feedback"
    wrong = client.post(path, json=fb, headers={"Authorization": f"Bearer {token()}"})
    assert wrong.status_code == 401
    right = client.post(path, json=fb, headers={"Authorization": f"Bearer {token(aud=BASE + path)}"})
    assert right.status_code == 200


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth": AuthSettings(mode="off")}, "auth.mode"),
        ({"auth": AuthSettings(mode="required", issuers=(Issuer(iss="https://sandbox.cds-hooks.org", jwks=JWKS),))},
         "Sandbox"),
        ({"cors_allowed_origins": ("*",)}, "CORS"),
        ({"public_base_urls": ("http://cds.example.org",)}, "https"),
        ({"patient_link_secret": None}, "PATIENT_LINK_SECRET"),  # issue #21 item 8
        ({"smart": SmartSettings(clients=(SmartClient(name="e", client_id="c", redirect_uri="http://a/trend/callback",
                                                      iss=(parse_fhir_url("https://fhir.example.org/r4"),)),))},
         "redirect_uri"),  # issue #23: the code would travel in clear
        ({"smart": SmartSettings(clients=(SmartClient(name="e", client_id="c", redirect_uri=BASE + "/trend/callback",
                                                      iss=(parse_fhir_url("http://fhir.example.org/r4"),)),))},
         "https iss"),  # issue #23: the token would
    ],
)  # fmt: skip
def test_production_refuses_unsafe_settings(changes: dict[str, Any], message: str) -> None:
    safe = {"profile": "production", "auth": AuthSettings(mode="required", issuers=(Issuer(iss=ISS, jwks=JWKS),)),
            "public_base_urls": (BASE,), "cors_allowed_origins": (), "patient_link_secret": "s" * 64}  # fmt: skip
    check_safe(Settings(**safe))
    with pytest.raises(ConfigError, match=message):
        check_safe(Settings(**{**safe, **changes}))


SANDBOX_CONFIG = Path(__file__).resolve().parents[2] / "config" / "service.sandbox.yaml"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"


def test_the_sandbox_example_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # docs/integration.md §3: trust the Sandbox's published ES384 key with a static JWKS, in development only.
    from service.web.settings import SANDBOX_ISSUER

    monkeypatch.setenv("CKD_CDS_SERVICE_CONFIG", str(SANDBOX_CONFIG))
    monkeypatch.setenv("CKD_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings = Settings.from_env()  # development: loads
    (issuer,) = settings.auth.issuers
    assert issuer.iss == SANDBOX_ISSUER
    key = jwt.PyJWKSet.from_dict(issuer.jwks)[SANDBOX_KID]  # the Sandbox's kid resolves to a P-384 key
    assert key.key.curve.name == "secp384r1"
    client = create_app(settings).test_client()
    # A token that claims to be the Sandbox's (its header, iss and kid) but is signed by another key: refused.
    forged = jwt.encode(
        {
            "iss": SANDBOX_ISSUER,
            "aud": "http://localhost:8080" + URL,
            "exp": int(time.time()) + 300,
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
        },
        EC_KEY,
        algorithm="ES384",
        headers={"kid": SANDBOX_KID, "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"},
    )
    assert post(client, forged).status_code == 401
    assert client.get("/cds-services").status_code == 200  # discovery without a token (discovery: optional)
    monkeypatch.setenv("CKD_CDS_PROFILE", "production")
    with pytest.raises(ConfigError, match="Sandbox"):
        Settings.from_env()  # never in production
