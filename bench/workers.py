"""`make bench-workers`: gunicorn worker models compared on the three benchmark scenarios (issue #8).

For each model (worker class, workers, threads) the real service is started under gunicorn.conf.py with
GUNICORN_WORKER_CLASS / GUNICORN_WORKERS / GUNICORN_THREADS, and driven by wrk at one concurrency level with the
request bodies of `make bench`. Models are measured in interleaved rounds (every model once per round), so a slow
spell of this shared machine hits every model rather than one; each figure is the median over the rounds.
Writes bench/results/workers.json (machine described); docs/performance.md shows it at the next `make bench` or
`python bench/report.py`.

    python bench/workers.py [--models gthread:2x4,gthread:4x2,gthread:4x1,sync:2x1,sync:4x1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.durability import machine, master_pid  # noqa: E402
from bench.harness import require_wrk  # noqa: E402
from service.fhir import testserver  # noqa: E402
from tests import live  # noqa: E402

DEFAULT_MODELS = "gthread:2x4,gthread:4x2,gthread:4x1,sync:2x1,sync:4x1"


def parse_model(text: str) -> tuple[str, int, int]:
    """'gthread:2x4' -> ('gthread', 2, 4): worker class, workers, threads."""
    kind, _, shape = text.partition(":")
    workers, _, threads = shape.partition("x")
    if kind not in ("gthread", "sync") or not workers.isdigit() or not threads.isdigit():
        raise SystemExit(f"bad model {text!r}: expected gthread:WxT or sync:Wx1")
    return kind, int(workers), int(threads)


def run(models: list[str], rounds: int, level: int, seconds: int, warmup: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ckd-bench-workers-"))
    fhir = testserver.start(port=harness.FHIR_PORT)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in models}
    rss: dict[str, list[float]] = {}
    try:
        files, _ = harness.request_files(work, fhir)
        for _ in range(rounds):
            for model in models:
                kind, workers, threads = parse_model(model)
                model_env = {"GUNICORN_WORKER_CLASS": kind, "GUNICORN_WORKERS": str(workers),
                             "GUNICORN_THREADS": str(threads)}  # fmt: skip
                with live.served(harness.SERVICE_PORT, harness.service_env(work, model_env)) as base:
                    for scenario, body in files.items():
                        url = base + harness.URL_PATH
                        figures = harness.measure({"service": url}, body, level, seconds, warmup, 1)["service"]
                        samples[model].setdefault(scenario, []).append(figures)
                    rss[model] = harness.worker_rss_mb(master_pid(harness.SERVICE_PORT))
    finally:
        testserver.stop(fhir)
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms")
    table = {
        model: {
            scenario: {
                **{k: statistics.median(run[k] for run in runs) for k in keys},
                "errors": sum(run["errors"] for run in runs),
                "rounds": [round(run["rps"], 1) for run in runs],
            }
            for scenario, runs in by_scenario.items()
        }
        for model, by_scenario in samples.items()
    }
    return {
        "models": table,
        "rss_mb": rss,
        "settings": {"level": level, "seconds": seconds, "warmup": warmup, "rounds": rounds},
        "machine": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = parser.parse_args()
    require_wrk()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        parse_model(model)
    results = run(models, args.rounds, args.level, args.seconds, args.warmup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import workers_table

    print(workers_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
