"""A test EHR for the kidney trend view (issue #23): a SMART App Launch 2.0 authorization server built on `authlib`
in front of the local FHIR test server (sekmet-fhir). Tests and `make demo` only; never part of the product.

    GET  /fhir/.well-known/smart-configuration   endpoints, PKCE S256, capabilities
    GET  /ehr/launch?patient=ID                   what an EHR does when a clinician opens the app: a launch code,
                                                  then a redirect to the app with `iss` and `launch`
    GET  /auth/authorize                          authlib's authorization code grant, PKCE required (S256);
                                                  standalone launches pick a patient on a small page
    POST /auth/token                              the code exchange; the response names the patient (SMART)
    GET  /fhir/...                                the FHIR API: the bearer token checked (unknown, expired,
                                                  scope, patient compartment), then passed to sekmet-fhir

`Options` can make it misbehave, for the view's refusal tests: a scope never granted, a token for another patient,
a FHIR server that answers with another patient's data, tokens that are already expired.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, abort, redirect, request
from markupsafe import escape
from werkzeug.serving import make_server

SCOPES_SUPPORTED = ("launch", "launch/patient", "openid", "fhirUser", "patient/Patient.r", "patient/Observation.rs",
                    "patient/Condition.rs", "patient/MedicationRequest.rs", "patient/Procedure.rs")  # fmt: skip
RESOURCE_SCOPE = {"Patient": "patient/Patient.r", "Observation": "patient/Observation.rs",
                  "Condition": "patient/Condition.rs", "MedicationRequest": "patient/MedicationRequest.rs",
                  "Procedure": "patient/Procedure.rs"}  # fmt: skip


@dataclass(slots=True)
class Options:
    """How the test EHR behaves; tests change these between launches."""

    token_lifetime: int = 300
    drop_scope: str | None = None  # never granted, whatever the app asks
    token_patient: str | None = None  # the token response names this patient instead of the launch's
    serve_patient: str | None = None  # the FHIR API answers with this patient's data instead of the token's
    expired: bool = False  # tokens are refused by the FHIR API as expired once issued


@dataclass(slots=True)
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    redirect_uri: str
    options: Options

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        wanted = scope.split() if scope else []
        return " ".join(s for s in wanted if s in SCOPES_SUPPORTED and s != self.options.drop_scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # a public client

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass(slots=True)
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    patient: str
    app_context: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    issued: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(slots=True)
class Token(TokenMixin):  # type: ignore[misc]
    patient: str
    scope: str
    expires_at: float

    def check_client(self, client: Any) -> bool:
        return True

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False


@dataclass(slots=True)
class User:
    patient: str
    app_context: str | None


@dataclass(slots=True)
class Ehr:
    base_url: str  # this server, e.g. http://127.0.0.1:8192
    fhir_base: str  # sekmet-fhir behind it
    fhir_token: str
    options: Options = field(default_factory=Options)
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    launches: dict[str, User] = field(default_factory=dict)
    patients: list[str] = field(default_factory=list)  # offered by the standalone picker

    @property
    def iss(self) -> str:
        return f"{self.base_url}/fhir"

    def register(self, client_id: str, redirect_uri: str) -> None:
        self.clients[client_id] = Client(client_id, redirect_uri, self.options)

    def launch_url(self, app_launch_url: str, patient: str, app_context: str | None = None) -> str:
        """EHR launch: what the EHR opens when a clinician starts the app (or follows a card's smart link)."""
        code = secrets.token_urlsafe(16)
        self.launches[code] = User(patient=patient, app_context=app_context)
        query = urllib.parse.urlencode({"iss": self.iss, "launch": code})
        return f"{app_launch_url}?{query}"


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]
    ehr: ClassVar[Ehr]

    def save_authorization_code(self, code: str, req: Any) -> None:
        data = req.payload.data
        user: User = req.user
        self.ehr.codes[code] = Code(
            code=code, client_id=req.client.client_id, redirect_uri=req.payload.redirect_uri, scope=req.scope or "",
            patient=user.patient, app_context=user.app_context, code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )  # fmt: skip

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.ehr.codes.get(code)
        if found is None or found.client_id != client.client_id or time.time() - found.issued > 60:
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.ehr.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> User:
        return User(patient=authorization_code.patient, app_context=authorization_code.app_context)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        status, token, headers = super().create_token_response()
        user: User = self.request.user
        patient = self.ehr.options.token_patient or user.patient
        token["patient"] = patient  # SMART launch context
        if user.app_context is not None:
            token["appContext"] = user.app_context
        lifetime = self.ehr.options.token_lifetime
        expires_at = time.time() + (-1 if self.ehr.options.expired else lifetime)
        self.ehr.tokens[token["access_token"]] = Token(patient=patient, scope=token.get("scope", ""),
                                                       expires_at=expires_at)  # fmt: skip
        return status, token, headers


