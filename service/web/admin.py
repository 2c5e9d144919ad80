"""Operator endpoints: /metrics and the feedback report. Reached from an operator network only (D-01).

Authentication: a token whose SHA-256 is in the environment (`CKD_CDS_ADMIN_TOKEN_SHA256`,
`CKD_CDS_METRICS_TOKEN_SHA256`); never the EHR's JWT trust. The full admin console comes with issue #5.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from service.web import metrics
from service.web.errors import ApiError

bp = Blueprint("admin", __name__)


def check_token(expected_sha256: str | None, *, open_when_unset: bool) -> None:
    if expected_sha256 is None:
        if open_when_unset:
            return
        raise ApiError(404, "unknown path")  # not configured: the endpoint does not exist
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    digest = hashlib.sha256(token.encode()).hexdigest()
    if not token or not hmac.compare_digest(digest, expected_sha256.lower()):
        raise ApiError(401, "authentication required", "login", {"WWW-Authenticate": "Bearer"})


@bp.get("/metrics")
def metrics_page() -> Response:
    settings = current_app.extensions["ckd_cds"].settings
    check_token(settings.metrics_token_sha256, open_when_unset=not settings.production)
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/admin/api/feedback-report")
def feedback_report() -> Response:
    state = current_app.extensions["ckd_cds"]
    check_token(state.settings.admin_token_sha256, open_when_unset=False)
    return jsonify({"rules": state.store.feedback_report()})
