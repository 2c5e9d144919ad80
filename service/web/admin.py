"""Operators and admins: /metrics, the configuration console (/admin) and its API (/admin/api/...).

Authentication is never the EHR's JWT trust: console users come from `CKD_CDS_ADMIN_USERS` (hashed passwords,
roles `editor` and `viewer`), API clients may use a bearer token whose SHA-256 is `CKD_CDS_ADMIN_TOKEN_SHA256`
(role editor). Sessions are signed cookies (HttpOnly, SameSite=Strict, Secure in production); every state-changing
console request carries a CSRF token; failed logins are rate-limited per client address in the shared store.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import secrets
from datetime import date, timedelta
from functools import cache
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from cards.builder import SOURCES, CardRequest, build_cards
from service.clinical.assess import assess
from service.clinical.dosing.table import merged_document, shipped_document
from service.clinical.thresholds import Thresholds, thresholds_to_dict
from service.config import obsolete_notes, validate_data, validation_errors, without_obsolete
from service.config_store import StaleVersion, yaml_diff
from service.demo import demo_bundles
from service.fhir.adapter import AdapterError, record_from_bundle, site_code_map
from service.store import now
from service.web import metrics
from service.web.admin_form import document_from_form, fields, form_values
from service.web.errors import ApiError
from service.web.state import AppState

bp = Blueprint("admin", __name__, template_folder="templates", static_folder="static",
               static_url_path="/admin/static")  # fmt: skip
PREVIEW_HOOK = "admin-preview"
ADMIN_SESSION_S = 8 * 3600  # a console session lasts a working day at most


def state() -> AppState:
    app_state: AppState = current_app.extensions["ckd_cds"]
    return app_state


# --- authentication and authorisation ----------------------------------------------------------------------------


def token_matches(expected_sha256: str | None) -> bool:
    header = request.headers.get("Authorization", "")
    if expected_sha256 is None or not header.startswith("Bearer "):
        return False
    digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    return hmac.compare_digest(digest, expected_sha256.lower())


def current_role() -> str | None:
    """editor or viewer for a signed-in user or a valid API token; None otherwise."""
    if token_matches(state().settings.admin_token_sha256):
        g.admin_user, g.via_token = "api-token", True
        return "editor"
    sid = session.get("sid")
    user = state().store.admin_session_user(sid_hash(sid)) if isinstance(sid, str) else None
    account = state().settings.admin_users.get(user) if user is not None else None
    if user is None or account is None:  # no server-side session (signed out, expired) or the account was removed
        return None
    g.admin_user, g.via_token = user, False
    return account.role


def sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def require(role: str, *, page: bool = False) -> str:
    """401 (API) or a redirect to sign in (page) without a session; 403 when the role is not enough."""
    have = current_role()
    if have is None:
        raise ApiError(401, "authentication required", "login", {"WWW-Authenticate": "Bearer"})
    if role == "editor" and have != "editor":
        raise ApiError(403, "the editor role is required", "forbidden")
    if request.method not in ("GET", "HEAD") and not g.via_token:
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            raise ApiError(403, "missing or invalid CSRF token", "forbidden")
    return have


def client_key() -> str:
    """The client address, hashed (no raw address is stored). Behind a proxy, the address that the configured
    number of trusted proxies reported (CKD_CDS_TRUSTED_PROXIES, werkzeug ProxyFix); otherwise the peer's."""
    return hashlib.sha256(f"client:{request.remote_addr or '-'}".encode()).hexdigest()


def account_key(user: str) -> str:
    """The account as seen from this client address (issue #21: counting per account alone let anyone who knew a user
    name lock that admin out from any address)."""
    return hashlib.sha256(f"account:{request.remote_addr or '-'}|{user}".encode()).hexdigest()


@cache
def dummy_hash() -> str:
    """A hash of the configured kind for a random password: an unknown user costs the same as a wrong password."""
    return generate_password_hash(secrets.token_urlsafe(16))


@bp.after_app_request
def admin_headers(response: Response) -> Response:
    """Security headers for the console: a strict CSP, no framing, no referrer, no caching."""
    if request.path.startswith("/admin"):
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
    return response


