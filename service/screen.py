"""`ckd-cds screen SOURCE --as-of DATE`: population mode (issues #7, #16).

The work runs on Dask (`service.population.engine`): an embedded LocalCluster by default, or a given scheduler.
This module is the front: it starts or joins the cluster, writes the registry (partitioned Parquet from the
workers, or one CSV for small runs), the counts and a PNG, and reports progress on stderr (stdout carries the one
JSON object of the CLI contract).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from service.clinical.thresholds import Thresholds
from service.population.engine import (
    REGISTRY_COLUMNS,
    ScreenError,
    ScreenStats,
    connect,
    record_counts,
    registry,
    registry_row,
)

STAGE_ORDER = ["G1", "G2", "G3a", "G3b", "G4", "G5", "unstaged"]
SUMMARY_COLUMNS = ["deceased", "ckd", "reason", "g_stage", "care_gaps", "recommendations"]
__all__ = ["ScreenError", "registry_row", "run", "screen"]


def screen(
    source: Path,
    as_of: date,
    thresholds: Thresholds | None = None,
    *,
    scheduler: str | None = None,
    workers: int = 2,
) -> tuple[pd.DataFrame, float]:
    """(registry, seconds), the whole registry in memory, sorted by patient: for tests and small runs."""
    _client, close = connect(scheduler, workers)  # the default client while open: compute() runs on it
    try:
        started = time.perf_counter()
        screening = registry(source, as_of, thresholds or Thresholds(), ScreenStats())
        frame = screening.registry.compute()
        seconds = time.perf_counter() - started
    finally:
        close()
    if frame.empty:
        raise ScreenError(f"no patients found in {source}")
    return frame.sort_values("patient", kind="stable").reset_index(drop=True)[REGISTRY_COLUMNS], seconds


def run(
    source: Path | str, as_of: date, thresholds: Thresholds, out: Path, *, scheduler: str | None = None,
    workers: int = 2, stage: Path | None = None,
) -> tuple[dict[str, Any], ScreenStats, float]:  # fmt: skip
    """Write the registry to `out` (.parquet: a directory of Parquet parts written by the workers; .csv: one file)
    and return the counts, what was left out, and the seconds taken."""
    client, close = connect(scheduler, workers)
    stats = ScreenStats()
    # written aside (same suffix: it chooses the format), then swapped in whole
    final, out = out, out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    try:
        started = time.perf_counter()
        screening = registry(source, as_of, thresholds, stats, stage)
        names = list(screening.counts)
        # one compute for the registry and every count: the export is parsed and shuffled once
        if out.suffix == ".parquet":
            job = screening.registry.to_parquet(str(out), write_index=False, compute=False)
            futures = client.compute([job, *screening.counts.values(), *screening.extra])
            wait_with_progress(client, futures[0])
            record_counts(stats, names, [f.result() for f in futures[1 : 1 + len(names)]])
            for future in futures[1 + len(names) :]:
                future.result()
            counted = pd.read_parquet(out, columns=SUMMARY_COLUMNS)
        else:
            futures = client.compute([screening.registry, *screening.counts.values(), *screening.extra])
            wait_with_progress(client, futures[0])
            record_counts(stats, names, [f.result() for f in futures[1 : 1 + len(names)]])
            for future in futures[1 + len(names) :]:
                future.result()
            frame = futures[0].result().sort_values("patient", kind="stable")
            frame.to_csv(out, index=False)
            counted = frame[SUMMARY_COLUMNS]
        seconds = time.perf_counter() - started
        replace_whole(out, final)
    finally:
        close()
        remove(out)
    if counted.empty:
        raise ScreenError(f"no patients found in {source}")
    return summary(counted), stats, seconds


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_whole(new: Path, final: Path) -> None:
    """The registry just written replaces whatever was at `final` (checked by the CLI: a registry, --overwrite)."""
    remove(final)
    os.replace(new, final)


def wait_with_progress(client: Any, future: Any) -> None:
    """Dask's own progress bar, on stderr and only at a terminal; otherwise just wait."""
    if sys.stderr.isatty():
        from distributed import progress

        with contextlib.redirect_stdout(sys.stderr):
            progress(future)
    future.result()


def summary(registry: pd.DataFrame) -> dict[str, Any]:
    ckd = registry[registry["ckd"]]
    stages = ckd["g_stage"].fillna("unstaged").value_counts().reindex(STAGE_ORDER, fill_value=0)
    gaps = registry["care_gaps"].str.split(";").explode().replace("", pd.NA).dropna().value_counts()
    recs = registry["recommendations"].str.split(";").explode().replace("", pd.NA).dropna().value_counts()
    return {
        "patients": len(registry), "deceased": int(registry["deceased"].sum()), "ckd": len(ckd),
        "reasons": registry["reason"].value_counts().to_dict(),
        "ckd_by_g_stage": {k: int(v) for k, v in stages.items() if v},
        "care_gaps": {k: int(v) for k, v in gaps.items()},
        "recommendations": {k: int(v) for k, v in recs.items()},
    }  # fmt: skip


def plot(counts: dict[str, Any], path: Path, as_of: date) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    stages = counts["ckd_by_g_stage"]
    left.bar(list(stages), list(stages.values()), color="#17415f")
    left.set_title(f"CKD by GFR category ({counts['ckd']} of {counts['patients']} patients)")
    left.set_ylabel("patients")
    items = {**{f"gap: {k}": v for k, v in counts["care_gaps"].items()}, **counts["recommendations"]}
    names = sorted(items, key=items.__getitem__)
    right.barh(names, [items[n] for n in names], color="#c77700")
    right.set_title("Care gaps and recommendations")
    right.set_xlabel("patients")
    fig.suptitle(f"ckd-cds screen, as of {as_of.isoformat()} (decision support only)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
