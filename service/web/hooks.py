"""CDS Hooks endpoints: discovery and service calls (contract D-01, D-02, D-04, D-05)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from flask import Blueprint, Response, current_app, g, request

from cards.builder import CardRequest, build_cards
from service.clinical.assess import assess
from service.fhir.adapter import record_from_resources
from service.web.acquire import Acquirer, DataUnavailable
from service.web.errors import ApiError
from service.web.registry import SERVICES, CdsService
from service.web.state import AppState

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)


def json_response(body: Any, status: int = 200, *, no_store: bool = False) -> Response:
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response


def state() -> AppState:
    app_state: AppState = current_app.extensions["ckd_cds"]
    return app_state


@bp.get("/cds-services")
def discovery() -> Response:
    return json_response({"services": [s.discovery() for s in SERVICES.values()]})


def lookup(service_id: str) -> CdsService:
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError(404, "unknown service id")
    return service


def require_json_body() -> dict[str, Any]:
    """415 for a non-JSON media type, 400 for malformed JSON or a body that is not an object."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise ApiError(415, "Content-Type must be application/json")
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


def validate_call(body: dict[str, Any], service: CdsService) -> None:
    """The request checks of D-02, in order; the message names the field, never its value."""
    for name in ("hook", "hookInstance"):
        if not isinstance(body.get(name), str):
            raise ApiError(400, f"{name} is required and must be a string", "required")
    if not isinstance(body.get("context"), dict):
        raise ApiError(400, "context is required and must be an object", "required")
    if not isinstance(body["context"].get("patientId"), str) or not body["context"]["patientId"]:
        raise ApiError(400, "context.patientId is required and must be a string", "required")
    if body["hook"] != service.hook:
        raise ApiError(400, f"hook is not registered for service {service.id}")
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            raise ApiError(400, "fhirAuthorization must be an object")
        if not isinstance(body.get("fhirServer"), str):
            raise ApiError(400, "fhirServer is required with fhirAuthorization", "required")
        if not isinstance(auth.get("access_token"), str) or not auth["access_token"]:
            raise ApiError(400, "fhirAuthorization.access_token is required", "required")
        if str(auth.get("token_type", "")).lower() != "bearer":
            raise ApiError(400, "fhirAuthorization.token_type must be Bearer")
    if "fhirServer" in body and not isinstance(body["fhirServer"], str):
        raise ApiError(400, "fhirServer must be a string")
    if "prefetch" in body and not isinstance(body["prefetch"], dict):
        raise ApiError(400, "prefetch must be an object")
    server = body.get("fhirServer")
    if state().settings.production and isinstance(server, str) and not server.startswith("https://"):
        raise ApiError(400, "fhirServer must use https in production")


def fetch_allowed(body: dict[str, Any], st: AppState) -> tuple[str | None, bool]:
    """(token, may fetch): the token only with a matching patient; open servers only in development (D-04)."""
    auth = body.get("fhirAuthorization")
    server = body.get("fhirServer")
    if isinstance(auth, dict):
        patient = auth.get("patient")
        if patient is not None and patient != body["context"]["patientId"]:
            return None, False
        return str(auth["access_token"]), True
    open_ok = not st.settings.production and isinstance(server, str) and server.rstrip("/") in st.open_servers
    return None, open_ok


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    started = g.started
    service = lookup(service_id)
    body = require_json_body()
    validate_call(body, service)
    st = state()
    patient_id = body["context"]["patientId"]
    token, can_fetch = fetch_allowed(body, st)
    acquirer: Acquirer = st.acquirer
    try:
        data = acquirer.acquire(
            patient_id=patient_id,
            prefetch=body.get("prefetch") or {},
            fhir_server=body.get("fhirServer"),
            token=token,
            can_fetch=can_fetch,
            started=started,
        )
    except DataUnavailable as exc:
        st.metrics.count_412(exc.reason)
        raise ApiError(412, f"required data unavailable ({exc.reason}): {', '.join(exc.keys)}") from None
    if data.patient is None:
        raise ApiError(412, "required data unavailable (fhir-error): patient")
    thresholds, version = st.config.current()
    as_of = datetime.now(ZoneInfo(thresholds.service.timezone)).date()
    record = record_from_resources(data.patient, data.resources)
    assessment = assess(record, as_of, thresholds)
    built = build_cards(
        assessment,
        CardRequest(
            patient_id=patient_id,
            hook_instance=body["hookInstance"],
            service_id=service.id,
            config_version=version,
            max_cards=st.settings.max_cards,
        ),
    )
    st.metrics.observe_cards(built.cards)
    log.info(
        "hook call",
        extra={
            "service": service.id,
            "cards": [c["extension"] for c in built.cards],
            "keys": {k: v.state + ("+fetched" if v.fetched else "") for k, v in data.keys.items()},
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return json_response({"cards": built.cards}, no_store=True)