SAVED_MESSAGES = re.compile(
    r"Saved version \d+\.|No change: version \d+ stays live\.|"
    r"Restored version \d+ as version \d+\."
)


def saved_message(value: str | None) -> str | None:
    """The message after a save, only in the forms this console writes (issue #21: `/admin?saved=` showed any text
    a link carried, a phishing aid inside the console)."""
    return value if value is not None and SAVED_MESSAGES.fullmatch(value) else None


@bp.route("/admin/login", methods=["GET", "POST"])
def login() -> Any:
    settings = state().settings
    error = None
    if request.method == "POST":
        store = state().store
        user, password = request.form.get("username", "")[:100], request.form.get("password", "")
        keys = [client_key(), account_key(user)]
        attempt = store.add_login_attempt(keys)  # counted first, so parallel attempts cannot slip past the limit
        since = now() - timedelta(seconds=settings.login_window_s)
        if any(store.login_failures_since(key, since) > settings.login_attempts for key in keys):
            return render_template("admin/login.html", error="Too many failed sign-ins; try again later."), 429
        account = settings.admin_users.get(user)
        matches = check_password_hash(account.password_hash if account else dummy_hash(), password)
        if account is not None and matches:
            store.forget_login_attempt(attempt)
            sid = secrets.token_urlsafe(32)
            store.open_admin_session(sid_hash(sid), user, now() + timedelta(seconds=ADMIN_SESSION_S))
            session.clear()
            session["sid"], session["csrf"] = sid, secrets.token_urlsafe(32)
            return redirect(url_for("admin.console"))
        error = "Unknown user or wrong password."
    configured = bool(settings.admin_users)
    return render_template("admin/login.html", error=error, configured=configured), 401 if error else 200


@bp.post("/admin/logout")
def logout() -> Any:
    require("viewer")
    sid = session.get("sid")
    if isinstance(sid, str):
        state().store.close_admin_session(sid_hash(sid))  # a copy of the cookie no longer signs in
    session.clear()
    return redirect(url_for("admin.login"))


# --- operators -----------------------------------------------------------------------------------------------------


