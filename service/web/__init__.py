"""The CDS Hooks web service: a Flask app factory with one blueprint per endpoint group."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from service.web import metrics
from service.web.errors import register_error_handlers
from service.web.settings import Settings
from service.web.state import AppState, build_state

log = logging.getLogger(__name__)
# HTTP libraries log full URLs at DEBUG, and FHIR URLs carry the patient id: never below WARNING (D-09).
QUIET_LOGGERS = ("urllib3", "requests", "fhirclient")


def quiet_http_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    quiet_http_loggers()
    app = Flask(__name__)
    if settings.trusted_proxies:  # the client address is the one these proxies report (never trusted otherwise)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["DEBUG"] = False  # never in any profile: errors are OperationOutcomes without stack traces
    state = build_state(settings)
    app.extensions["ckd_cds"] = state
    app.config.update(
        SECRET_KEY=settings.secret_key or state.store.shared_secret("session-key"),  # same key in every worker
        SESSION_COOKIE_NAME="ckd_cds_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.production,
        SESSION_COOKIE_PATH="/admin",
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )

    from service.web.admin import bp as admin_bp
    from service.web.health import bp as health_bp
    from service.web.hooks import bp as hooks_bp
    from service.web.trend import bp as trend_bp

    app.register_blueprint(hooks_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(trend_bp)
    register_error_handlers(app)

    @app.before_request
    def start_request() -> Response | None:
        g.started = time.monotonic()
        # issue #21: the request id is always the service's own (a client's could collide with another call's in the
        # audit); a well-formed client id is kept beside it for correlation
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = uuid.uuid4().hex
        g.audit = {"request_id": g.request_id}
        if incoming.isalnum() and len(incoming) <= 64:
            g.audit["client_request_id"] = incoming
        if request.method == "OPTIONS" and request.path.startswith("/cds-services"):
            return preflight(settings)
        return None

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        response.headers["X-Content-Type-Options"] = "nosniff"
        if request.path.startswith("/cds-services"):
            cors(response, settings)
            count_request(response)
        if g.get("audit", {}).get("audited"):
            write_audit(state, response)
        return response

    return app


def allowed_origin(settings: Settings) -> str | None:
    origin = request.headers.get("Origin")
    if "*" in settings.cors_allowed_origins:
        return "*"
    return origin if origin and origin in settings.cors_allowed_origins else None


def preflight(settings: Settings) -> Response:
    """D-08: 204 without authentication, for allowed origins only."""
    origin = allowed_origin(settings)
    if origin is None:
        return Response(status=403)
    response = Response(status=204)
    response.headers.update({
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
    })  # fmt: skip
    return response


def cors(response: Response, settings: Settings) -> None:
    """Every response under /cds-services, errors included, echoes an allowed origin; never credentials (D-08)."""
    origin = allowed_origin(settings)
    response.vary.add("Origin")
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"


def count_request(response: Response) -> None:
    audit = g.get("audit", {})
    service = audit.get("service_id") or ("discovery" if request.path == "/cds-services" else "-")
    metrics.REQUESTS.labels(service, audit.get("hook") or "-", str(response.status_code)).inc()
    if audit.get("path") and response.status_code == 200:
        metrics.LATENCY.labels(audit["path"]).observe(time.monotonic() - g.started)


def write_audit(state: AppState, response: Response) -> None:
    """One audit record per service invocation (D-09); a failed write is logged and counted, never blocks."""
    record = {**g.audit, "status": response.status_code, "total_ms": (time.monotonic() - g.started) * 1000}
    record.pop("audited", None)
    try:
        state.store.add_audit(record, g.get("card_rows"), g.get("snoozed"))
    except Exception as exc:  # never block the response; log the type only, the message may hold data
        state.audit_health.record(ok=False)
        metrics.AUDIT_FAILURES.inc()
        log.error("audit write failed: %s (request %s)", type(exc).__name__, g.get("request_id", "-"))
    else:
        state.audit_health.record(ok=True)