def create_ehr_app(ehr: Ehr) -> Flask:
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # loopback http, tests and the demo only
    app = Flask(__name__)
    server = AuthorizationServer(app, query_client=ehr.clients.get, save_token=lambda token, req: None)
    server.register_token_generator("default", BearerTokenGenerator(
        access_token_generator=lambda **_: secrets.token_urlsafe(32),
        expires_generator=lambda client, grant_type: ehr.options.token_lifetime,
    ))  # fmt: skip
    grant = type("EhrCodeGrant", (CodeGrant,), {"ehr": ehr})
    server.register_grant(grant, [CodeChallenge(required=True)])

    @app.get("/fhir/.well-known/smart-configuration")
    def smart_configuration() -> Response:
        return Response(json.dumps({
            "issuer": ehr.base_url,
            "authorization_endpoint": f"{ehr.base_url}/auth/authorize",
            "token_endpoint": f"{ehr.base_url}/auth/token",
            "token_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["authorization_code"],
            "scopes_supported": list(SCOPES_SUPPORTED),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient",
                             "context-standalone-patient", "permission-patient", "permission-v2"],
        }), mimetype="application/json")  # fmt: skip

    @app.get("/ehr/launch")
    def ehr_launch() -> Any:
        client = next(iter(ehr.clients.values()), None)
        patient = request.args.get("patient", "")
        if client is None or not patient:
            abort(400)
        app_url = client.redirect_uri.rsplit("/", 1)[0] + "/launch"
        return redirect(ehr.launch_url(app_url, patient, request.args.get("appContext")))

    @app.route("/auth/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        launch = request.values.get("launch")
        user = ehr.launches.pop(launch, None) if launch else None
        if request.values.get("deny"):
            return server.create_authorization_response(grant_user=None, grant=server.get_consent_grant())
        if user is None and request.values.get("picked") in ehr.patients:
            user = User(patient=request.values["picked"], app_context=None)
        if user is None and launch is None:
            return picker()
        if user is None:
            abort(400)  # an unknown or used launch code
        grant_ = server.get_consent_grant(end_user=user)
        return server.create_authorization_response(grant_user=user, grant=grant_)

    def picker() -> Response:
        """Standalone launch: the signed-in user picks a patient (launch/patient)."""
        rows = []
        for pid in ehr.patients:
            query = urllib.parse.urlencode([*request.args.items(), ("picked", pid)])
            rows.append(f'<li><a href="/auth/authorize?{escape(query)}" id="pick-{escape(pid)}">{escape(pid)}</a></li>')
        deny = urllib.parse.urlencode([*request.args.items(), ("deny", "1")])
        body = (f"<!doctype html><title>Test EHR: choose a patient</title><h1>Choose a patient</h1><ul>{''.join(rows)}"
                f'</ul><p><a href="/auth/authorize?{escape(deny)}" id="deny">Deny access</a></p>')  # fmt: skip
        return Response(body, mimetype="text/html")

    @app.post("/auth/token")
    def issue_token() -> Any:
        return server.create_token_response()

    @app.get("/fhir/<path:path>")
    def fhir(path: str) -> Response:
        return proxy(ehr, path)

    return app


def _denied(status: int, why: str) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "security", "diagnostics": why}],
    }
    return Response(json.dumps(body), status=status, mimetype="application/fhir+json")


def proxy(ehr: Ehr, path: str) -> Response:
    """The FHIR API behind the token: known, unexpired, with the resource's scope, inside the token's patient."""
    auth = request.headers.get("Authorization", "")
    token = ehr.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
    if token is None or token.is_expired():
        return _denied(401, "token unknown or expired")
    resource = path.split("/", 1)[0]
    scope = RESOURCE_SCOPE.get(resource)
    if scope is None or scope not in token.scope.split():
        return _denied(403, f"scope {scope or resource} not granted")
    query = request.args.to_dict(flat=False)
    asked = path.split("/")[1] if resource == "Patient" else (query.get("patient") or [""])[0]
    if asked != token.patient:
        return _denied(403, "outside the token's patient compartment")
    served = ehr.options.serve_patient
    if served is not None:  # misbehaving on purpose: another patient's data
        path = f"Patient/{served}" if resource == "Patient" else path
        query["patient"] = [served]
    headers = {"Authorization": f"Bearer {ehr.fhir_token}", "Accept": "application/fhir+json"}
    upstream = requests.get(f"{ehr.fhir_base}/{path}", params=query, timeout=10, headers=headers)
    body = upstream.content.replace(ehr.fhir_base.encode(), ehr.iss.encode())  # next links point here
    return Response(body, status=upstream.status_code, mimetype="application/fhir+json")


@contextmanager
def running(ehr: Ehr, port: int = 0) -> Iterator[Ehr]:
    """The test EHR on 127.0.0.1 in a thread; `ehr.base_url` is set to where it listens."""
    server = make_server("127.0.0.1", port, create_ehr_app(ehr), threaded=True)
    ehr.base_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ehr
    finally:
        server.shutdown()


DEMO_PORT = 8092


def main(argv: list[str] | None = None) -> int:
    """`make demo`: the test EHR on 127.0.0.1:8092 in front of the running FHIR test server (var/fhir-server.json),
    its standalone picker offering the demo patients."""
    from service.demo import demo_bundles
    from service.fhir.testserver import STATE_FILE

    parser = argparse.ArgumentParser(prog="python -m service.fhir.testehr")
    parser.add_argument("--port", type=int, default=DEMO_PORT)
    parser.add_argument("--client-id", default="ckd-cds-demo")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:8080/trend/callback")
    args = parser.parse_args(argv)
    fhir = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    patients = [b["entry"][0]["resource"]["id"] for b in demo_bundles().values()]
    ehr = Ehr(base_url=f"http://127.0.0.1:{args.port}", fhir_base=fhir["base_url"], fhir_token=fhir["token"],
              patients=patients)  # fmt: skip
    ehr.register(args.client_id, args.redirect_uri)
    make_server("127.0.0.1", args.port, create_ehr_app(ehr), threaded=True).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
