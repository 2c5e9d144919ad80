"""Population mode on Dask: read in partitions, shuffle by patient, run the per-patient engine per partition.

- **Cluster:** an embedded `distributed.LocalCluster` on loopback (scheduler, workers and dashboard bound to
  127.0.0.1) by default, so `ckd-cds screen` works on a laptop; `--scheduler tcp://host:8786` (or
  DASK_SCHEDULER_ADDRESS) runs the same graph on a real cluster.
- **NDJSON:** every file is read in byte blocks of whole lines (`dask.bytes.read_bytes`; a gzip file is one block),
  parsed and filtered on the map side (`service.population.ndjson`), then hash-shuffled by patient so that each
  patient's resources meet in one partition. Nothing is ever loaded whole into one process.
- **Per patient:** the exact engine of `ckd-cds assess` (adapter, staging, rules) on the patient's resources in
  export order, with the configured site code mappings and the export's Medication resources broadcast.
- **Folders of Bundles:** one task per file, the same per-patient engine.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dask.bag as db
import dask.dataframe as dd
import orjson
import pandas as pd
from dask.base import compute
from dask.bytes.core import read_bytes
from dask.delayed import delayed

from service.clinical.assess import assess, assessment_to_json
from service.clinical.thresholds import Thresholds
from service.fhir.adapter import AdapterError, SiteCodeMap, record_from_bundle, record_from_resources, site_code_map
from service.population.ndjson import META, medication_index, parse_block

TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")  # a FHIR resource type name, as Bulk Data file names carry it
BLOCK_SIZE = 64 * 1024 * 1024  # bytes of NDJSON per map task (a gzip file is read whole: it cannot be split)
REGISTRY_COLUMNS = ["patient", "deceased", "ckd", "reason", "g_stage", "a_stage", "kdigo_risk", "egfr", "egfr_date",
                    "acr_mg_g", "kfre_5y", "care_gaps", "recommendations"]  # fmt: skip
REGISTRY_META = pd.DataFrame({
    "patient": pd.Series(dtype="string"), "deceased": pd.Series(dtype="bool"), "ckd": pd.Series(dtype="bool"),
    "reason": pd.Series(dtype="string"), "g_stage": pd.Series(dtype="string"), "a_stage": pd.Series(dtype="string"),
    "kdigo_risk": pd.Series(dtype="string"), "egfr": pd.Series(dtype="float64"),
    "egfr_date": pd.Series(dtype="string"), "acr_mg_g": pd.Series(dtype="float64"),
    "kfre_5y": pd.Series(dtype="float64"), "care_gaps": pd.Series(dtype="string"),
    "recommendations": pd.Series(dtype="string"),
})  # fmt: skip


class ScreenError(ValueError):
    """The input cannot be screened (the CLI exits 2 with this message)."""


@dataclass(slots=True)
class ScreenStats:
    """What was read and left out, for the counts JSON (never a patient identifier)."""

    files: int = 0
    partitions: int = 0
    unresolved: int = 0  # resources naming no patient (Medication excluded: broadcast)
    without_patient: int = 0  # patients referenced by resources but with no (or several) Patient resources
    invalid_lines: int = 0
    medications: int = 0
    skipped_bundles: int = 0
    notes: list[str] = field(default_factory=list)


def registry_row(patient: str, out: dict[str, Any]) -> dict[str, Any]:
    """One registry row from an `assess` result (docs/population.md lists the columns)."""
    egfr, alb, kfre = out["egfr"], out["albuminuria"], out["kfre"]
    return {
        "patient": patient, "deceased": out["deceased"], "ckd": out["ckd"], "reason": out["reason"],
        "g_stage": out["g_stage"], "a_stage": out["a_stage"], "kdigo_risk": out["kdigo_risk"],
        "egfr": egfr["value"] if egfr else None, "egfr_date": egfr["date"] if egfr else None,
        "acr_mg_g": alb["acr_mg_g"] if alb else None, "kfre_5y": kfre["risk_5y"] if kfre else None,
        "care_gaps": ";".join(out["care_gaps"]), "recommendations": ";".join(out["recommendations"]),
    }  # fmt: skip


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=REGISTRY_COLUMNS)
    return frame.astype(REGISTRY_META.dtypes.to_dict())


ASSESSED_META = REGISTRY_META.assign(complete=pd.Series(dtype="bool"))


def assess_partition(
    rows: pd.DataFrame, as_of: date, thresholds: Thresholds, medications: dict[str, Any]
) -> pd.DataFrame:
    """The per-patient engine over one shuffled partition. A patient id named by resources but without exactly one
    Patient resource gets a row with `complete` false (counted, never assessed)."""
    sites = site_code_map(thresholds.site_codes)
    out = []
    for pid, resources in patients_in_order(rows):
        patients = [r for r in resources if r.get("resourceType") == "Patient"]
        if len(patients) != 1:
            out.append({"patient": str(pid), "complete": False})
            continue
        others = [r for r in resources if r is not patients[0]]
        record = record_from_resources(patients[0], others, site_codes=sites, shared_medications=medications)
        out.append(registry_row(str(pid), assessment_to_json(assess(record, as_of, thresholds))) | {"complete": True})
    frame = pd.DataFrame(out, columns=[*REGISTRY_COLUMNS, "complete"])
    return frame.astype(ASSESSED_META.dtypes.to_dict())


def patients_in_order(rows: pd.DataFrame) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each patient of a partition with its resources in export order: one sort for the whole partition, then a
    walk (a pandas group and sort per patient cost more than the engine itself)."""
    ordered = rows.sort_values(["patient", "file", "block", "line"], kind="stable")
    keyed = zip(ordered["patient"].tolist(), ordered["resource"].tolist(), strict=True)
    for pid, group in itertools.groupby(keyed, key=lambda pair: pair[0]):
        yield str(pid), [orjson.loads(text) for _, text in group]


