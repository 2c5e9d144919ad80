"""The drug table (renal dosing spec RD-4, RD-10.2): shipped rows, the site's overlays, validation, linked thresholds.

The shipped table is `config/renal_dosing.yaml` (the spec's Appendix A, normative). A site changes it only through the
admin configuration's `renal_dosing.drugs` (versioned and audited with the thresholds): each key given for a row
replaces the shipped value; a new row id adds a row after the shipped ones. The merged table is validated by
`config/renal_dosing.schema.json` and the band-partition rule of RD-4.1 (`table_problems`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
TABLE_PATH = CONFIG_DIR / "renal_dosing.yaml"
SCHEMA_PATH = CONFIG_DIR / "renal_dosing.schema.json"
EPS = 1e-9  # RD-3.6: comparison tolerance


class InvariantError(RuntimeError):
    """An internal invariant broken: a bug in this code, never bad input (bad input is refused earlier)."""


ACTIONS_WITH_DOSE = frozenset({"ok", "reduce"})


def cap_per_day(per_day: float | None, per_week: float | None) -> float | None:
    """A band's or entry's maximum as mg per day (a weekly maximum / 7), or None."""
    if per_day is not None:
        return per_day
    return per_week / 7 if per_week is not None else None


def cap_text(per_day: float | None, per_week: float | None) -> str:
    """{cap} of RD-7.3: "700 mg/day" or "0.6 mg/week"."""
    return f"{number(per_day)} mg/day" if per_day is not None else f"{number(per_week or 0)} mg/week"


@dataclass(frozen=True, slots=True)
class Regimen:
    dose_mg: float
    per_day: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    id: str
    min: float
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = False
    action: str
    regimen: Regimen | None = None
    max_mg_per_day: float | None = None
    max_mg_per_week: float | None = None
    min_mg_per_day: float | None = None
    recommended: str | None = None
    when: str | None = None  # "new", "continuing" or None (both)

    def contains(self, x: float) -> bool:
        """RD-3.6: "x ≥ b" is x ≥ b − ε, "x > b" is x > b + ε, and so on; nothing is rounded."""
        low = x >= self.min - EPS if self.min_inclusive else x > self.min + EPS
        if not low:
            return False
        if self.max is None:
            return True
        return x <= self.max + EPS if self.max_inclusive else x < self.max - EPS

    def applies(self, continuing: bool) -> bool:
        return self.when is None or (self.when == "continuing") == continuing

    @property
    def cap_per_day(self) -> float | None:
        return cap_per_day(self.max_mg_per_day, self.max_mg_per_week)

    def cap_text(self) -> str:
        return cap_text(self.max_mg_per_day, self.max_mg_per_week)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """What applies on dialysis, or with an AKI-flagged creatinine (`dialysis`, `aki` of RD-4.1)."""

    action: str
    recommended: str | None = None
    max_mg_per_day: float | None = None
    max_mg_per_week: float | None = None
    min_mg_per_day: float | None = None

    @property
    def cap_per_day(self) -> float | None:
        return cap_per_day(self.max_mg_per_day, self.max_mg_per_week)

    def cap_text(self) -> str:
        return cap_text(self.max_mg_per_day, self.max_mg_per_week)


@dataclass(frozen=True, slots=True)
class Alternative:
    rxcui: str
    name: str
    instructions: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    label: str
    url: str
    evidence: str
    jurisdiction: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    id: str
    enabled: bool
    ingredients: tuple[str, ...]
    rxcui: tuple[str, ...]
    measure: str
    weight: str  # "site" or "actual"
    indication: str | None
    anticoagulant: bool
    exclude_forms: tuple[str, ...]
    min_age: float | None
    non_af_regimens: tuple[Regimen, ...]
    bands: tuple[Band, ...]
    dialysis: Entry
    aki: Entry | None
    scr_max_age_days: int | None
    alternatives: tuple[Alternative, ...]
    source: Source
    topic: str

    def bands_for(self, continuing: bool) -> list[Band]:
        return sorted((b for b in self.bands if b.applies(continuing)), key=lambda b: (b.min, not b.min_inclusive))

    def band_of(self, value: float, continuing: bool) -> Band | None:
        return next((b for b in self.bands_for(continuing) if b.contains(value)), None)

    def is_floor(self, band: Band, continuing: bool) -> bool:
        """RD-6.5 (c): an avoid or contraindicated band below every dose band of the same new/continuing state."""
        if band.action not in ("avoid", "contraindicated") or band.max is None:
            return False
        dose_bands = [b for b in self.bands_for(continuing) if b.action in ACTIONS_WITH_DOSE]
        return all(b.min >= band.max - EPS for b in dose_bands)


@dataclass(frozen=True, slots=True)
class DrugTable:
    """The merged table, built once per configuration; what every order's reading asks of it is worked out here."""

    version: str
    rows: tuple[Row, ...]  # table order
    enabled: tuple[Row, ...] = field(init=False)
    _names: tuple[str, ...] = field(init=False)
    _by_code: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        enabled = tuple(r for r in self.rows if r.enabled)
        names = {i for r in enabled for i in r.ingredients}
        by_code: dict[str, str] = {}
        for r in self.rows:
            if len(r.rxcui) == len(r.ingredients):
                by_code.update(zip(r.rxcui, r.ingredients, strict=True))
            elif len(r.ingredients) == 1:
                by_code.update({c: r.ingredients[0] for c in r.rxcui})
        object.__setattr__(self, "enabled", enabled)
        object.__setattr__(self, "_names", tuple(sorted(names, key=lambda n: (-len(n), n))))
        object.__setattr__(self, "_by_code", by_code)

    def ingredient_names(self) -> tuple[str, ...]:
        """Every ingredient of an enabled row, longest first (for whole-word name matching)."""
        return self._names

    def ingredient_of_code(self) -> dict[str, str]:
        """RD-4.1 `rxcui`: an ingredient (IN) code of a row -> its ingredient (the row's lists are in the same order
        when they have the same length; otherwise a code names the row's only ingredient)."""
        return self._by_code


