"""The SMART App Launch 2.0 client of the kidney trend view (issue #23), on `fhirclient`.

`fhirclient` builds the authorization request (with `state` and PKCE S256) and exchanges the code (with the
verifier). What it lacks for SMART 2.0 is discovery from `{iss}/.well-known/smart-configuration` (it reads the
SMART 1.0 CapabilityStatement extensions instead): `discover` reads that document, under a size cap and timeouts,
and refuses a server that does not declare S256. Its endpoints are handed to `fhirclient` as saved state.

The access token lives only in the `Grant` returned by `finish`, for the one request that reads the record; it is
never saved, logged or put in an exception message. The saved launch state holds the OAuth `state` and the PKCE
verifier, kept server-side for minutes (service.store smart_launches) and bound to the browser's launch cookie.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from fhirclient import client as fhir_client
from requests.adapters import HTTPAdapter

from service.web.acquire import BudgetedSession, FetchSettings, ResponseTooLarge
from service.web.settings import SmartClient
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

# The data the view shows and nothing wider (SMART 2.0 scope syntax: r = read, s = search). Procedure: the S13
# dialysis and transplant reads; Observation covers the laboratory results and blood pressure.
DATA_SCOPES = (
    "patient/Patient.r",
    "patient/Observation.rs",
    "patient/Condition.rs",
    "patient/MedicationRequest.rs",
    "patient/Procedure.rs",
)
DISCOVERY_BYTES = 64 * 1024
LAUNCH_TTL_S = 600  # from the redirect to the callback: a sign-in that takes longer starts again
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id datatype


class LaunchRefused(Exception):
    """The launch cannot go on; `reason` is a short category for the audit, `message` the sentence shown."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorize: str
    token: str


@dataclass(frozen=True, slots=True)
class Grant:
    """What the token response gave: used within one request, then dropped."""

    access_token: str = field(repr=False)  # never in a log line or an error report
    patient: str
    scopes: frozenset[str]
    expires_in: int | None
    app_context: str | None


def session(adapter: HTTPAdapter, timeout_s: float) -> requests.Session:
    """No redirects followed, a byte cap and a deadline on every call (the same session type as the hook fallback)."""
    fetch = FetchSettings(connect_timeout=min(2.0, timeout_s), read_timeout=timeout_s, budget_s=timeout_s,
                          max_response_bytes=DISCOVERY_BYTES)  # fmt: skip
    return BudgetedSession(adapter, time.monotonic() + timeout_s, fetch)


def _endpoint(value: Any, production: bool) -> str:
    if not isinstance(value, str):
        raise LaunchRefused("discovery", "The EHR's SMART configuration has no usable endpoints.", 502)
    try:
        url = parse_fhir_url(value, allow_query=True)
    except UnsafeUrl:
        raise LaunchRefused("discovery", "The EHR's SMART configuration has an unusable endpoint.", 502) from None
    if production and url.scheme != "https":
        raise LaunchRefused("discovery", "The EHR's SMART endpoints must use https.", 502)
    return value


_DISCOVERED: dict[tuple[str, bool], tuple[float, Endpoints]] = {}
_DISCOVERED_LOCK = threading.Lock()
DISCOVERY_TTL_S = 300.0  # an EHR's endpoints, kept per worker: a burst of launches is not a burst of requests to it


def discover(iss: FhirUrl, http: requests.Session, production: bool) -> Endpoints:
    """SMART App Launch 2.0 §2.0.7: `{iss}/.well-known/smart-configuration`, which must offer PKCE S256; kept for
    DISCOVERY_TTL_S once read (a failure is not kept)."""
    key = (iss.base, production)
    with _DISCOVERED_LOCK:
        cached = _DISCOVERED.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    endpoints = _discover(iss, http, production)
    with _DISCOVERED_LOCK:
        _DISCOVERED[key] = (time.monotonic() + DISCOVERY_TTL_S, endpoints)
    return endpoints


def _discover(iss: FhirUrl, http: requests.Session, production: bool) -> Endpoints:
    try:
        response = http.get(f"{iss.base}/.well-known/smart-configuration", headers={"Accept": "application/json"})
        response.raise_for_status()
        document = json.loads(response.content)
    except (requests.RequestException, ResponseTooLarge, ValueError):
        raise LaunchRefused("discovery", "The EHR's SMART configuration could not be read.", 502) from None
    if not isinstance(document, dict):
        raise LaunchRefused("discovery", "The EHR's SMART configuration is not a JSON object.", 502)
    methods = document.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise LaunchRefused("no-pkce", "The EHR does not offer PKCE with S256, which SMART 2.0 requires.", 502)
    return Endpoints(authorize=_endpoint(document.get("authorization_endpoint"), production),
                     token=_endpoint(document.get("token_endpoint"), production))  # fmt: skip


