"""Generate docs/configuration.md from config/schema.json, so the page cannot drift from the schema."""

from __future__ import annotations

import sys
from typing import Any

from service.config import schema

HEADER = """# Configuration

## Thresholds (clinical spec §7.5)

A YAML file validated against `config/schema.json` at start-up (`ckd-cds serve --config PATH` or `CKD_CDS_CONFIG`)
and by `ckd-cds config validate FILE`; `ckd-cds config show [--config PATH]` prints the configuration in force and
its version. The dotted name `sglt2i.min_egfr` is the key `min_egfr` inside the mapping `sglt2i`. Missing keys take
the defaults below. An unknown key or a value outside its range is an error: exit status 2 for the CLI, and `serve`
refuses to start. Checks beyond the schema: `metformin.stop_below_egfr` ≤ `metformin.reduce_below_egfr`,
`krt_planning.max_egfr` ≤ `nephrology_referral.max_egfr`, `sglt2i.min_egfr` ≤ `sglt2i.low_acr_max_egfr`,
`fhir.connect_timeout_s` and `fhir.read_timeout_s` below `fhir.budget_s`, every suggested agent is a known
ingredient with a starting dose, every site code maps to a LOINC code the engine reads, and `service.timezone` is a
real IANA zone, and the merged renal dosing table (`renal_dosing.drugs` over `config/renal_dosing.yaml`) passes
`config/renal_dosing.schema.json` and partitions each row's bands ([dosing.md](dosing.md)). `<rule>` in
`cards.rules` is one of the rule ids of docs/clinical.md, or `staging`.

The staging constants (eGFR 60, 90 days, the AKI windows, the category cut-offs) are fixed, so that an assessment
can be reproduced exactly.

## Versions, the admin console and hot reload

The configuration in force lives in the service database, one row per version (author, time, comment, the whole
document and the diff against the previous version). On the first start the store is seeded with `CKD_CDS_CONFIG`
(or the defaults); after that, change it through the admin console (`/admin`) or its API, never by restarting.
Every worker (and every instance sharing the database) checks for a newer version at most once a second, so a saved
change is served everywhere within about a second. Every card (`extension["org.ckd-cds.rule"].configVersion`) and
every audit record carries the version label (`v7-1a2b3c4d`: number and content hash).

- **Console** (`/admin`): a form generated from this schema with units, ranges, descriptions and sources; "Check,
  show diff and preview" validates the draft (errors next to each field), shows the diff against the live version
  and the cards a demo patient (or a pasted FHIR Bundle) would get under the live and the draft configuration;
  "Save" needs a comment. History (`/admin/history`) shows every version with its diff and restores any of them
  (a restore is a new version). A save based on a version that is no longer live is refused (409) and the draft is
  kept on screen with the new differences.
- **API** (`/admin/api/…`): `GET config`, `POST config/validate` (dry run), `PUT config` with
  `{"document", "base_version", "comment"}` (409 when stale), `GET config/history`, `GET config/diff?from=&to=`,
  `POST config/restore/<version>`, `GET feedback-report`.
- **Who may do what:** console users come from `CKD_CDS_ADMIN_USERS`, JSON
  `{"name": {"role": "editor"|"viewer", "password_hash": "<werkzeug scrypt hash>"}}` (make one with
  `python -c 'from werkzeug.security import generate_password_hash as h; print(h("…"))'`). Editors change and restore;
  viewers read. API clients may use a bearer token whose SHA-256 is `CKD_CDS_ADMIN_TOKEN_SHA256` (editor). The EHR's JWT
  trust never opens the console. Sessions are signed cookies (`CKD_CDS_SECRET_KEY`, or a key generated once in the
  store and shared by all workers), HttpOnly, SameSite=Strict, Secure in production; every form carries a CSRF token;
  after 5 failed sign-ins from one address within 5 minutes further attempts get 429.
- `ckd-cds config show --live` prints the version in force; `ckd-cds config validate FILE` checks a file.

This page is generated from the schema (`python -m service.config_doc > docs/configuration.md`); a test keeps it
current.

| Key | Default | Allowed | Unit | Meaning | Source |
|---|---|---|---|---|---|
"""

FOOTER = """
## Service settings (environment)

| Variable | Default | Meaning |
|---|---|---|
| `CKD_CDS_PROFILE` | `development` | `production`: https-only `fhirServer`, no open FHIR fallback |
| `CKD_CDS_CONFIG` | none (spec defaults) | path of the thresholds YAML |
| `CKD_CDS_SERVICE_CONFIG` | none | security file: issuers, URLs, CORS, SMART apps ([integration.md](integration.md)) |
| `CKD_CDS_DATABASE_URL` | `sqlite:///var/ckd-cds.db` | the store; `postgresql+psycopg://…` for PostgreSQL |
| `CKD_CDS_ADMIN_USERS` | none | console users and roles (JSON, hashed passwords) |
| `CKD_CDS_ADMIN_TOKEN_SHA256` | none | SHA-256 of the admin API bearer token |
| `CKD_CDS_SECRET_KEY` | generated once in the store | signs admin session cookies |
| `CKD_CDS_HOST`, `CKD_CDS_PORT` | `127.0.0.1`, `8080` | where `ckd-cds serve` listens |
| `CKD_CDS_MAX_BODY_BYTES` | `10485760` | request body cap (413 above) |
| `CKD_CDS_FHIR_POOL` | `8` | parallel FHIR queries per worker and FHIR base |
| `CKD_CDS_FHIR_SERVERS` | empty | FHIR bases the fallback may call (comma-separated, matched on parsed URL parts) |
| `CKD_CDS_OPEN_FHIR_SERVERS` | empty | development only: FHIR bases read without `fhirAuthorization` |
| `CKD_CDS_TRUSTED_PROXIES` | `0` | reverse proxies whose `X-Forwarded-For` is believed (the Compose nginx: `1`) |
| `GUNICORN_WORKERS`, `_THREADS`, `_WORKER_CLASS` | `4`, `1`, `gthread` | worker model (docs/performance.md) |
"""


def allowed(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    if prop.get("type") == "boolean":
        return "true/false"
    if "minimum" in prop:
        return f"{prop['minimum']}–{prop['maximum']}"
    if prop.get("type") == "array":
        return "list of {system, code, loinc}" if "properties" in prop.get("items", {}) else "list of ingredient names"
    if prop.get("type") == "object" and "propertyNames" in prop:
        return "row id → row overlay ([dosing.md](dosing.md))"
    if prop.get("type") == "object":
        return "agent → text"
    return "text"


def row(name: str, prop: dict[str, Any]) -> str:
    default = prop.get("default", "")
    default_text = ", ".join(map(str, default)) if isinstance(default, list) else str(default).lower()
    return (
        f"| `{name}` | {default_text} | {allowed(prop)} | {prop.get('x-unit', '')} | "
        f"{prop.get('description', '')} | {prop.get('x-source', '')} |"
    )


def rows(prefix: str, props: dict[str, Any]) -> list[str]:
    out = []
    for key, prop in props.items():
        name = f"{prefix}{key}"
        if key == "rules" and prefix == "cards.":
            example = next(iter(prop["properties"].values()))["properties"]
            out += [row(f"cards.rules.<rule>.{k}", v) for k, v in example.items()]
        elif prop.get("type") == "object" and "properties" in prop:
            out += rows(f"{name}.", prop["properties"])
        else:
            out.append(row(name, prop))
    return out


def render() -> str:
    return HEADER + "\n".join(rows("", schema()["properties"])) + "\n" + FOOTER


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
