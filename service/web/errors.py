"""Every non-2xx answer is a FHIR OperationOutcome (contract D-02); mapped here, in one place.

`diagnostics` names the field or prefetch key and never repeats request values; a 500 carries only the request id.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from flask import Flask, g, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

ISSUE_CODE = {400: "invalid", 401: "login", 404: "not-found", 405: "not-supported", 412: "not-found",
              413: "too-long", 415: "not-supported", 503: "transient"}  # fmt: skip


class ApiError(Exception):
    def __init__(
        self, status: int, diagnostics: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or ISSUE_CODE.get(status, "exception")
        self.headers = headers or {}


def outcome(status: int, diagnostics: str, code: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": code or ISSUE_CODE.get(status, "exception"), "diagnostics": diagnostics}
        ],
    }


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> ResponseReturnValue:
        return jsonify(outcome(err.status, err.diagnostics, err.code)), err.status, err.headers

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> ResponseReturnValue:
        status = err.code or 500
        text = {404: "unknown path", 405: "method not allowed", 413: "request body too large"}.get(status, err.name)
        response = jsonify(outcome(status, text))
        if status == 405 and err.get_response().headers.get("Allow"):
            response.headers["Allow"] = err.get_response().headers["Allow"]
        return response, status

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> ResponseReturnValue:
        # The exception type and frames go to the log, not its message (it may hold data); nothing to the client.
        frames = "".join(traceback.format_tb(err.__traceback__))
        log.error("unhandled %s (request %s)\n%s", type(err).__name__, g.get("request_id", "-"), frames)
        return jsonify(outcome(500, f"internal error; request id {g.get('request_id', '-')}", "exception")), 500
