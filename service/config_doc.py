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
`krt_planning.max_egfr` ≤ `nephrology_referral.max_egfr`, `sglt2i.min_egfr` ≤ `sglt2i.low_acr_max_egfr`, every
suggested agent is a known ingredient with a starting dose, and `service.timezone` is a real IANA zone.

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
| `CKD_CDS_HOST`, `CKD_CDS_PORT` | `127.0.0.1`, `8080` | where `ckd-cds serve` listens |
| `CKD_CDS_MAX_CARDS` | `5` | cards per response, most urgent first; the rest are counted |
| `CKD_CDS_MAX_BODY_BYTES` | `10485760` | request body cap (413 above) |
| `CKD_CDS_FHIR_CONNECT_TIMEOUT` | `1.0` s | per FHIR call, capped by the time left |
| `CKD_CDS_FHIR_READ_TIMEOUT` | `2.0` s | per FHIR call, capped by the time left |
| `CKD_CDS_FHIR_BUDGET` | `3.0` s | total time for the FHIR fallback, from the request's arrival |
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
        return "list of ingredient names"
    if prop.get("type") == "object":
        return "agent → text"
    return "text"


def render() -> str:
    rows = []
    for section, sec in schema()["properties"].items():
        for key, prop in sec["properties"].items():
            default = prop.get("default", "")
            default_text = ", ".join(default) if isinstance(default, list) else str(default).lower()
            rows.append(
                f"| `{section}.{key}` | {default_text} | {allowed(prop)} | {prop.get('x-unit', '')} | "
                f"{prop['description']} | {prop['x-source']} |"
            )
    return HEADER + "\n".join(rows) + "\n" + FOOTER


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
