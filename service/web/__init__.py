"""The CDS Hooks web service: a Flask app factory with one blueprint per endpoint group."""

from __future__ import annotations

import time
import uuid

from flask import Flask, Response, g, request

from service.web.errors import register_error_handlers
from service.web.settings import Settings
from service.web.state import build_state


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["ckd_cds"] = build_state(settings)

    from service.web.health import bp as health_bp
    from service.web.hooks import bp as hooks_bp

    app.register_blueprint(hooks_bp)
    app.register_blueprint(health_bp)
    register_error_handlers(app)

    @app.before_request
    def start_request() -> None:
        g.started = time.monotonic()
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        if request.path.startswith("/cds-services"):
            cors(response, settings)
        return response

    return app


def cors(response: Response, settings: Settings) -> None:
    """D-08: in development any origin; production CORS (allowlist) comes with issue #4."""
    if not settings.production:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