NDJSON_NAMES = (".ndjson", ".ndjson.gz")


def ndjson_files(source: Path | str) -> list[str]:
    """The NDJSON files of a folder (or the one file), as local paths or, for an fsspec URL (s3://, gs://,
    file://, ...), as URLs that dask.bytes reads directly."""
    if isinstance(source, str):
        import fsspec

        fs, root = fsspec.core.url_to_fs(source)
        paths = sorted(p for p in fs.ls(root, detail=False) if p.endswith(NDJSON_NAMES)) if fs.isdir(root) else [root]
        files = [fs.unstrip_protocol(p) for p in paths]
    else:
        files = [str(p) for p in sorted(p for p in source.iterdir() if p.name.endswith(NDJSON_NAMES))] if (
            source.is_dir()) else [str(source)]  # fmt: skip
    if not files:
        raise ScreenError(f"no .ndjson files in {source}")
    return files


def is_ndjson(source: Path) -> bool:
    names = (".ndjson", ".ndjson.gz")
    return source.name.endswith(names) or (source.is_dir() and any(p.name.endswith(names) for p in source.iterdir()))


def parsed_rows(files: list[str], site_codes: SiteCodeMap | None, stats: ScreenStats) -> dd.DataFrame:
    """Every NDJSON file in blocks of whole lines, parsed on the workers: one dask partition per block."""
    parts = []
    for file_no, path in enumerate(files):
        gz = path.endswith(".gz")
        _, blocks = read_bytes(path, delimiter=b"\n", blocksize=None if gz else BLOCK_SIZE,
                               compression="gzip" if gz else None, sample=False)  # fmt: skip
        for block_no, data in enumerate(blocks[0]):
            parts.append(delayed(parse_block)(data, file_no, block_no, site_codes))
    stats.files, stats.partitions = len(files), len(parts)
    return dd.from_delayed(parts, meta=META, verify_meta=False)