def number(x: float) -> str:
    """Shortest decimal: 5, 2.5, 0.6, 1000 (RD-7.3)."""
    if not math.isfinite(x) or abs(x) >= 1e12:
        return f"{x:.6g}"
    return f"{x:.6g}" if x != int(x) else str(int(x))


# --- documents -----------------------------------------------------------------------------------------------------


@cache
def _shipped_text() -> str:
    return TABLE_PATH.read_text(encoding="utf-8")


def shipped_document() -> dict[str, Any]:
    """The shipped table as a mapping (a fresh copy each call)."""
    loaded: dict[str, Any] = yaml.safe_load(_shipped_text())
    return loaded


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def merged_document(overlays: dict[str, Any] | None) -> dict[str, Any]:
    """RD-10.2: each key given for a row replaces the shipped value (`bands`, `dialysis`, `aki`, `source`,
    `alternatives` as a whole); an unknown row id is a new row after the shipped ones."""
    doc = shipped_document()
    for row_id, overlay in (overlays or {}).items():
        if not isinstance(overlay, dict):
            doc["drugs"][row_id] = overlay  # the schema reports it
            continue
        base = doc["drugs"].get(row_id, {})
        doc["drugs"][row_id] = {**base, **copy.deepcopy(overlay)}
    return doc


def partition_problems(row_id: str, bands: list[dict[str, Any]]) -> list[str]:
    """RD-4.1: for `new` and for `continuing`, the bands that apply partition [0, ∞)."""
    problems = []
    for state in ("new", "continuing"):
        chosen = sorted((b for b in bands if b.get("when") in (None, state)), key=lambda b: b["min"])
        where = f"renal_dosing.drugs.{row_id}.bands"
        if not chosen:
            problems.append(f"{where}: no band applies to {state} treatment")
            continue
        first = chosen[0]
        if first["min"] != 0 or not first.get("min_inclusive", True):
            problems.append(f"{where}: the first band ({first['id']}) must start at 0 inclusive ({state} treatment)")
        for prev, nxt in itertools.pairwise(chosen):
            if prev.get("max") is None:
                problems.append(f"{where}: band {prev['id']} has no max but is followed by {nxt['id']}")
                break
            if nxt["min"] != prev["max"] or nxt.get("min_inclusive", True) == prev.get("max_inclusive", False):
                problems.append(f"{where}: band {nxt['id']} must start where {prev['id']} ends, with the "
                                f"complementary inclusivity ({state} treatment)")  # fmt: skip
        if chosen[-1].get("max") is not None:
            problems.append(f"{where}: the last band ({chosen[-1]['id']}) must have no max ({state} treatment)")
        ids = [b["id"] for b in bands]
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: band ids must be unique")
    return sorted(set(problems), key=problems.index)