@dataclass(frozen=True, slots=True)
class PendingLaunch:
    authorize_url: str  # where the browser goes next
    oauth_state: str  # the `state` the callback must bring back
    saved: str = field(repr=False)  # JSON kept server-side until the callback: endpoints, state, PKCE verifier


def begin(registration: SmartClient, iss: FhirUrl, endpoints: Endpoints, launch: str | None) -> PendingLaunch:
    """The authorization request (fhirclient adds `state`, PKCE S256, `aud`, and `launch` for an EHR launch or
    `launch/patient` for a standalone one) and what to keep until the callback."""
    saved: dict[str, Any] = {}
    settings = {"app_id": registration.client_id, "api_base": iss.base, "redirect_uri": registration.redirect_uri,
                "scope": " ".join(DATA_SCOPES), "launch_token": launch}  # fmt: skip
    client = fhir_client.FHIRClient(settings=settings, save_func=saved.update)
    client.server.from_state({"base_uri": client.server.base_uri, "auth_type": "oauth2", "auth": {
        "app_id": registration.client_id, "aud": iss.base, "redirect_uri": registration.redirect_uri,
        "authorize_uri": endpoints.authorize, "token_uri": endpoints.token}})  # fmt: skip
    url = str(client.authorize_url)
    state = client.state
    state["registration"] = registration.name
    return PendingLaunch(authorize_url=url, oauth_state=str(client.server.auth.auth_state), saved=json.dumps(state))


def finish(saved: str, callback_url: str, http: requests.Session) -> tuple[Grant, str, FhirUrl]:
    """Check the callback against the saved launch (its `state`), exchange the code with the PKCE verifier, and read
    the token response. Returns the grant, the registration name and the FHIR base (`iss`) it is for."""
    try:
        state = json.loads(saved)
        registration = str(state.pop("registration"))
        iss = parse_fhir_url(state["server"]["base_uri"])
        client = fhir_client.FHIRClient(state=state, save_func=lambda _: None)
    except (ValueError, KeyError, TypeError):  # UnsafeUrl is a ValueError
        raise LaunchRefused("bad-state", "This launch cannot be continued; open the view again from the EHR.") from None
    client.server.session = http
    try:
        client.handle_callback(callback_url)
    except requests.HTTPError:
        raise LaunchRefused("token", "The EHR refused to exchange the sign-in code (used, expired, or not issued to "
                            "this app). Open the view again.", 502) from None  # fmt: skip
    except requests.RequestException:
        raise LaunchRefused("token", "The EHR's token endpoint did not answer; try again.", 502) from None
    except Exception as exc:  # fhirclient raises bare Exceptions; their text may hold the state or the code
        if "state" in str(exc).lower():
            raise LaunchRefused("bad-state", "The sign-in answer does not match this launch (state).") from None
        raise LaunchRefused("token", "The EHR did not give an access token.", 502) from None
    auth = client.server.auth
    context = client.launch_context or {}
    token = getattr(auth, "access_token", None)
    if not isinstance(token, str) or not token:
        raise LaunchRefused("token", "The EHR did not give an access token.", 502)
    token_type = context.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise LaunchRefused("token", "The EHR's token is not a bearer token.", 502)
    patient = context.get("patient")
    if not isinstance(patient, str) or not PATIENT_ID.match(patient):
        raise LaunchRefused("no-patient", "The EHR did not say which patient this launch is for.")
    scope = context.get("scope")
    granted = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    expires_at = getattr(auth, "expires_at", None)
    expires_in = None
    if expires_at is not None:
        expires_in = int((expires_at - datetime.now()).total_seconds())  # fhirclient keeps naive local time
    app_context = context.get("appContext")
    grant = Grant(access_token=token, patient=patient, scopes=granted, expires_in=expires_in,
                  app_context=app_context if isinstance(app_context, str) else None)  # fmt: skip
    return grant, registration, iss


def covers(granted: str, wanted: str) -> bool:
    """A granted SMART scope allows a wanted one (`context/Type.perms`): the same context, the same type or `*`, and
    SMART 1.0 `read` (read and search) or SMART 2.0 letters that include the wanted ones (a `?query` suffix is set
    aside)."""
    granted_resource, _, granted_perms = granted.partition(".")
    wanted_resource, _, wanted_perms = wanted.partition(".")
    granted_context, _, granted_type = granted_resource.partition("/")
    wanted_context, _, wanted_type = wanted_resource.partition("/")
    if granted_context != wanted_context or granted_type not in (wanted_type, "*"):
        return False
    perms = granted_perms.split("?")[0]
    return perms == "read" or set(wanted_perms) <= set(perms)


def missing_scopes(granted: frozenset[str]) -> list[str]:
    """The data scopes the EHR did not grant."""
    return [scope for scope in DATA_SCOPES if not any(covers(g, scope) for g in granted)]
