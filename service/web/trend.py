"""The kidney trend view's web endpoints (issue #23): a SMART on FHIR app served by ckd-cds.

    GET  /trend/launch    EHR launch (`iss` and `launch`) or standalone launch (`iss` only)
    GET  /trend/callback  the authorization server's answer: code exchange, record read, page rendered
    GET  /trend/view?v=…  the page, to the browser that launched it, while the EHR's token would still be valid
    POST /trend/end       close a view now

The SMART client itself is `service.trend.smart`; the record is read by the same acquirer, subject checks and
plausibility bounds as the hook services, and the page is built by `service.trend` from the same engine as the
cards. The access token is used inside the callback request only: never stored, logged, or sent to the browser.
What the browser holds is an HttpOnly cookie with a random key. Under that key the store keeps each launch by its
OAuth state (minutes, read once) and each rendered view by its id (until the token would have expired, or
`smart.session_minutes`, whichever is sooner), so two tabs keep their own patients.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from service.clinical.thresholds import SiteCode
from service.fhir.adapter import medication_index, patient_label
from service.fhir.timeline import drug_spans
from service.trend.model import trend_view
from service.trend.page import render, render_message
from service.trend.smart import LAUNCH_TTL_S, LaunchRefused, begin, discover, finish, missing_scopes, session
from service.web import metrics
from service.web.acquire import DataUnavailable, FetchSettings
from service.web.hooks import launch_tag, patient_key, state
from service.web.registry import PATIENT_TOKEN, PrefetchKey
from service.web.services.patient_view import assess_data, ckd_prefetch
from service.web.urls import FhirUrl, UnsafeUrl, parse_fhir_url

STATIC = Path(__file__).resolve().parents[1] / "trend" / "static"
bp = Blueprint("trend", __name__, url_prefix="/trend", static_folder=str(STATIC), static_url_path="/static")
COOKIE = "ckd_cds_trend"
READ = FetchSettings(connect_timeout=2.0, read_timeout=5.0, budget_s=10.0, max_pages=20, max_entries=2000)
LAUNCH_PARAM_MAX = 2048
BROWSER_KEY_S = 12 * 3600  # how long a browser keeps its key; each view ends sooner, with its token
SEARCHED_IN_FULL = ("kidneyLabs", "urineLabs", "bloodPressure", "medications")  # ten years of them, every page


@cache
def trend_keys(site_codes: tuple[SiteCode, ...] = ()) -> tuple[PrefetchKey, ...]:
    """The patient-view reads, to the last page; every MedicationRequest status for the drug timeline (the engine's
    adapter still counts only active and on-hold ones)."""
    keys = []
    for key in ckd_prefetch(site_codes):
        if key.name == "medications":
            key = replace(key, template=f"MedicationRequest?patient={PATIENT_TOKEN}&_count=100")
        keys.append(replace(key, every_page=True) if key.name in SEARCHED_IN_FULL else key)
    return tuple(keys)


def secured(response: BaseResponse) -> BaseResponse:
    """No script, no third-party host, no caching, no Referer (the callback URL holds the code)."""
    ancestors = " ".join(state().settings.smart.frame_ancestors) or "'none'"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def page(status: int, title: str, message: str) -> BaseResponse:
    body = render_message(title, message, stylesheet=url_for("trend.static", filename="trend.css"))
    return secured(Response(body, status=status, mimetype="text/html"))


def outcome(result: str) -> None:
    """The step's outcome, for the audit record and the metrics (operators see refusals by reason)."""
    g.audit["outcome"] = result
    metrics.TREND_LAUNCHES.labels(g.audit.get("hook", "-"), result).inc()


def refused(exc: LaunchRefused) -> BaseResponse:
    outcome(exc.reason)
    return page(exc.status, "The kidney trend view cannot open", exc.message)


def set_cookie(response: BaseResponse, sid: str, max_age: int = BROWSER_KEY_S) -> None:
    response.set_cookie(
        COOKIE, sid, max_age=max_age, path="/trend", httponly=True, samesite="Lax", secure=state().settings.production
    )


def browser_key() -> tuple[str, bool]:
    """This browser's trend-view key (the cookie), or a new one: (key, new)."""
    sid = request.cookies.get(COOKIE, "")
    if 32 <= len(sid) <= 64 and sid.replace("-", "").replace("_", "").isalnum():
        return sid, False
    return secrets.token_urlsafe(32), True


def row_key(browser: str, kind: str, name: str) -> str:
    """Where a launch (by its OAuth state) or a view (by its id) is kept: only this browser's key finds it, and two
    launches or views in two tabs of one browser never share a row."""
    return hashlib.sha256(f"{kind}\0{browser}\0{name}".encode()).hexdigest()


def _start_audit(step: str) -> None:
    g.audit.update(service_id="kidney-trend", hook=step, audited=True)


