"""Bulk Data NDJSON for tests and the benchmark, from the Synthea patient Bundles in ../shared/data.

    python -m service.population.generate SOURCE_DIR OUT_DIR --patients N [--gzip] [--all-types]

Writes one file per resource type (`Patient.ndjson`, `Observation.ndjson`, ...), as a FHIR Bulk Data export does.
Patient copies beyond the originals get `-<k>` appended to every id and reference, and every date moved by `k` days,
so each copy is a distinct, internally consistent patient. By default only the types the engine reads are written
(Patient, Observation, Condition, MedicationRequest, Medication); `--all-types` keeps every type, as a real export.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from service.demo import shift
from service.fhir.loader import as_put_transaction

READ_TYPES = frozenset({"Patient", "Observation", "Condition", "MedicationRequest", "Medication"})
REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([^/]+)$")
Resource = dict[str, Any]


def patient_bundles(source: Path) -> Iterator[Resource]:
    """The Synthea Bundles that hold a Patient, in file-name order."""
    for path in sorted(source.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        if any(e.get("resource", {}).get("resourceType") == "Patient" for e in bundle.get("entry", [])):
            yield bundle


def _suffixed(value: Any, suffix: str) -> Any:
    if isinstance(value, list):
        return [_suffixed(v, suffix) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "reference" and isinstance(item, str) and (m := REFERENCE.match(item)):
            item = f"{m.group(1)}/{m.group(2)}{suffix}"
        elif key == "id" and isinstance(item, str) and "resourceType" in value:
            item = f"{item}{suffix}"
        out[key] = _suffixed(item, suffix)
    return out


def patient_copy(bundle: Resource, k: int, types: frozenset[str] | None = READ_TYPES) -> list[Resource]:
    """One patient's resources, references resolved (`Type/id`); copy k > 0 renamed and moved by k days."""
    keep = types if types is not None else frozenset(e["resource"]["resourceType"] for e in bundle["entry"])
    resources = [e["resource"] for e in as_put_transaction(bundle, keep)["entry"]]
    if k == 0:
        return resources
    return [shift(_suffixed(r, f"-{k}"), k) for r in resources]


def write_ndjson(source: Path, out: Path, patients: int, *, compress: bool = False,
                 types: frozenset[str] | None = READ_TYPES) -> int:  # fmt: skip
    """Write `patients` patients as per-type NDJSON (the originals first, then copies); returns the count."""
    bundles = list(patient_bundles(source))
    if not bundles:
        raise ValueError(f"no patient Bundles in {source}")
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, TextIO] = {}
    try:
        for n in range(patients):
            for resource in patient_copy(bundles[n % len(bundles)], n // len(bundles), types):
                kind = resource["resourceType"]
                if kind not in handles:
                    name = out / f"{kind}.ndjson{'.gz' if compress else ''}"
                    handles[kind] = gzip.open(name, "wt", encoding="utf-8") if compress else open(  # noqa: SIM115
                        name, "w", encoding="utf-8"
                    )  # fmt: skip
                handles[kind].write(json.dumps(resource, separators=(",", ":")) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return patients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--all-types", action="store_true")
    args = parser.parse_args(argv)
    try:
        write_ndjson(args.source, args.out, args.patients, compress=args.gzip,
                     types=None if args.all_types else READ_TYPES)  # fmt: skip
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"generate: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