@dataclass(slots=True)
class Screening:
    """The lazy registry and the lazy counts of what was left out: computed together, so the data are parsed and
    shuffled once."""

    registry: dd.DataFrame
    counts: dict[str, Any] = field(default_factory=dict)  # ScreenStats field -> lazy scalar
    extra: list[Any] = field(default_factory=list)  # further lazy outputs of the same pass (the stage's Parquet)


def file_types(files: list[str]) -> list[str | None]:
    """The resource type a Bulk Data file name carries (Patient.ndjson, Observation.002.ndjson.gz, 1.Condition.ndjson)
    or None."""
    return [next((t for t in Path(f).name.split(".") if TYPE_NAME.match(t)), None) for f in files]


def shared_medications(files: list[str], rows: dd.DataFrame, site_codes: SiteCodeMap | None) -> dict[str, Any]:
    """The export's Medication resources, to broadcast. Bulk Data writes one file per type: read only the Medication
    files then; when the files are not split by type, one extra pass over everything finds them."""
    types = file_types(files)
    if all(t is not None for t in types):
        chosen = [f for f, t in zip(files, types, strict=True) if t == "Medication"]
        if not chosen:
            return {}
        rows = parsed_rows(chosen, site_codes, ScreenStats())
    return medication_index(compute(rows[rows["kind"] == "Medication"]["resource"])[0])


STAGE_FORMAT = "ckd-cds-stage/1"


def is_stage(source: Path) -> bool:
    return (source / "stage.json").is_file()


def write_stage_manifest(stage: Path, medications: dict[str, Any]) -> None:
    """The stage: `rows/` (Parquet parts, each holding whole patients), the broadcast Medications, the format."""
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "medications.json").write_bytes(orjson.dumps(medications))
    (stage / "stage.json").write_bytes(orjson.dumps({"format": STAGE_FORMAT, "rows": "rows"}))


def screen_stage(source: Path, as_of: date, thresholds: Thresholds, stats: ScreenStats) -> Screening:
    """Re-screen from a stage written by `--stage`: no parsing, no shuffle; one partition per Parquet part (each
    holds whole patients, hash-bucketed when it was written)."""
    manifest = orjson.loads((source / "stage.json").read_bytes())
    if manifest.get("format") != STAGE_FORMAT:
        raise ScreenError(f"{source} is not a ckd-cds stage ({STAGE_FORMAT})")
    rows_path = (source / str(manifest.get("rows", ""))).resolve()
    if not manifest.get("rows") or not rows_path.is_relative_to(source.resolve()) or not rows_path.is_dir():
        # issue #21: a manifest naming a folder outside the stage (../, an absolute path) would read any Parquet
        raise ScreenError(f"{source}: the stage's rows must be a folder inside the stage")
    medications = orjson.loads((source / "medications.json").read_bytes())
    rows = dd.read_parquet(str(rows_path), split_row_groups=False, aggregate_files=False)
    stats.files, stats.partitions, stats.medications = 1, rows.npartitions, len(medications) // 2
    assessed = rows.map_partitions(assess_partition, as_of, thresholds, medications, meta=ASSESSED_META)
    return Screening(registry=assessed[assessed["complete"]].drop(columns=["complete"]),
                     counts={"without_patient": (~assessed["complete"]).sum()})  # fmt: skip


def screen_ndjson(
    source: Path | str, as_of: date, thresholds: Thresholds, stats: ScreenStats, npartitions: int | None = None,
    stage: Path | None = None,
) -> Screening:  # fmt: skip
    """The registry (lazy) from Bulk Data NDJSON: parse, broadcast Medications, shuffle by patient, assess; with
    `stage`, the shuffled rows are also kept as Parquet for re-screening."""
    files = ndjson_files(source)
    sites = site_code_map(thresholds.site_codes)
    rows = parsed_rows(files, sites, stats)
    medications = shared_medications(files, rows, sites)
    stats.medications = len(medications) // 2
    keyed = rows[~rows["patient"].isna()]
    shuffled = keyed.shuffle(on="patient", npartitions=npartitions or max(2, stats.partitions))
    extra = []
    if stage is not None:
        write_stage_manifest(stage, medications)
        extra.append(shuffled.to_parquet(str(stage / "rows"), write_index=False, compute=False))
    assessed = shuffled.map_partitions(assess_partition, as_of, thresholds, medications, meta=ASSESSED_META)
    counts = {  # ScreenStats field -> lazy count
        "unresolved": ((rows["patient"].isna()) & (rows["kind"] != "Medication") & (rows["kind"] != "invalid")).sum(),
        "invalid_lines": (rows["kind"] == "invalid").sum(),
        "without_patient": (~assessed["complete"]).sum(),
    }
    return Screening(registry=assessed[assessed["complete"]].drop(columns=["complete"]), counts=counts, extra=extra)


