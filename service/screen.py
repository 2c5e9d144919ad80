"""Population mode: `ckd-cds screen DIR|NDJSON --as-of DATE` (issue #7).

Reads a folder of FHIR Bundles (.json or .json.gz, one patient each) or FHIR Bulk Data NDJSON (a .ndjson file or a
folder of them, resources of every type), assesses each patient with the same engine as the CDS service and
`ckd-cds assess` (so a registry row is exactly that patient's assessment), and writes a registry (CSV, or Parquet
for a .parquet name), counts by stage and care gap, and a PNG. pandas does the tabular work: grouping NDJSON
resources by patient, the registry and the counts.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from service.clinical.assess import assess, assessment_to_json
from service.clinical.thresholds import Thresholds
from service.fhir.adapter import AdapterError, record_from_bundle, record_from_resources

STAGE_ORDER = ["G1", "G2", "G3a", "G3b", "G4", "G5", "unstaged"]


class ScreenError(ValueError):
    """The input cannot be screened (the CLI exits 2 with this message)."""


def read_json(path: Path) -> Any:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def bundle_files(folder: Path) -> Iterator[Any]:
    """Every Bundle file of a folder (.json or .json.gz), in name order."""
    for path in sorted(p for p in folder.iterdir() if p.name.endswith((".json", ".json.gz"))):
        yield read_json(path)


def ndjson_frame(source: Path) -> pd.DataFrame:
    files = sorted(source.glob("*.ndjson")) if source.is_dir() else [source]
    if not files:
        raise ScreenError(f"no .ndjson files in {source}")
    frames = [pd.read_json(f, lines=True, dtype=False) for f in files]
    frame = pd.concat(frames, ignore_index=True)
    if "resourceType" not in frame:
        raise ScreenError("NDJSON lines carry no resourceType")
    return frame


def patient_key(resource: dict[str, Any]) -> str | None:
    """The patient a resource belongs to: its own id for a Patient, else the id in subject/patient."""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id"))
    ref = resource.get("subject") or resource.get("patient") or {}
    ref = ref.get("reference") if isinstance(ref, dict) else None
    return ref.rsplit("/", 1)[-1].removeprefix("urn:uuid:") if isinstance(ref, str) else None


def ndjson_patients(source: Path) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(patient id, Patient, that patient's resources): resources grouped by patient with pandas."""
    frame = ndjson_frame(source)
    resources = [{k: v for k, v in row.items() if not _missing(v)} for row in frame.to_dict(orient="records")]
    table = pd.DataFrame({"resource": resources, "patient": [patient_key(r) for r in resources]})
    for pid, group in table.dropna(subset=["patient"]).groupby("patient", sort=True):
        items = list(group["resource"])
        patients = [r for r in items if r.get("resourceType") == "Patient"]
        if len(patients) == 1:
            yield str(pid), patients[0], [r for r in items if r is not patients[0]]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def registry_row(patient: str, out: dict[str, Any]) -> dict[str, Any]:
    egfr, alb, kfre = out["egfr"], out["albuminuria"], out["kfre"]
    return {
        "patient": patient, "deceased": out["deceased"], "ckd": out["ckd"], "reason": out["reason"],
        "g_stage": out["g_stage"],
        "a_stage": out["a_stage"], "kdigo_risk": out["kdigo_risk"],
        "egfr": egfr["value"] if egfr else None, "egfr_date": egfr["date"] if egfr else None,
        "acr_mg_g": alb["acr_mg_g"] if alb else None, "kfre_5y": kfre["risk_5y"] if kfre else None,
        "care_gaps": ";".join(out["care_gaps"]), "recommendations": ";".join(out["recommendations"]),
    }  # fmt: skip


def screen(source: Path, as_of: date, thresholds: Thresholds | None = None) -> tuple[pd.DataFrame, float]:
    """(registry, seconds): one row per patient."""
    if not source.exists():
        raise ScreenError(f"{source} does not exist")
    started = time.perf_counter()
    rows = []
    ndjson = source.suffix == ".ndjson" or (source.is_dir() and any(source.glob("*.ndjson")))
    if ndjson:
        for pid, patient, items in ndjson_patients(source):
            rows.append(registry_row(pid, assessment_to_json(assess(record_from_resources(patient, items), as_of,
                                                                    thresholds))))  # fmt: skip
    elif source.is_dir():
        for bundle in bundle_files(source):
            try:
                record = record_from_bundle(bundle)
            except AdapterError:
                continue  # not a single-patient Bundle (e.g. practitioners or hospitals)
            patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
            rows.append(registry_row(str(patient), assessment_to_json(assess(record, as_of, thresholds))))
    else:
        raise ScreenError(f"{source} is neither a folder of Bundles nor NDJSON")
    if not rows:
        raise ScreenError(f"no patients found in {source}")
    return pd.DataFrame(rows), time.perf_counter() - started


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


def write_registry(registry: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        registry.to_parquet(path, index=False)
    else:
        registry.to_csv(path, index=False)
