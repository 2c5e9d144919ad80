"""Bulk Data NDJSON for tests and the benchmark, from the Synthea patient Bundles in ../shared/data.

    python -m service.population.generate SOURCE_DIR OUT_DIR --patients N [--gzip] [--all-types]

Writes files per resource type (`Patient.0.ndjson`, `Observation.0.ndjson`, ...; one set per process), as a FHIR
Bulk Data export does.
Patient copies beyond the originals get `-<k>` appended to every id and reference, and every date moved by `k` days,
so each copy is a distinct, internally consistent patient. By default only the types the engine reads are written
(Patient, Observation, Condition, MedicationRequest, Medication, Procedure); `--all-types` keeps every type, as a
real export.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import re
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TextIO

from service.demo import DATE_KEYS
from service.fhir.loader import as_put_transaction

READ_TYPES = frozenset({"Patient", "Observation", "Condition", "MedicationRequest", "Medication", "Procedure"})
REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([^/]+)$")
Resource = dict[str, Any]


def patient_bundles(source: Path) -> Iterator[Resource]:
    """The Synthea Bundles that hold a Patient, in file-name order."""
    for path in sorted(source.glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        if any(e.get("resource", {}).get("resourceType") == "Patient" for e in bundle.get("entry", [])):
            yield bundle


_ID = re.compile(r'"id":"([^"]+)"')
_REF = re.compile(r'"reference":"([A-Z][A-Za-z]+)/([^"/]+)"')
_DATE = re.compile(r'"(' + "|".join(DATE_KEYS) + r')":"(\d{4}-\d{2}-\d{2})')


def _copy_text(text: str, k: int) -> str:
    """Copy k of one resource's JSON text: every id and `Type/id` reference suffixed `-k`, every date moved k days."""
    text = _ID.sub(lambda m: f'"id":"{m.group(1)}-{k}"', text)
    text = _REF.sub(lambda m: f'"reference":"{m.group(1)}/{m.group(2)}-{k}"', text)
    return _DATE.sub(lambda m: f'"{m.group(1)}":"{(date.fromisoformat(m.group(2)) + timedelta(days=k)).isoformat()}',
                     text)  # fmt: skip


def resolved(bundle: Resource, types: frozenset[str] | None = READ_TYPES) -> list[str]:
    """One patient's resources as compact JSON text, references resolved to `Type/id`."""
    keep = types if types is not None else frozenset(e["resource"]["resourceType"] for e in bundle["entry"])
    return [json.dumps(e["resource"], separators=(",", ":")) for e in as_put_transaction(bundle, keep)["entry"]]


def patient_copy(bundle: Resource, k: int, types: frozenset[str] | None = READ_TYPES) -> list[Resource]:
    """One patient's resources, references resolved (`Type/id`); copy k > 0 renamed and moved by k days."""
    return [json.loads(text if k == 0 else _copy_text(text, k)) for text in resolved(bundle, types)]


def _write_share(args: tuple[Path, Path, int, int, int, bool, frozenset[str] | None]) -> int:
    """One process's share of the patients (n ≡ share mod shares), into its own files `<Type>.<share>.ndjson`."""
    source, out, patients, share, shares, compress, types = args
    texts = [(r, resolved(b, types)) for r, b in enumerate(patient_bundles(source))]
    handles: dict[str, TextIO] = {}
    try:
        for n in range(share, patients, shares):
            _, lines = texts[n % len(texts)]
            k = n // len(texts)
            for text in lines:
                line = text if k == 0 else _copy_text(text, k)
                kind = line[line.index('"resourceType":"') + 16 :].split('"', 1)[0]
                if kind not in handles:
                    name = out / f"{kind}.{share}.ndjson{'.gz' if compress else ''}"
                    handles[kind] = gzip.open(name, "wt", encoding="utf-8") if compress else open(  # noqa: SIM115
                        name, "w", encoding="utf-8"
                    )  # fmt: skip
                handles[kind].write(line + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return len(range(share, patients, shares))


def write_ndjson(source: Path, out: Path, patients: int, *, compress: bool = False,
                 types: frozenset[str] | None = READ_TYPES, processes: int = 1) -> int:  # fmt: skip
    """Write `patients` patients as per-type NDJSON files (`<Type>.<share>.ndjson`, one set per process); the
    originals come first, then copies. Returns the count."""
    if not any(True for _ in patient_bundles(source)):
        raise ValueError(f"no patient Bundles in {source}")
    out.mkdir(parents=True, exist_ok=True)
    shares = [(source, out, patients, share, processes, compress, types) for share in range(processes)]
    if processes == 1:
        return _write_share(shares[0])
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.map(_write_share, shares))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--all-types", action="store_true")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        write_ndjson(args.source, args.out, args.patients, compress=args.gzip,
                     types=None if args.all_types else READ_TYPES, processes=args.processes)  # fmt: skip
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"generate: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