def table_problems(doc: Any) -> list[str]:
    """Every problem of a merged table: its JSON Schema, then the band partitions (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema())
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path)
        where = "renal_dosing." + path if path.startswith("drugs") else "renal_dosing table"
        problems.append(f"{where}: {error.message}")
    if problems:
        return problems
    for row_id, row in doc["drugs"].items():
        problems += partition_problems(row_id, row["bands"])
    return problems


# --- typed rows ----------------------------------------------------------------------------------------------------


def _band(b: dict[str, Any]) -> Band:
    regimen = b.get("regimen")
    return Band(
        id=b["id"], min=float(b["min"]), max=None if b.get("max") is None else float(b["max"]),
        min_inclusive=b.get("min_inclusive", True), max_inclusive=b.get("max_inclusive", False), action=b["action"],
        regimen=Regimen(float(regimen["dose_mg"]), float(regimen["per_day"])) if regimen else None,
        max_mg_per_day=b.get("max_mg_per_day"), max_mg_per_week=b.get("max_mg_per_week"),
        min_mg_per_day=b.get("min_mg_per_day"), recommended=b.get("recommended"), when=b.get("when"),
    )  # fmt: skip


def _entry(e: dict[str, Any] | None) -> Entry | None:
    if e is None:
        return None
    return Entry(action=e["action"], recommended=e.get("recommended"), max_mg_per_day=e.get("max_mg_per_day"),
                 max_mg_per_week=e.get("max_mg_per_week"), min_mg_per_day=e.get("min_mg_per_day"))  # fmt: skip


def _row(row_id: str, r: dict[str, Any]) -> Row:
    dialysis = _entry(r["dialysis"])
    if dialysis is None:
        raise InvariantError("dialysis is missing")
    return Row(
        id=row_id, enabled=r["enabled"], ingredients=tuple(r["ingredients"]), rxcui=tuple(r.get("rxcui", ())),
        measure=r["measure"], weight=r.get("weight", "site"), indication=r.get("indication"),
        anticoagulant=r.get("anticoagulant", False), exclude_forms=tuple(r.get("exclude_forms", ())),
        min_age=r.get("min_age"),
        non_af_regimens=tuple(Regimen(float(x["dose_mg"]), float(x["per_day"])) for x in r.get("non_af_regimens", ())),
        bands=tuple(_band(b) for b in r["bands"]), dialysis=dialysis, aki=_entry(r.get("aki")),
        scr_max_age_days=r.get("scr_max_age_days"),
        alternatives=tuple(Alternative(a["rxcui"], a["name"], a["instructions"]) for a in r.get("alternatives", ())),
        source=Source(label=r["source"]["label"], url=r["source"]["url"], evidence=r["source"]["evidence"],
                      jurisdiction=r["source"].get("jurisdiction", "")),
        topic=r["topic"],
    )  # fmt: skip


def link_thresholds(doc: dict[str, Any], metformin_stop: float, metformin_reduce: float, sglt2i_min: float) -> None:
    """RD-4.2: the metformin and SGLT2i rows take their thresholds from the clinical spec's keys, so that patient-view
    and order-time cards never disagree. Band ids keep their names when a site moves the numbers."""
    links = {
        "metformin": {"lt30": {"max": metformin_stop}, "30to45_new": {"min": metformin_stop, "max": metformin_reduce},
                      "30to45": {"min": metformin_stop, "max": metformin_reduce}, "ge45": {"min": metformin_reduce}},
        "sglt2i": {"lt20_new": {"max": sglt2i_min}, "lt20": {"max": sglt2i_min}, "ge20": {"min": sglt2i_min}},
    }  # fmt: skip
    for row_id, bands in links.items():
        row = doc["drugs"].get(row_id)
        if not isinstance(row, dict):
            continue
        for band in row.get("bands", []):
            band.update(bands.get(band.get("id"), {}))


def build_table(doc: dict[str, Any]) -> DrugTable:
    """Typed rows from a valid merged document (table_problems(doc) is empty)."""
    return DrugTable(str(doc["table_version"]), tuple(_row(k, v) for k, v in doc["drugs"].items()))
