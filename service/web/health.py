"""Liveness and readiness."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    state = current_app.extensions["ckd_cds"]
    _, version = state.config.current()
    return jsonify({"status": "ready", "configVersion": version, "worker": os.getpid()})
