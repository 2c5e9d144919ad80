"""The admin form, generated from config/schema.json: one field per configurable key, with unit, range and source.

`fields()` describes the form; `document_from_form()` turns a submitted form back into a configuration document
(parse errors are reported per field, the schema then checks ranges); `form_values()` fills the form from a document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from werkzeug.datastructures import MultiDict

from service.config import schema


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    path: str  # dotted: sglt2i.min_egfr, cards.rules.statin.enabled, rasi.starting_dose.lisinopril
    section: str
    label: str
    kind: str  # boolean, integer, number, enum, list, text, site_codes
    description: str = ""
    unit: str = ""
    source: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # an empty box means null (e.g. a per-rule snooze that follows the default)
    default: Any = None  # shown when the document does not set the key (drug-table rows: the shipped value)

    @property
    def html_id(self) -> str:
        return "f-" + self.path.replace(".", "-")

    @property
    def step(self) -> str:
        return "1" if self.kind == "integer" else "any"


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "enum"
    kind = prop.get("type")
    if isinstance(kind, list):  # ["integer", "null"]: an optional number
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "array":
        return "site_codes" if "properties" in prop.get("items", {}) else "list"
    return str(kind) if kind in ("boolean", "integer", "number") else "text"


def _field(path: str, section: str, prop: dict[str, Any], label: str | None = None) -> Field:
    return Field(
        path=path, section=section, label=label or path.rsplit(".", 1)[-1].replace("_", " "), kind=_kind(prop),
        description=prop.get("description", ""), unit=prop.get("x-unit", ""), source=prop.get("x-source", ""),
        minimum=prop.get("minimum"), maximum=prop.get("maximum"), choices=tuple(str(c) for c in prop.get("enum", ())),
        optional=isinstance(prop.get("type"), list) and "null" in prop["type"], default=prop.get("default"),
    )  # fmt: skip


def fields(document: dict[str, Any]) -> list[Field]:
    """Every field, in schema order; starting doses follow the agents in `document`."""
    out: list[Field] = []
    for section, sec in schema()["properties"].items():
        if section == "site_codes":
            out.append(_field("site_codes", "site_codes", sec, "local codes (system|code = LOINC, one per line)"))
            continue
        for key, prop in sec["properties"].items():
            path = f"{section}.{key}"
            if key == "rules":
                for rule, rule_prop in prop["properties"].items():
                    for sub, sub_prop in rule_prop["properties"].items():
                        out.append(_field(f"{path}.{rule}.{sub}", section, sub_prop, f"{rule} {sub}"))
            elif section == "renal_dosing" and key == "crcl":
                out += [_field(f"{path}.{sub}", section, sub_prop, f"crcl {sub}")
                        for sub, sub_prop in prop["properties"].items()]  # fmt: skip
            elif section == "renal_dosing" and key == "drugs":
                out += drug_fields(prop)
            elif key == "starting_dose":
                agents = document.get(section, {}).get("suggested_agents", [])
                out += [_field(f"{path}.{a}", section, {"type": "string", "description": prop["description"],
                                                         "x-source": prop["x-source"]}, f"starting dose: {a}")
                        for a in agents]  # fmt: skip
            else:
                out.append(_field(path, section, prop))
    return out


def band_text(band: dict[str, Any]) -> str:
    low = ("≥ " if band.get("min_inclusive", True) else "> ") + f"{band['min']:g}"
    high = (
        "" if band.get("max") is None else (" and ≤ " if band.get("max_inclusive") else " and < ") + f"{band['max']:g}"
    )
    when = f" ({band['when']} treatment)" if band.get("when") else ""
    return f"{low}{high}{when}: {band['action']}" + (f", {band['recommended']}" if band.get("recommended") else "")


def drug_fields(prop: dict[str, Any]) -> list[Field]:
    """The drug table for a pharmacist's review (renal dosing RD-10.2): the site's overlays as YAML, then one switch
    per shipped row, labelled with its evidence grade and showing its source and bands."""
    from service.clinical.dosing.table import shipped_document

    out = [Field(path="renal_dosing.drugs", section="renal_dosing", label="drug table overlays (YAML, by row id)",
                 kind="yaml", description=prop.get("description", ""), source=prop.get("x-source", ""))]  # fmt: skip
    for row_id, row in shipped_document()["drugs"].items():
        source = row["source"]
        bands = "; ".join(band_text(b) for b in row["bands"])
        out.append(Field(
            path=f"renal_dosing.drugs.{row_id}.enabled", section="renal_dosing", kind="boolean",
            label=f"{row_id} enabled (evidence: {source['evidence'].replace('_', ' ')})",
            description=f"{row['topic']}: {row['measure']} bands: {bands}; on dialysis: {row['dialysis']['action']}.",
            source=f"{source['label']} ({source['url']})", default=row["enabled"],
        ))  # fmt: skip
    return out


def get_path(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = document
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # a malformed value from the YAML overlays: left for the schema to report
    node[parts[-1]] = value


def form_values(document: dict[str, Any], all_fields: list[Field]) -> dict[str, str]:
    values: dict[str, str] = {}
    for f in all_fields:
        value = get_path(document, f.path)
        if value is None:
            value = f.default
        if f.kind == "yaml":
            overlays = {row: {k: v for k, v in (o or {}).items() if k != "enabled"} for row, o in (value or {}).items()}
            kept = {row: o for row, o in overlays.items() if o}
            values[f.path] = yaml.safe_dump(kept, sort_keys=False, allow_unicode=True) if kept else ""
        elif f.kind == "boolean":
            values[f.path] = "true" if value is not False else "false"
        elif f.kind == "list":
            values[f.path] = ", ".join(value or [])
        elif f.kind == "site_codes":
            values[f.path] = "\n".join(f"{s['system']}|{s['code']} = {s['loinc']}" for s in value or [])
        else:
            values[f.path] = "" if value is None else str(value)
    return values


def _parse(f: Field, raw: str) -> Any:
    raw = raw.strip()
    if f.kind == "boolean":
        return raw == "true"
    if f.kind in ("integer", "number"):
        if raw == "" and f.optional:
            return None
        if raw == "":
            raise ValueError("a value is required")
        number = float(raw)
        if f.kind == "integer":
            if not number.is_integer():
                raise ValueError("must be a whole number")
            return int(number)
        return int(number) if number.is_integer() and f.path.endswith("variables") else number
    if f.kind == "enum":
        return int(raw) if raw.isdigit() else raw
    if f.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    if f.kind == "site_codes":
        return [_site_code(line) for line in raw.splitlines() if line.strip()]
    if f.kind == "yaml":
        try:
            loaded = yaml.safe_load(raw) if raw else {}
        except yaml.YAMLError:
            raise ValueError("is not valid YAML") from None
        if not isinstance(loaded, dict):
            raise ValueError("must be a mapping of row id to the keys it changes")
        return loaded
    return raw


def _site_code(line: str) -> dict[str, str]:
    left, sep, loinc = line.partition("=")
    system, bar, code = left.strip().rpartition("|")
    if not (sep and bar and system and code):
        raise ValueError(f"line {line.strip()!r} is not system|code = LOINC")
    return {"system": system, "code": code.strip(), "loinc": loinc.strip()}


def document_from_form(form: MultiDict[str, str], all_fields: list[Field]) -> tuple[dict[str, Any], dict[str, str]]:
    """(document, parse errors by path). Checkboxes post a hidden "false" then "true" when ticked: the last wins."""
    document: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in all_fields:
        submitted = form.getlist(f.path)
        if not submitted:
            continue
        try:
            set_path(document, f.path, _parse(f, submitted[-1]))
        except ValueError as exc:
            known = ("line", "required", "YAML", "mapping")
            errors[f.path] = str(exc) if any(k in str(exc) for k in known) else "must be a number"
    return document, errors
