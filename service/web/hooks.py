"""CDS Hooks endpoints: discovery, service calls and feedback (contract D-01 to D-06, D-09).

Checks run in the D-02 order: routing (404/405), JWT (401), size and media type (413/415), JSON shape (400), data
acquisition (412), then the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request

from cards.builder import RULE_OF_CARD, clinically_worse, snooze_rule
from service.clinical.thresholds import Thresholds
from service.store import FeedbackCaller, SnoozeRule, TooManyAnswers
from service.web import metrics
from service.web.acquire import DataUnavailable, FetchSettings, PatientData
from service.web.auth import AuthFailure, Caller
from service.web.errors import ApiError
from service.web.registry import CdsService, ServiceCall, ServiceResult
from service.web.services import SERVICES
from service.web.state import AppState, validator
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)
ENGINE_VERSION = "0.1.0"


def state() -> AppState:
    app_state: AppState = current_app.extensions["ckd_cds"]
    return app_state


def json_response(body: Any, status: int = 200, *, no_store: bool = False) -> Response:
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response


def audiences() -> list[str]:
    """`aud` must equal the URL called: built from the public base URLs, never from Host in production (D-07)."""
    st = state()
    configured = [base + request.path for base in st.settings.public_base_urls]
    if st.settings.production:
        return configured
    return [*configured, request.base_url]


def authenticate(*, required: bool) -> Caller | None:
    """401 with one fixed body for every cause; the cause goes to the log and metrics only (D-07)."""
    st = state()
    if not st.settings.auth.required:
        return None
    header = request.headers.get("Authorization")
    if header is None and not required:
        return None
    try:
        caller = st.verifier.verify(header, audiences())
    except AuthFailure as failure:
        metrics.AUTH_FAILURES.labels(failure.reason).inc()
        log.warning("jwt rejected: %s", failure.reason, extra={"reason": failure.reason})
        raise ApiError(401, "authentication required", "login", {"WWW-Authenticate": "Bearer"}) from None
    g.caller = caller
    g.audit.update(iss=caller.iss, tenant=caller.tenant, kid=caller.kid, jti_hash=caller.jti_hash)
    return caller


def lookup(service_id: str) -> CdsService:
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError(404, "unknown service id")
    return service


def require_json_body() -> Any:
    """415 for a non-JSON media type, 413 over the size cap, 400 for malformed JSON.

    Nesting deeper than 1,024 levels is refused by orjson itself (400); nothing here recurses over request JSON
    (the request schema stops at `prefetch: object`, the adapter reads fixed paths), so that is the depth cap.
    """
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise ApiError(415, "Content-Encoding is not supported: send the JSON body uncompressed")
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise ApiError(415, "Content-Type must be application/json")
    limit = state().settings.max_body_bytes
    if request.content_length is None:  # chunked: werkzeug would cut the body at the cap silently (then a 400)
        body = request.environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise ApiError(413, "request body too large", "too-long")
    else:
        body = request.get_data(cache=False)  # over the cap with a Content-Length: 413 before reading
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "body is not valid JSON (or nested more than 1,024 levels)") from None


def check_prefetch_size(prefetch: Any) -> None:
    """D-04 caps fetched data; prefetched data gets the same bound, refused rather than cut (413)."""
    if not isinstance(prefetch, dict):
        return
    limit = state().settings.max_prefetch_entries
    for key, value in prefetch.items():
        entries = value.get("entry") if isinstance(value, dict) else None
        if isinstance(entries, list) and len(entries) > limit:
            raise ApiError(413, f"prefetch {key} has more than {limit} entries", "too-long")


def schema_problem(body: Any, schema: str) -> str | None:
    """The first schema violation, naming the field and the rule broken but never the value sent (D-02)."""
    errors = sorted(validator(schema).iter_errors(body), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if not errors:
        return None
    error = errors[0]
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        return f"{where + '.' if where else ''}{missing} is required"
    if error.validator == "dependentRequired":
        return "fhirServer is required with fhirAuthorization"
    return f"{where or 'body'} is invalid ({error.validator})"


def validate_call(body: Any, service: CdsService) -> FhirUrl | None:
    """400 for a malformed call; the fhirServer, parsed and normalised once for the whole request (or None)."""
    problem = schema_problem(body, "cds-request")
    if problem is not None:
        raise ApiError(400, problem, "required" if "required" in problem else "invalid")
    if body["hook"] != service.hook:
        raise ApiError(400, f"hook is not registered for service {service.id}")
    problem = service.check(body)
    if problem is not None:
        raise ApiError(400, problem, "invalid")
    server = body.get("fhirServer")
    parsed = None
    if isinstance(server, str):
        try:
            parsed = parse_fhir_url(server)
        except UnsafeUrl as exc:  # userinfo, dot segments, non-canonical IPs, ...: never fetched, never stored
            raise ApiError(400, f"fhirServer is not a usable FHIR base URL: {exc}") from None
        if state().settings.production and parsed.scheme != "https":
            raise ApiError(400, "fhirServer must use https in production")
    check_prefetch_size(body.get("prefetch"))
    return parsed


def server_allowed(server: FhirUrl, caller: Caller | None) -> bool:
    """Where the fallback may send a request (SSRF guard, on parsed URLs): the CKD_CDS_FHIR_SERVERS bases when
    set; in production also only the calling issuer's fhir_servers; in development, without an allowlist, only
    loopback and the configured bases (open servers, issuers' servers)."""
    st = state()
    if st.allowed_servers and not any(base.contains(server) for base in st.allowed_servers):
        return False
    if st.settings.production:
        return caller is not None and server in st.issuer_servers.get(caller.iss, ())
    if st.allowed_servers:
        return True
    issuers = (base for bases in st.issuer_servers.values() for base in bases)
    return server.loopback or server in st.open_servers or any(base == server for base in issuers)


def fetch_allowed(body: dict[str, Any], caller: Caller | None, server: FhirUrl | None) -> tuple[str | None, bool, str]:
    """(token, may fetch, reason if not): allowed servers only; open servers only in development."""
    st = state()
    auth = body.get("fhirAuthorization")
    if server is not None and not server_allowed(server, caller):
        return None, False, "fhir-server-not-allowed"
    if isinstance(auth, dict):
        if auth.get("patient") not in (None, body["context"]["patientId"]):
            return None, False, "no-fhir-access"  # the token is for another patient: not used (D-04)
        return str(auth["access_token"]), server is not None, ""
    open_ok = not st.settings.production and server is not None and server in st.open_servers
    return None, open_ok, "no-fhir-access"


def patient_key(patient_id: str) -> str | None:
    st = state()
    if not st.settings.pseudonymous_patient_key or not st.settings.patient_key_secret:
        return None
    return hmac.new(st.settings.patient_key_secret.encode(), patient_id.encode(), hashlib.sha256).hexdigest()


def audit_keys(data: PatientData) -> dict[str, Any]:
    out = {}
    for name, k in data.keys.items():
        out[name] = {"state": k.state, "entries": k.entries, "pages": k.pages, "truncated": k.truncated,
                     "fetched": k.fetched, "http_status": k.http_status, "latency_ms": k.latency_ms,
                     "unavailable": k.unavailable, "circuit_open": k.circuit_open}  # fmt: skip
        metrics.PREFETCH.labels(name, k.state).inc()
        if k.fetched and k.latency_ms is not None:
            outcome = k.unavailable or "ok"
            metrics.FALLBACK.labels(name, outcome).observe(k.latency_ms / 1000)
    return out


@bp.get("/cds-services")
def discovery() -> Response:
    authenticate(required=state().settings.auth.discovery == "required")
    thresholds, _ = state().config.current()
    listed = [s.discovery(thresholds.site_codes) for s in SERVICES.values() if s.enabled(thresholds)]
    return json_response({"services": listed})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    service = lookup(service_id)
    g.audit.update(service_id=service.id, audited=True)
    caller = authenticate(required=True)
    if not service.enabled(state().config.current()[0]):
        raise ApiError(503, f"service {service.id} is switched off in this site's configuration")
    body = require_json_body()
    server = validate_call(body, service)
    g.audit.update(hook=body["hook"], hook_instance=body["hookInstance"],
                   fhir_server=server.base if server else None)  # normalised: never userinfo or a query  # fmt: skip
    patient_id = body["context"]["patientId"]
    g.audit["patient_key"] = patient_key(patient_id)
    thresholds, thresholds_version = state().config.current()  # one configuration for the whole request
    access = fetch_allowed(body, caller, server)  # token, may fetch, why not: once for the whole call
    fetch = fetch_settings(thresholds)
    data = acquire(body, patient_id, service, thresholds, server, access, fetch)
    started_engine = time.monotonic()
    link = patient_link(caller, patient_id)
    call = ServiceCall(
        body=body,
        patient_id=patient_id,
        data=data,
        thresholds=thresholds,
        config_version=thresholds_version,
        patient_link=link,
        snoozed=lambda fingerprints: snoozed_cards(fingerprints, link, thresholds),
        overrides=lambda: state().store.active_snoozes(link),
        audit=g.audit,
        fetch=medication_reader(server, access, fetch),
        trend=trend_link(server, patient_id),
    )
    result = service.respond(call)  # the service's own step (service.web.services.<name>)
    built = result.built
    engine_ms = (time.monotonic() - started_engine) * 1000
    # Written with the audit record, in one transaction (service.web.write_audit); a failure never blocks the cards.
    g.card_rows = card_index_rows(built.index, body, service, thresholds_version, caller, link)
    g.snoozed = built.snoozed
    record_outcome(result, thresholds_version, engine_ms)
    if state().settings.checks_responses:
        problem = schema_problem({"cards": built.cards}, "cds-response")
        if problem is not None:  # development only: a contract breach is a bug to see at once
            raise RuntimeError(f"response breaks the CDS Hooks schema: {problem}")
    return json_response({"cards": built.cards}, no_store=True)


def fetch_settings(thresholds: Thresholds) -> FetchSettings:
    f = thresholds.fhir
    return FetchSettings(connect_timeout=f.connect_timeout_s, read_timeout=f.read_timeout_s, budget_s=f.budget_s)


def acquire(
    body: dict[str, Any], patient_id: str, service: CdsService, thresholds: Thresholds, server: FhirUrl | None,
    access: tuple[str | None, bool, str], fetch: FetchSettings,
) -> PatientData:  # fmt: skip
    token, can_fetch, why_not = access
    started_fetch = time.monotonic()
    try:
        data = state().acquirer.acquire(
            keys_wanted=service.prefetch(thresholds.site_codes),
            fetch=fetch,
            patient_id=patient_id,
            prefetch=body.get("prefetch") or {},
            fhir_server=server,
            token=token,
            can_fetch=can_fetch,
            started=g.started,
            no_access_reason=why_not,
        )
    except DataUnavailable as exc:
        metrics.PRECONDITION.labels(exc.reason).inc()
        g.audit.update(missing_keys=exc.keys, precondition=exc.reason, keys=audit_keys(exc.data))
        raise ApiError(412, f"required data unavailable ({exc.reason}): {', '.join(exc.keys)}") from None
    fetched = any(k.fetched for k in data.keys.values())
    wrong_patient = sum(k.state == "wrong-patient" for k in data.keys.values()) + data.patient_mismatch
    rejected = {**data.rejected, **({"patient_mismatch": wrong_patient} if wrong_patient else {})}
    for reason, count in rejected.items():
        metrics.RESOURCES_REJECTED.labels(reason).inc(count)
    g.audit.update(keys=audit_keys(data), fetch_ms=(time.monotonic() - started_fetch) * 1000,
                   rejected_resources=rejected, path="fallback" if fetched else "prefetch",
                   deadline_hit=any(k.unavailable == "fhir-timeout" for k in data.keys.values()))  # fmt: skip
    if data.patient is None:
        reason = "patient-mismatch" if data.patient_mismatch else "fhir-error"
        metrics.PRECONDITION.labels(reason).inc()
        g.audit.update(precondition=reason)
        raise ApiError(412, f"required data unavailable ({reason}): patient")
    return data


def medication_reader(server: FhirUrl | None, access: tuple[str | None, bool, str],
                      fetch: FetchSettings) -> Callable[[str], dict[str, Any] | None] | None:  # fmt: skip
    """RD-5.2 (c): a read of a referenced Medication on the EHR's FHIR server, with the call's token and D-04's
    guards (allowed servers only, the shared timeouts and circuit); any failure is None (an optional read)."""
    token, can_fetch, _ = access
    if not can_fetch or server is None:
        return None

    def read(path: str) -> dict[str, Any] | None:
        return state().acquirer.read_one(server, path, token, fetch, g.started)

    return read


def patient_link(caller: Caller | None, patient_id: str) -> str:
    """Pseudonymous link between a card and its patient, for override memory (issue #14): HMAC-SHA256 of issuer,
    tenant and patient id under the service's link secret. The patient id is never stored. The tenant is part of it
    (issue #21): one issuer serving many tenants with numeric ids is the common case, and tenant t1's "12345" is not
    tenant t2's. The three parts are JSON-encoded, so no choice of values makes two different triples collide."""
    message = orjson.dumps([caller.iss if caller else None, caller.tenant if caller else None, patient_id])
    return hmac.new(state().patient_link_secret.encode(), message, hashlib.sha256).hexdigest()


def launch_tag(patient_id: str) -> str:
    """Issue #23: what a card's `smart` link says about its patient (appContext), so the trend view can check that
    the EHR launched it for that patient without the id travelling through the EHR: an HMAC under the link secret."""
    message = b"kidney-trend\0" + patient_id.encode()
    return hmac.new(state().patient_link_secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def trend_link(server: FhirUrl | None, patient_id: str) -> tuple[str, str] | None:
    """The trend view's launch URL and launch tag, when a SMART client is registered for this FHIR server."""
    settings = state().settings
    if server is None or settings.smart.client_for(server) is None:
        return None
    base = settings.public_base_urls[0] if settings.public_base_urls else request.host_url.rstrip("/")
    return f"{base}/trend/launch", launch_tag(patient_id)


def snoozed_cards(fingerprints: dict[str, dict[str, Any]], link: str, thresholds: Thresholds) -> dict[str, datetime]:
    """Override memory, for any service: of the cards a response would show (`fingerprints`: card key -> clinical
    content, cards.builder), those answered for this patient whose snooze runs and whose content has not got worse,
    with the end of each snooze. No lookup when nothing could be snoozed (most charts show no card)."""
    f = thresholds.feedback
    if not (f.snooze_days or f.dismiss_snooze_days or any(r.snooze_days for r in thresholds.cards.rules.values())):
        return {}  # answers are not remembered at this site
    if not fingerprints:
        return {}
    active = state().store.active_snoozes(link)
    if not active:
        return {}
    return {
        key: active[rule].until
        for key, fp in fingerprints.items()  # by card key: the merged tests card answers to monitoring_due
        if (rule := RULE_OF_CARD.get(key, key)) in active and not clinically_worse(fp, active[rule].fingerprint)
    }


def card_index_rows(index: list[dict[str, Any]], body: dict[str, Any], service: CdsService, version: str,
                    caller: Caller | None, link: str) -> list[dict[str, Any]]:  # fmt: skip
    """Card index rows: they join feedback to rules, configuration versions and, for override memory, the
    pseudonymous patient link and the card's clinical content (D-05; no patient identifier)."""
    return [{"card_uuid": c["card"], "hook_instance": body["hookInstance"], "service_id": service.id,
             "rule_id": c["rule"], "config_version": version, "indicator": c["indicator"],
             "suggestions": c["suggestions"], "iss": caller.iss if caller else None,
             "tenant": caller.tenant if caller else None, "patient_link": link,
             "fingerprint": orjson.dumps(c["fingerprint"]).decode()} for c in index]  # fmt: skip


def record_outcome(result: ServiceResult, version: str, engine_ms: float) -> None:
    cards, overflow = result.built.cards, result.built.overflow
    for card in cards:
        metrics.CARDS.labels(card["extension"]["org.ckd-cds.rule"]["id"], card["indicator"]).inc()
    metrics.CARDS_OVERFLOW.inc(overflow)
    for rule in g.get("snoozed") or []:
        metrics.CARDS_SNOOZED.labels(rule).inc()
    g.audit.update(
        engine_version=ENGINE_VERSION, config_version=version, engine_ms=engine_ms,
        rules_fired=result.rules_fired, rules_suppressed=result.rules_suppressed,
        cards=[{"uuid": c["uuid"], "rule": c["extension"]["org.ckd-cds.rule"]["id"], "indicator": c["indicator"]}
               for c in cards],
        cards_overflow=overflow, cards_snoozed=list(g.get("snoozed") or []),
    )  # fmt: skip


# --- feedback (D-06) --------------------------------------------------------------------------------------------


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
PURGE_EVERY_S = 3600.0
_last_purge = 0.0


def purge_now() -> None:
    """Retention (issue #21 item 7): at most once an hour per worker, after a feedback post."""
    global _last_purge
    if time.monotonic() - _last_purge < PURGE_EVERY_S and _last_purge:
        return
    _last_purge = time.monotonic()
    deleted = state().store.purge(state().settings.retention_days)
    if any(deleted.values()):
        log.info("retention purge", extra={"deleted": deleted})


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 date-time with a time zone (issue #21: ISO week dates and other ISO forms are refused)."""
    if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+01:00 lies before year 1 in UTC
        return None


def feedback_problem(body: Any) -> str | None:
    """The first problem of a feedback batch: its JSON Schema, then RFC 3339 timestamps with a time zone."""
    problem = schema_problem(body, "cds-feedback")
    if problem is not None:
        return problem
    for i, item in enumerate(body["feedback"]):
        if parse_timestamp(item["outcomeTimestamp"]) is None:
            return f"feedback.{i}.outcomeTimestamp must be an RFC 3339 date-time with a time zone"
    return None


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    service = lookup(service_id)
    caller = authenticate(required=True)
    body = require_json_body()
    problem = feedback_problem(body)
    if problem is not None:
        raise ApiError(400, problem)  # one invalid item: nothing is stored
    items = body["feedback"]
    clean = [{**item, "outcomeTimestamp": parse_timestamp(item["outcomeTimestamp"])} for item in items]
    thresholds, _ = state().config.current()

    rule_policy = service.snooze_rule or snooze_rule

    def policy(rule: str, dismissal: bool) -> SnoozeRule:
        return rule_policy(rule, dismissal, thresholds)

    who = FeedbackCaller(iss=caller.iss, tenant=caller.tenant, verified=True) if caller else FeedbackCaller()
    try:
        rules = state().store.add_feedback(service.id, clean, who, policy)
    except TooManyAnswers as exc:
        raise ApiError(429, str(exc), "throttled") from None
    purge_now()
    for rule, item in zip(rules, clean, strict=True):
        metrics.FEEDBACK.labels(rule or "unmatched", item["outcome"]).inc()
    return json_response({}, no_store=True)
