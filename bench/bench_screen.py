"""Benchmark: `ckd-cds screen` on generated Bulk Data NDJSON, with 1 and 2 workers (issue #16). Not run in CI.

    python bench/bench_screen.py [--patients 100000] [--data DIR]        # make bench-screen

Generates (once, kept in bench/data/) N patients as per-type NDJSON from the Synthea Bundles of ../shared/data
(service.population.generate), then screens them on an embedded LocalCluster with 1 and then 2 single-thread
workers, end to end from raw NDJSON (parse, map-side filter, shuffle by patient, engine, Parquet registry); then,
with 2 workers, while writing the re-screening stage (--stage) and re-screening from it. Reports patients per
second, the peak resident memory of each worker and the projected time and CPU-hours per million patients; writes
bench/results/screen.json with the machine described. A same-run baseline: reading and parsing every line once with
orjson in one process (the floor of any engine over this data).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.clinical.thresholds import Thresholds  # noqa: E402
from service.population.engine import ScreenStats, connect, registry  # noqa: E402
from service.population.generate import write_ndjson  # noqa: E402

SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-smart-r4"
AS_OF = date(2021, 4, 1)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}


def parse_floor(folder: Path) -> float:
    started = time.perf_counter()
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as handle:
            for line in handle:
                orjson.loads(line)
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run(folder: Path, workers: int, out: Path, stage: Path | None = None, label: str = "raw NDJSON") -> dict[str, Any]:
    client, close = connect(None, workers)
    try:
        started = time.perf_counter()
        screening = registry(folder, AS_OF, Thresholds(), ScreenStats(), stage)
        job = screening.registry.to_parquet(str(out), write_index=False, compute=False)
        for future in client.compute([job, *screening.counts.values(), *screening.extra]):
            future.result()
        seconds = time.perf_counter() - started
        peaks = client.run(peak_rss_mb)
    finally:
        close()
    import pandas as pd

    patients = len(pd.read_parquet(out, columns=["patient"]))
    rate = patients / seconds
    return {"input": label, "workers": workers, "patients": patients, "seconds": round(seconds, 1),
            "patients_per_second": round(rate, 1),
            "peak_rss_mb_per_worker": sorted(round(v, 0) for v in peaks.values()),
            "projected_hours_per_million": round(1e6 / rate / 3600, 2),
            "projected_cpu_hours_per_million": round(workers * 1e6 / rate / 3600, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = parser.parse_args(argv)
    if not SYNTHEA.is_dir():
        sys.stderr.write(f"bench_screen: {SYNTHEA} is not there (../shared/data)\n")
        return 2
    folder = args.data / f"ndjson-{args.patients}"
    generated_s = None
    if not any(folder.glob("Patient.*ndjson")):
        started = time.perf_counter()
        write_ndjson(SYNTHEA, folder, args.patients, processes=2)
        generated_s = round(time.perf_counter() - started)
        sys.stderr.write(f"generated {args.patients} patients in {generated_s} s\n")
    lines = sum(1 for p in folder.glob("*.ndjson") for _ in p.open("rb"))
    size_mb = sum(p.stat().st_size for p in folder.glob("*.ndjson")) / 2**20
    floor_s = parse_floor(folder)
    results = []
    for workers in (1, 2):
        out = args.data / f"registry-{args.patients}-{workers}.parquet"
        shutil.rmtree(out, ignore_errors=True)
        results.append(run(folder, workers, out))
    # the stage: written during a screen from raw NDJSON, then a re-screen from it (no parsing, no shuffle)
    stage = args.data / f"stage-{args.patients}"
    shutil.rmtree(stage, ignore_errors=True)
    for source, label, kept in ((folder, "raw NDJSON, writing the stage", stage), (stage, "the stage", None)):
        out = args.data / f"registry-{args.patients}-staged.parquet"
        shutil.rmtree(out, ignore_errors=True)
        results.append(run(source, 2, out, kept, label))
    report = {"patients": args.patients, "ndjson_lines": lines, "ndjson_mb": round(size_mb), "runs": results,
              "generated_in_s": generated_s,
              "baseline_parse_every_line_one_process_s": round(floor_s, 1), "machine": machine(),
              "date": date.today().isoformat()}  # fmt: skip
    out = ROOT / "bench" / "results" / "screen.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
