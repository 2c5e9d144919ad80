"""Liveness and readiness."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import yaml
from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    state = current_app.extensions["ckd_cds"]
    _, version = state.config.current()
    body = {"status": "ready", "configVersion": version, "worker": os.getpid()}
    if state.audit_health.failing:  # answers still go out, but without an audit trail: take this worker out
        body |= {"status": "degraded", "reason": "audit-write-failing", "auditFailures": state.audit_health.failures}
        return Response(json.dumps(body), status=503, mimetype="application/json")
    return jsonify(body)


OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


@cache
def openapi_document() -> dict[str, object]:
    document: dict[str, object] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI description of every endpoint (docs/openapi.yaml)."""
    return jsonify(openapi_document())
