"""The drug table and engine settings in force for a configuration (renal dosing spec RD-4.2, RD-10).

The admin configuration's `renal_dosing` section (thresholds) holds the engine settings and the site's overlays of the
shipped table; the metformin and SGLT2i rows take their thresholds from the clinical keys (RD-4.2). Built once per
configuration content: a hot-reloaded configuration gets its own table on its first call.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from service.clinical.dosing.engine import Settings
from service.clinical.dosing.table import DrugTable, build_table, link_thresholds, merged_document, table_problems
from service.clinical.thresholds import Thresholds


def _key(t: Thresholds) -> str:
    return json.dumps([t.renal_dosing.drugs, t.metformin.stop_below_egfr, t.metformin.reduce_below_egfr,
                       t.sglt2i.min_egfr], sort_keys=True, default=str)  # fmt: skip


def merged(t: Thresholds) -> dict[str, Any]:
    doc = merged_document(t.renal_dosing.drugs)
    link_thresholds(doc, t.metformin.stop_below_egfr, t.metformin.reduce_below_egfr, t.sglt2i.min_egfr)
    return doc


@lru_cache(maxsize=16)
def _table(key: str) -> tuple[DrugTable | None, tuple[str, ...]]:
    drugs, stop, reduce, sglt2i = json.loads(key)
    doc = merged_document(drugs)
    link_thresholds(doc, stop, reduce, sglt2i)
    problems = table_problems(doc)
    return (None, tuple(problems)) if problems else (build_table(doc), ())


def dosing_table_problems(t: Thresholds) -> list[str]:
    """Problems of the merged drug table (configuration errors: `serve` refuses to start, the console to save)."""
    return list(_table(_key(t))[1])


def dosing_table(t: Thresholds) -> DrugTable:
    table, problems = _table(_key(t))
    if table is None:  # validated configurations never get here
        raise ValueError(f"invalid renal dosing table: {problems[0]}")
    return table


def engine_settings(t: Thresholds) -> Settings:
    r = t.renal_dosing
    return Settings(weight_max_age_days=r.weight_max_age_days, height_max_age_days=r.height_max_age_days,
                    scr_max_age_days=r.scr_max_age_days, crcl_weight=r.crcl.weight,
                    scr_floor_mg_dl=r.crcl.scr_floor_mg_dl, suggestions=r.suggestions)  # fmt: skip
