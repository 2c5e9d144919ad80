"""Threshold configuration: YAML validated against `config/schema.json`, then semantic checks (spec §7.5)."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

from service.clinical.medications import INGREDIENTS
from service.clinical.rules import SAFETY_RULES
from service.clinical.thresholds import Thresholds, thresholds_from_dict, thresholds_to_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SCHEMA_PATH = CONFIG_DIR / "schema.json"


class ConfigError(ValueError):
    """The configuration is invalid; the message is one line naming the key."""


# Keys that earlier releases accepted and the current clinical spec removed: a stored version or a file that carries
# one still loads, without it, and says so (the console history, `ckd-cds config validate`).
OBSOLETE_KEYS: dict[tuple[str, str], str] = {
    ("trajectory", "lookback_days"): "clinical spec 2.0 (S18) fixes the trend window at 3 years",
    ("recency", "max_egfr_age_days"): "clinical spec 2.1 (§7.1) withdrew it: a fresh eGFR follows the KDIGO "
    "monitoring interval of the patient's stage plus monitoring_due.grace_days",
}
SAFETY_NOTE = "a safety card cannot be switched off or downgraded (clinical spec 2.1 §7.5)"


def safety_downgrades(data: Any) -> list[str]:
    """[2.1] §7.5: the dotted keys of a document that switch a safety card off or lower its indicator (2.0 allowed
    `hyperkalaemia.enabled` and `dual_ras.enabled` false). A new configuration carrying one is refused; a stored
    version still loads, with the value ignored."""
    if not isinstance(data, dict):
        return []
    found = [f"{section}.enabled" for section in ("hyperkalaemia", "dual_ras")
             if isinstance(data.get(section), dict) and data[section].get("enabled") is False]  # fmt: skip
    cards = data.get("cards")
    rules = cards.get("rules") if isinstance(cards, dict) else None
    if isinstance(rules, dict):
        for rule in sorted(SAFETY_RULES & rules.keys()):
            values = rules[rule]
            if not isinstance(values, dict):
                continue
            if values.get("enabled") is False:
                found.append(f"cards.rules.{rule}.enabled")
            if values.get("indicator") in ("info", "warning"):
                found.append(f"cards.rules.{rule}.indicator")
    return found


def obsolete_notes(data: Any) -> list[str]:
    """One line per obsolete key, and per ignored safety-card downgrade, present in a configuration document."""
    if not isinstance(data, dict):
        return []
    notes = [f"{section}.{key} is obsolete and ignored: {why}" for (section, key), why in OBSOLETE_KEYS.items()
             if isinstance(data.get(section), dict) and key in data[section]]  # fmt: skip
    return notes + [f"{key} is ignored: {SAFETY_NOTE}" for key in safety_downgrades(data)]


def without_obsolete(data: Any) -> Any:
    """The document without obsolete keys and safety-card downgrades (and without a section they leave empty)."""
    if not isinstance(data, dict) or not obsolete_notes(data):
        return data
    out = copy.deepcopy(data)
    for section, key in OBSOLETE_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
            if not out[section]:
                del out[section]
    for key in safety_downgrades(data):
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        del node[last]
    return out


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_data(data: Any) -> Thresholds:
    """Schema validation, then checks a schema cannot express; raises ConfigError with the first problem."""
    data = {} if data is None else without_obsolete(data)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise ConfigError(f"config {_path(first)}: {first.message}")
    for problem in semantic_problems(data):
        raise ConfigError(f"config {problem}")
    return thresholds_from_dict(data)


def validation_errors(data: Any) -> dict[str, str]:
    """Every problem, keyed by dotted field path (for inline errors in the admin page); empty when valid. [2.1] A new
    configuration that switches a safety card off or lowers its indicator is refused, naming the key."""
    downgrades = safety_downgrades(data)
    if downgrades:
        return {key: SAFETY_NOTE for key in downgrades}
    data = {} if data is None else without_obsolete(data)
    validator = jsonschema.Draft202012Validator(schema())
    errors: dict[str, str] = {}
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        path = _path(error)
        if error.validator == "additionalProperties":
            path = f"{path}.{error.message.split(chr(39))[1]}" if path != "(top level)" else error.message.split("'")[1]
        errors.setdefault(path, error.message)
    if errors:
        return errors
    for problem in semantic_problems(data):
        path, _, message = problem.partition(": ")
        errors.setdefault(path, message)
    return errors


def semantic_problems(data: dict[str, Any]) -> list[str]:
    """Ordered thresholds, known agents with doses, and a real time zone."""
    t = thresholds_from_dict(without_obsolete(data))
    problems = []
    if t.metformin.stop_below_egfr > t.metformin.reduce_below_egfr:
        problems.append("metformin.stop_below_egfr: must not exceed metformin.reduce_below_egfr")
    if t.krt_planning.max_egfr > t.nephrology_referral.max_egfr:
        problems.append("krt_planning.max_egfr: must not exceed nephrology_referral.max_egfr")
    if t.sglt2i.min_egfr > t.sglt2i.low_acr_max_egfr:
        problems.append("sglt2i.min_egfr: must not exceed sglt2i.low_acr_max_egfr")
    for section in ("rasi", "sglt2i", "finerenone", "glp1ra", "statin"):
        sec = getattr(t, section)
        for agent in sec.suggested_agents:
            if agent not in INGREDIENTS:
                problems.append(f"{section}.suggested_agents: unknown ingredient {agent!r}")
            elif agent not in sec.starting_dose:
                problems.append(f"{section}.starting_dose: no dose for {agent!r}")
    if max(t.fhir.connect_timeout_s, t.fhir.read_timeout_s) >= t.fhir.budget_s:
        problems.append("fhir.budget_s: must exceed the connect and read timeouts")
    from service.fhir.adapter import OBSERVATION_READERS

    for i, site in enumerate(t.site_codes):
        if site.loinc not in OBSERVATION_READERS:
            problems.append(f"site_codes.{i}.loinc: {site.loinc} is not a code the engine reads")
    from service.clinical.dosing.config import dosing_table_problems

    problems += dosing_table_problems(t)
    try:
        ZoneInfo(t.service.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"service.timezone: unknown time zone {t.service.timezone!r}")
    return problems


def load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config is not valid YAML{where}") from None


def read_config_file(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc.__class__.__name__}") from None
    return load_yaml(text)


def load_thresholds(path: str | Path | None) -> Thresholds:
    """Read and validate a YAML file; None gives the spec's defaults."""
    if path is None:
        return Thresholds()
    return validate_data(read_config_file(path))


# Sections added by a release after configurations were in use: left out of the hash while they hold their defaults,
# so that an upgrade does not change the version of a configuration nobody edited (renal_dosing: issue #22).
ADDED_SECTIONS = ("renal_dosing",)


def config_document(thresholds: Thresholds) -> dict[str, Any]:
    """The configuration as a document (the store's and `config show`'s form), without the sections a later release
    added while they hold their defaults."""
    content: dict[str, Any] = thresholds_to_dict(thresholds)
    defaults = thresholds_to_dict(Thresholds())
    for section in ADDED_SECTIONS:
        if content.get(section) == defaults.get(section):
            content.pop(section, None)
    return content


def config_version(thresholds: Thresholds) -> str:
    """A content hash that identifies a configuration (stamped on cards and audit records)."""
    content = config_document(thresholds)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