@bp.get("/metrics")
def metrics_page() -> Response:
    settings = state().settings
    if settings.metrics_token_sha256 is None:
        if settings.production:
            raise ApiError(404, "unknown path")
    elif not token_matches(settings.metrics_token_sha256):
        raise ApiError(401, "authentication required", "login", {"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/admin/api/feedback-report")
def feedback_report() -> Response:
    require("viewer")
    return json_ok({"rules": state().store.feedback_report()})


# --- configuration API ---------------------------------------------------------------------------------------------


def json_ok(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")


def version_json(v: Any, *, with_document: bool = False) -> dict[str, Any]:
    out = {"version": v.version, "label": v.label, "created_at": v.created_at.isoformat(), "author": v.author,
           "comment": v.comment, "restored_from": v.restored_from,
           "notes": obsolete_notes(v.document)}  # fmt: skip
    if with_document:
        out["document"] = v.document
    return out


def api_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


@bp.get("/admin/api/config")
def api_config() -> Response:
    require("viewer")
    latest = state().configs.latest()
    assert latest is not None  # noqa: S101 - seeded at start-up
    return json_ok(version_json(latest, with_document=True))


@bp.post("/admin/api/config/validate")
def api_validate() -> Response:
    require("viewer")
    document = api_body().get("document")
    if not isinstance(document, dict):
        raise ApiError(400, "document must be an object")
    errors = validation_errors(document)
    return json_ok({"valid": not errors, "errors": errors})


@bp.put("/admin/api/config")
def api_save() -> Response:
    require("editor")
    body = api_body()
    document, base, comment = body.get("document"), body.get("base_version"), body.get("comment")
    if (
        not isinstance(document, dict)
        or not isinstance(base, int)
        or not isinstance(comment, str)
        or not comment.strip()
    ):
        raise ApiError(400, "document (object), base_version (integer) and comment (text) are required")
    errors = validation_errors(document)
    if errors:
        return json_ok({"valid": False, "errors": errors}, 400)
    latest = state().configs.latest()
    if latest is not None and latest.version == base and normalised(document) == normalised(latest.document):
        return json_ok({**version_json(latest), "changed": False})  # nothing to save: no new version
    try:
        saved = state().configs.save(normalised(document), base_version=base, author=g.admin_user, comment=comment)
    except StaleVersion as stale:
        return json_ok({"error": "stale", "latest_version": stale.latest}, 409)
    return json_ok(version_json(saved))


@bp.get("/admin/api/config/history")
def api_history() -> Response:
    require("viewer")
    return json_ok({"versions": [version_json(v) for v in state().configs.history()]})


@bp.get("/admin/api/config/diff")
def api_diff() -> Response:
    require("viewer")
    try:
        old, new = int(request.args["from"]), int(request.args["to"])
    except (KeyError, ValueError):
        raise ApiError(400, "from and to must be version numbers") from None
    diff = state().configs.diff(old, new)
    if diff is None:
        raise ApiError(404, "unknown version")
    return json_ok({"from": old, "to": new, "diff": diff})


@bp.post("/admin/api/config/restore/<int:version>")
def api_restore(version: int) -> Response:
    require("editor")
    return json_ok(version_json(restore(version)))


def normalised(document: dict[str, Any]) -> dict[str, Any]:
    """The full document with defaults filled in, so every version states every value explicitly."""
    converted: dict[str, Any] = thresholds_to_dict(validate_data(document))
    return converted


def restore(version: int) -> Any:
    configs = state().configs
    old = configs.get(version)
    if old is None:
        raise ApiError(404, "unknown version")
    latest = configs.latest_number()
    try:
        return configs.save(without_obsolete(old.document), base_version=latest, author=g.admin_user,
                            comment=f"restore of version {version}", restored_from=version)  # fmt: skip
    except StaleVersion:
        raise ApiError(409, "the configuration changed meanwhile; try again", "conflict") from None


# --- the console ---------------------------------------------------------------------------------------------------


def preview_cards(thresholds: Thresholds, bundle: dict[str, Any]) -> list[dict[str, str]]:
    """The cards this patient would get under `thresholds` (the same engine and card builder as the service)."""
    record = record_from_bundle(bundle, site_code_map(thresholds.site_codes))
    assessment = assess(record, date.today(), thresholds)
    built = build_cards(assessment, CardRequest(patient_id="preview", hook_instance=PREVIEW_HOOK, service_id="preview",
                                                config_version="draft"))  # fmt: skip
    return [{"rule": c["extension"]["org.ckd-cds.rule"]["id"], "indicator": c["indicator"], "summary": c["summary"]}
            for c in built.cards]  # fmt: skip


PREVIEW_MAX_CHARS = 2_000_000


def preview_bundle(form: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    """(label, bundle, error) for the chosen demo patient or the pasted Bundle."""
    pasted = (form.get("bundle") or "").strip()
    if pasted:
        if len(pasted) > PREVIEW_MAX_CHARS:  # issue #21: the preview runs the engine twice per post
            return "pasted Bundle", None, f"The pasted Bundle is larger than {PREVIEW_MAX_CHARS // 1_000_000} MB."
        try:
            bundle = orjson.loads(pasted)  # nesting past 1,024 levels is a JSONDecodeError
        except orjson.JSONDecodeError:
            return "pasted Bundle", None, "The pasted text is not valid JSON (or nested more than 1,024 levels)."
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        limit = state().settings.max_prefetch_entries
        if isinstance(entries, list) and len(entries) > limit:
            return "pasted Bundle", None, f"The pasted Bundle has more than {limit:,} entries."
        return "pasted Bundle", bundle, None
    slug = form.get("patient") or ""
    bundles = demo_bundles()
    if slug not in bundles:
        return "", None, None
    return slug, bundles[slug], None


@bp.route("/admin", methods=["GET", "POST"])
def console() -> Any:
    if current_role() is None:
        return redirect(url_for("admin.login"))
    role = require("viewer")
    configs = state().configs
    live = configs.latest()
    assert live is not None  # noqa: S101 - seeded at start-up
    form_fields = fields(live.document)
    context: dict[str, Any] = {
        "live": live, "role": role, "fields": form_fields, "errors": {}, "diff": None, "preview": None,
        "message": saved_message(request.args.get("saved")), "patients": sorted(demo_bundles()), "chosen_patient": "",
        "bundle_text": "", "comment": "",
    }  # fmt: skip
    context["sections"] = grouped(form_fields)
    if request.method == "GET":
        return render_template("admin/console.html", values=form_values(live.document, form_fields), **context)
    draft, errors = document_from_form(request.form, form_fields)
    prune_drug_overlays(draft)
    errors = errors or validation_errors(draft) or review_problems(draft, live.document)
    values = {f.path: request.form.getlist(f.path)[-1] for f in form_fields if request.form.getlist(f.path)}
    context.update(errors=errors, comment=request.form.get("comment", ""), bundle_text=request.form.get("bundle", ""),
                   chosen_patient=request.form.get("patient", ""))  # fmt: skip
    if not errors:
        draft = normalised(draft)
        context["diff"] = yaml_diff(live.document, draft, f"live (v{live.version})", "draft") or None
    if request.form.get("action") == "save":
        return save_from_console(draft, errors, values, context)
    context["preview"] = build_preview(draft if not errors else None, live.document, request.form)
    status = 400 if errors else 200
    return render_template("admin/console.html", values=values, **context), status


def prune_drug_overlays(draft: dict[str, Any]) -> None:
    """The console posts every row's switch: keep only what differs from the shipped table (RD-10.2 overlays)."""
    drugs = (draft.get("renal_dosing") or {}).get("drugs")
    if not isinstance(drugs, dict):
        return
    shipped = shipped_document()["drugs"]
    for row_id in list(drugs):
        overlay = drugs[row_id]
        if not isinstance(overlay, dict):
            continue
        if row_id in shipped and overlay.get("enabled") == shipped[row_id]["enabled"]:
            overlay.pop("enabled")
        if not overlay:
            del drugs[row_id]


def review_problems(draft: dict[str, Any], live: dict[str, Any]) -> dict[str, str]:
    """RD-10.2: enabling a row whose evidence is `to_verify` needs a pharmacist's review, confirmed on the form; the
    version's author and comment record who enabled it."""
    if request.form.get("pharmacist_review") == "yes":
        return {}
    shipped = shipped_document()["drugs"]
    problems = {}
    for row_id, row in merged_document((draft.get("renal_dosing") or {}).get("drugs")).get("drugs", {}).items():
        was = merged_document((live.get("renal_dosing") or {}).get("drugs"))["drugs"].get(row_id, {})
        evidence = (row.get("source") or {}).get("evidence") if isinstance(row, dict) else None
        if isinstance(row, dict) and row.get("enabled") and not was.get("enabled") and evidence == "to_verify":
            name = f"renal_dosing.drugs.{row_id}.enabled" if row_id in shipped else "renal_dosing.drugs"
            problems[name] = ("pharmacist review required: this row's evidence is to_verify; tick 'Reviewed by a "
                              "pharmacist' and name the reviewer in the comment")  # fmt: skip
    return problems


def grouped(form_fields: list[Any]) -> list[tuple[str, list[Any]]]:
    """Fields by section, in schema order (the clinical thresholds first, then cards, FHIR and site codes)."""
    sections: dict[str, list[Any]] = {}
    for f in form_fields:
        sections.setdefault(f.section, []).append(f)
    return list(sections.items())


def build_preview(draft: dict[str, Any] | None, live: dict[str, Any], form: Any) -> dict[str, Any] | None:
    label, bundle, error = preview_bundle(form)
    if bundle is None:
        return {"label": label, "error": error} if error else None
    try:
        live_cards = preview_cards(validate_data(live), bundle)
        draft_cards = preview_cards(validate_data(draft), bundle) if draft is not None else None
    except AdapterError as exc:
        return {"label": label, "error": f"The Bundle cannot be assessed: {exc}."}
    changed = draft_cards is not None and [c["summary"] for c in draft_cards] != [c["summary"] for c in live_cards]
    return {"label": label, "live": live_cards, "draft": draft_cards, "changed": changed, "error": None}


def save_from_console(draft: dict[str, Any], errors: dict[str, str], values: dict[str, str], context: dict[str, Any]
                      ) -> Any:  # fmt: skip
    require("editor")
    comment = (request.form.get("comment") or "").strip()
    if not comment and not errors:
        errors = {"comment": "Say what you changed and why."}
    if errors:
        context["errors"] = errors
        return render_template("admin/console.html", values=values, **context), 400
    latest = state().configs.latest()
    if (
        latest is not None
        and str(latest.version) == request.form.get("base_version")
        and (normalised(draft) == normalised(latest.document))
    ):
        return redirect(url_for("admin.console", saved=f"No change: version {latest.version} stays live."))
    try:
        base = int(request.form.get("base_version", "0"))
        saved = state().configs.save(draft, base_version=base, author=g.admin_user, comment=comment)
    except (StaleVersion, ValueError):
        latest = state().configs.latest()
        context["errors"] = {"base_version": "Someone saved a newer version while you were editing. Your draft is "
                             "kept below; review the differences and save again."}  # fmt: skip
        context["live"] = latest
        if latest is not None:
            context["diff"] = yaml_diff(latest.document, draft, f"live (v{latest.version})", "draft") or None
        return render_template("admin/console.html", values=values, **context), 409
    return redirect(url_for("admin.console", saved=f"Saved version {saved.version}."))


@bp.get("/admin/history")
def history() -> Any:
    if current_role() is None:
        return redirect(url_for("admin.login"))
    role = require("viewer")
    versions = state().configs.history()
    notes = {v.version: obsolete_notes(v.document) for v in versions}
    return render_template("admin/history.html", versions=versions, notes=notes, role=role)


@bp.post("/admin/history/<int:version>/restore")
def history_restore(version: int) -> Any:
    require("editor")
    saved = restore(version)
    return redirect(url_for("admin.console", saved=f"Restored version {version} as version {saved.version}."))


# --- feedback dashboard (issue #14) ----------------------------------------------------------------------------


def topic(rule: str) -> str:
    """The human name of a card (its source.topic.display), for tables a clinician or admin reads."""
    entry = SOURCES.get(rule)
    return entry[1] if entry else rule


def chosen_rule() -> str | None:
    rule = request.args.get("rule") or None
    return rule if rule is None or rule in SOURCES else None


@bp.get("/admin/feedback")
def feedback_dashboard() -> Any:
    if current_role() is None:
        return redirect(url_for("admin.login"))
    role = require("viewer")
    rows = state().store.feedback_report()
    rule = chosen_rule()
    return render_template("admin/feedback.html", role=role, rows=rows, topic=topic, rule=rule,
                           weeks=state().store.feedback_weekly(rule))  # fmt: skip


@bp.get("/admin/feedback.svg")
def feedback_chart() -> Response:
    require("viewer")
    rule = chosen_rule()
    svg = weekly_chart_svg(state().store.feedback_weekly(rule), topic(rule) if rule else "all cards")
    return Response(svg, mimetype="image/svg+xml")


@bp.get("/admin/feedback.csv")
def feedback_csv() -> Response:
    """Per rule and ISO week: cards shown, final outcomes, cards snoozed (no patient data)."""
    require("viewer")
    store = state().store
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rule", "week", "shown", "accepted", "overridden", "snoozed"])
    weekly = store.feedback_weekly_by_rule()
    for row in store.feedback_report():
        for week in weekly.get(row["rule"], []):
            writer.writerow([row["rule"], week["week"], week["shown"], week["accepted"], week["overridden"],
                             week["snoozed"]])  # fmt: skip
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=ckd-cds-feedback.csv"})  # fmt: skip


def weekly_chart_svg(weeks: list[dict[str, Any]], title: str) -> str:
    """A server-side SVG (matplotlib): cards shown, accepted, overridden and snoozed per week."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [w["week"] for w in weeks]
    for key, colour in (("shown", "#4a6fa5"), ("accepted", "#2e8b57"), ("overridden", "#c0504d"),
                        ("snoozed", "#999999")):  # fmt: skip
        ax.plot(labels, [w[key] for w in weeks], marker="o", label=key, color=colour)
    ax.set_title(f"Cards per week: {title}")
    ax.set_xlabel("week (Monday)")
    ax.set_ylabel("cards")
    ax.legend(loc="upper left", fontsize="small")
    ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    if not weeks:
        ax.text(0.5, 0.5, "no cards yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    return buffer.getvalue()