@bp.get("/launch")
def launch() -> BaseResponse:
    _start_audit("smart-launch")
    settings = state().settings
    try:
        iss = parse_fhir_url(request.args.get("iss", ""))
    except UnsafeUrl:
        iss = None
    registration = settings.smart.client_for(iss) if iss is not None else None
    try:
        if iss is None or registration is None:  # before any redirect: an unknown iss never sees our client id
            raise LaunchRefused(
                "unknown-iss",
                "This EHR (iss) is not registered for the kidney trend view. "
                "An administrator adds it under smart.clients in the service configuration.",
            )
        code = request.args.get("launch")
        if code is not None and (not code or len(code) > LAUNCH_PARAM_MAX or not code.isprintable()):
            raise LaunchRefused("bad-launch", "The launch parameter is not usable.")
        endpoints = discover(iss, session(state().acquirer.adapter, 5.0), settings.production)
        pending = begin(registration, iss, endpoints, code)
    except LaunchRefused as exc:
        return refused(exc)
    browser, _ = browser_key()
    expires = datetime.now(UTC) + timedelta(seconds=LAUNCH_TTL_S)
    state().store.open_launch(row_key(browser, "launch", pending.oauth_state), pending.saved, expires)
    g.audit.update(smart_client=registration.name, fhir_server=iss.base)
    outcome("redirected")
    response = secured(redirect(pending.authorize_url, 302))
    set_cookie(response, browser)  # renewed on every launch
    return response


def _app_context(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@bp.get("/callback")
def callback() -> BaseResponse:
    _start_audit("smart-callback")
    browser, new = browser_key()
    oauth_state = request.args.get("state", "")
    found = not new and 0 < len(oauth_state) <= 200
    saved = state().store.take_launch(row_key(browser, "launch", oauth_state)) if found else None
    try:
        if saved is None:
            raise LaunchRefused(
                "bad-state",
                "This sign-in answer does not match a launch started in this browser (state), or it was already used "
                "or took too long. Open the view again from the EHR.",
            )
        if "error" in request.args:
            raise LaunchRefused(
                "denied",
                f"The EHR did not authorise the kidney trend view ({request.args.get('error', '')[:100]}).",
                403,
            )
        grant, registration, iss = finish(saved, request.url, session(state().acquirer.adapter, 10.0))
        g.audit["smart_client"] = registration
        g.audit["patient_key"] = patient_key(grant.patient)
        if grant.expires_in is not None and grant.expires_in <= 0:
            raise LaunchRefused("expired", "The EHR's access token had already expired. Open the view again.", 401)
        missing = missing_scopes(grant.scopes)
        if missing:
            raise LaunchRefused(
                "scope",
                "The EHR did not grant read access this view needs: "
                + ", ".join(missing)
                + ". Ask the EHR administrator to allow these scopes.",
                403,
            )
        context = _app_context(grant.app_context)
        tag = context.get("patient")
        if tag is not None and not (isinstance(tag, str) and hmac.compare_digest(tag, launch_tag(grant.patient))):
            raise LaunchRefused(
                "other-patient",
                "The EHR opened this view for a different patient than the card "
                "it was launched from. Open it again from the current patient's card.",
                403,
            )
        view_id = secrets.token_urlsafe(16)
        body = build_page(iss, grant.access_token, grant.patient, context.get("card"), view_id)
    except LaunchRefused as exc:
        return refused(exc)
    lifetime = state().settings.smart.session_minutes * 60
    if grant.expires_in is not None:
        lifetime = min(lifetime, grant.expires_in)
    expires = datetime.now(UTC) + timedelta(seconds=lifetime)
    state().store.keep_view(row_key(browser, "view", view_id), body, expires)
    outcome("shown")
    return secured(redirect(url_for("trend.view", v=view_id), 303))


def build_page(iss: FhirUrl, token: str, patient_id: str, focus: Any, view_id: str) -> str:
    """Read the record with the token (the hook services' acquirer), run the engine, render. Refuses data that is
    not this patient's: a Patient resource with another id, or any resource naming another patient."""
    thresholds, version = state().config.current()
    try:
        data = state().acquirer.acquire(
            keys_wanted=trend_keys(thresholds.site_codes),
            fetch=READ,
            patient_id=patient_id,
            prefetch={},
            fhir_server=iss,
            token=token,
            can_fetch=True,
            started=time.monotonic(),
        )
    except DataUnavailable as exc:
        if exc.reason == "fhir-unauthorized":
            raise LaunchRefused(
                "fhir-unauthorized",
                "The FHIR server refused the EHR's token (expired, revoked or "
                "without access to this record). Open the view again.",
                401,
            ) from None
        raise LaunchRefused(
            "fhir-error", "The patient's record could not be read from the EHR; try again.", 502
        ) from None
    if data.patient is None or data.rejected.get("other_patient"):
        raise LaunchRefused(
            "other-patient", "The EHR's FHIR server answered with another patient's data. Nothing is shown.", 403
        )
    g.audit.update(config_version=version, rejected_resources=data.rejected)
    record, assessment = assess_data(data, thresholds)  # as the cards
    requests_ = [r for r in data.resources if r.get("resourceType") == "MedicationRequest"]
    drugs = tuple(drug_spans(requests_, medication_index(data.resources)))
    view = trend_view(assessment, record, drugs, focus if isinstance(focus, str) else None)
    return render(view, stylesheet=url_for("trend.static", filename="trend.css"), end_url=url_for("trend.end"),
                  view_id=view_id, patient=patient_label(data.patient))  # fmt: skip


def _view_key() -> str | None:
    browser, new = browser_key()
    view_id = request.values.get("v", "")
    return None if new or not 0 < len(view_id) <= 64 else row_key(browser, "view", view_id)


@bp.get("/view")
def view() -> BaseResponse:
    key = _view_key()
    body = state().store.view_page(key) if key else None
    if body is None:
        return page(
            401, "The kidney trend view has ended", "Its access to the record has ended. Open it again from the EHR."
        )
    return secured(Response(body, mimetype="text/html"))


@bp.post("/end")
def end() -> BaseResponse:
    key = _view_key()
    if key:
        state().store.end_view(key)
    return page(200, "The kidney trend view is closed", "Nothing of this view is kept.")
