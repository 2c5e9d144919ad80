"""docker-compose.yml is validated against the Compose specification schema (no Docker engine runs here)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_schema() -> dict[str, object]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, object] = json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(compose_schema()).validate(document)
    services = document["services"]
    assert {"ckd-cds", "fhir", "postgres"} <= set(services)
    assert ":" in services["fhir"]["image"]
    assert not services["fhir"]["image"].endswith(":latest")
    assert "healthcheck" in services["fhir"]
    assert services["ckd-cds"]["environment"]["CKD_CDS_PROFILE"] == "production"


def test_a_broken_compose_file_is_rejected() -> None:
    broken = {"services": {"ckd-cds": {"image": "x", "ports": {"not": "a list"}}}}
    try:
        jsonschema.Draft7Validator(compose_schema()).validate(broken)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema accepted an invalid compose file")


def test_configuration_doc_is_generated_from_the_schema() -> None:
    from service.config_doc import render

    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == render()


def test_card_ids_match_the_schema() -> None:
    from service.clinical.rules import RuleId
    from service.clinical.thresholds import CARD_IDS
    from service.config import schema

    assert set(schema()["properties"]["cards"]["properties"]["rules"]["properties"]) == set(CARD_IDS)
    assert {r.value for r in RuleId} | {"staging"} == set(CARD_IDS)
