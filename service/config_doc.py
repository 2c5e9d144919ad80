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
real IANA zone. `<rule>` in `cards.rules` is one of the rule ids of docs/clinical.md, or `staging`.

The staging constants (eGFR 60, 90 days, the AKI windows, the category cut-offs) are fixed, so that an assessment
can be reproduced exactly.

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
| `CKD_CDS_SERVICE_CONFIG` | none | security file: JWT issuers, public URLs, CORS ([integration.md](integration.md)) |
| `CKD_CDS_DATABASE_URL` | `sqlite:///var/ckd-cds.db` | the store; `postgresql+psycopg://…` for PostgreSQL |
| `CKD_CDS_HOST`, `CKD_CDS_PORT` | `127.0.0.1`, `8080` | where `ckd-cds serve` listens |
| `CKD_CDS_MAX_BODY_BYTES` | `10485760` | request body cap (413 above) |
| `CKD_CDS_FHIR_POOL` | `8` | parallel FHIR queries per worker |
| `CKD_CDS_OPEN_FHIR_SERVERS` | empty | development only: FHIR bases read without `fhirAuthorization` |
| `GUNICORN_WORKERS`, `GUNICORN_THREADS` | `2`, `4` | gunicorn `gthread` workers (see `gunicorn.conf.py`) |
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