def read_json(path: Path) -> Any:
    """JSON, or gzip-compressed JSON, from a file."""
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def assess_bundle_file(path: str, as_of: date, thresholds: Thresholds) -> list[dict[str, Any]]:
    bundle = read_json(Path(path))
    try:
        record = record_from_bundle(bundle, site_code_map(thresholds.site_codes))
    except AdapterError:
        return []  # not a single-patient Bundle (e.g. practitioners or hospitals)
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return [registry_row(str(patient), assessment_to_json(assess(record, as_of, thresholds)))]


def screen_bundles(source: Path, as_of: date, thresholds: Thresholds, stats: ScreenStats) -> Screening:
    files = sorted(str(p) for p in source.iterdir() if p.name.endswith((".json", ".json.gz")))
    if not files:
        raise ScreenError(f"no .json or .json.gz Bundles in {source}")
    stats.files = stats.partitions = len(files)
    bag = db.from_sequence(files, npartitions=max(1, min(len(files), 4 * (os.cpu_count() or 2))))
    rows = bag.map(assess_bundle_file, as_of, thresholds).flatten()
    return Screening(registry=rows.to_dataframe(meta=REGISTRY_META))


def record_counts(stats: ScreenStats, names: list[str], values: list[Any]) -> None:
    for name, value in zip(names, values, strict=True):
        setattr(stats, name, int(value))


def registry(
    source: Path | str, as_of: date, thresholds: Thresholds, stats: ScreenStats, stage: Path | None = None
) -> Screening:
    """The lazy screening of a source: a stage, Bulk Data NDJSON (a folder, a file, or an fsspec URL of either),
    or a folder of Bundles."""
    if isinstance(source, str):  # an fsspec URL: NDJSON read where it lies
        return screen_ndjson(source, as_of, thresholds, stats, stage=stage)
    if not source.exists():
        raise ScreenError(f"{source} does not exist")
    if source.is_dir() and is_stage(source):
        return screen_stage(source, as_of, thresholds, stats)
    if is_ndjson(source):
        return screen_ndjson(source, as_of, thresholds, stats, stage=stage)
    if stage is not None:
        raise ScreenError("--stage needs Bulk Data NDJSON input")
    if source.is_dir():
        return screen_bundles(source, as_of, thresholds, stats)
    raise ScreenError(f"{source} is neither a folder of Bundles nor NDJSON")


def connect(scheduler: str | None, workers: int) -> tuple[Any, Callable[[], None]]:
    """A distributed Client: the given scheduler (or DASK_SCHEDULER_ADDRESS; its security is the operator's, see
    docs/population.md), else an embedded LocalCluster on loopback over mutual TLS with temporary credentials and
    no dashboard. Returns the client and a function that closes what was started here."""
    from distributed import Client, LocalCluster
    from distributed.security import Security

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        client = Client(address)
        return client, client.close
    # Issue #21 item 9: on loopback any local user could reach a plain tcp:// scheduler and run code in the workers
    # (as the user running the screen). Mutual TLS with a key and certificate made in memory for this run only
    # (distributed.security.Security.temporary): without them nothing can join or submit.
    security = Security.temporary()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           protocol="tls://", security=security, dashboard_address=None,
                           silence_logs=40)  # fmt: skip
    client = Client(cluster, security=security)

    def close() -> None:
        client.close()
        cluster.close()

    return client, close
