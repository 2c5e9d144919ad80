"""`make profile`: where a hook call's CPU time goes, per step, in-process (issues #8, #15).

The real Flask app (temporary SQLite store, audited; response-schema check off as under `make bench`) answers the
`make bench` request bodies (a) and (b) through the Flask test client, after `gc.freeze()` as in each gunicorn
worker. Each step of the request path is wrapped with a CPU-time counter; what no wrapper claims is Flask, Werkzeug
and the test client. Also writes a pyinstrument call tree of scenario (a).

With `--baseline REV` the same measurement first runs on the code of revision REV (checked out in a temporary
worktree, profiled by this script), so the table shows each step before and after, measured in the same run.

Writes bench/results/profile.json (machine described) and bench/results/profile-a.txt; docs/performance.md shows
the table at the next `make bench` or `python bench/report.py`.

    python bench/profile.py [--requests-a 300] [--requests-b 1000] [--baseline REV]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CODE = os.environ.get("CKD_CDS_PROFILE_CODE")  # the tree whose service is profiled (set by --baseline)
if CODE:
    sys.path.insert(0, CODE)

from bench.durability import machine  # noqa: E402
from bench.harness import URL_PATH  # noqa: E402
from bench.patients import hook_body, small_patient, ten_year_patient  # noqa: E402

# (module, attribute, step label), in the order of the request path; "a|b": the first that exists (so that
# `--baseline` can profile a revision from before a module or function moved)
SERVICE_OR_HOOKS = "service.web.services.patient_view|service.web.hooks"
STEPS = [
    ("service.web.hooks", "require_json_body", "read the body and parse it (orjson; the floor pays this too)"),
    ("service.web.hooks", "validate_call", "JSON shape check (jsonschema) and request rules"),
    ("service.web.hooks", "acquire", "prefetch classification (or FHIR fallback)"),
    # the service's own step: service.web.services.patient_view since issue #22's split, service.web.hooks before it
    (SERVICE_OR_HOOKS, "record_from_resources", "FHIR resources to typed values (adapter)"),
    (SERVICE_OR_HOOKS, "assess", "staging, progression, KFRE and rules (engine)"),
    ("service.web.hooks", "snoozed_cards|snoozed_rules", "override memory: the patient's active snoozes (one SELECT)"),
    (SERVICE_OR_HOOKS, "build_cards", "cards (Jinja2 templates, suggestions, uuids)"),
    ("service.web.hooks", "record_outcome", "metrics and audit fields of the outcome"),
    ("service.web.hooks", "json_response", "response encoding (orjson)"),
    ("service.store", "Store.add_audit", "audit record and card index, one SQLite transaction"),
    ("service.web", "count_request", "request metrics (Prometheus)"),
]
REST = "Flask, Werkzeug and the test client"


def instrument(spent: dict[str, float]) -> None:
    """Wrap each step with a CPU-time counter (process time: what the step costs a core, not what it waits)."""
    import importlib

    for module_names, attributes, label in STEPS:
        for module_name in module_names.split("|"):
            try:
                module: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            found = next((a for a in attributes.split("|") if _has(module, a)), None)
            if found is None:
                continue
            owner = module
            *path, name = found.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, timed(getattr(owner, name), label, spent))
            break


def _has(module: Any, dotted: str) -> bool:
    owner = module
    for part in dotted.split("."):
        if not hasattr(owner, part):
            return False
        owner = getattr(owner, part)
    return True


def timed(fn: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started

    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests-a", type=int, default=300)
    parser.add_argument("--requests-b", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--baseline", help="git revision to profile first, in the same run")
    args = parser.parse_args()
    baseline = profile_baseline(args.baseline, args.requests_a, args.requests_b) if args.baseline else None
    os.environ["CKD_CDS_DATABASE_URL"] = f"sqlite:///{Path(tempfile.mkdtemp(prefix='ckd-profile-')) / 'store.db'}"
    os.environ["CKD_CDS_VALIDATE_RESPONSES"] = "0"
    spent: dict[str, float] = defaultdict(float)
    instrument(spent)
    from service.web import create_app

    client = create_app().test_client()
    today = date.today()
    bodies = {"a": json.dumps(hook_body(ten_year_patient(today), prefetch=True)).encode(),
              "b": json.dumps(hook_body(small_patient(today), prefetch=True)).encode()}  # fmt: skip
    gc.freeze()  # as in each gunicorn worker (gunicorn.conf.py post_worker_init)

    def post(body: bytes) -> None:
        response = client.post(URL_PATH, data=body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"hook call answered {response.status_code}: {response.get_data(as_text=True)[:200]}")

    results: dict[str, Any] = {"steps": {}, "total_ms": {}, "requests": {}}
    for scenario, count in (("a", args.requests_a), ("b", args.requests_b)):
        for _ in range(30):  # warm-up: templates, statement cache, connection pool
            post(bodies[scenario])
        spent.clear()
        started = time.process_time()
        for _ in range(count):
            post(bodies[scenario])
        total = (time.process_time() - started) / count * 1000
        steps = {label: spent[label] / count * 1000 for _, _, label in STEPS}
        steps[REST] = total - sum(steps.values())
        results["steps"][scenario] = steps
        results["total_ms"][scenario] = total
        results["requests"][scenario] = count
    results["floor_total_ms"] = floor_cpu_ms(bodies, args.requests_a, args.requests_b)
    results["machine"] = machine()
    if baseline is not None:
        results["baseline"] = baseline
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(args.requests_a):
        post(bodies["a"])
    profiler.stop()
    (args.out / "profile-a.txt").write_text(profiler.output_text(unicode=False, color=False))
    from bench.report import profile_table

    print(profile_table(results))
    return 0


def floor_cpu_ms(bodies: dict[str, bytes], requests_a: int, requests_b: int) -> dict[str, float]:
    """The floor app (bench/floor_app.py) through the same test client and bodies: CPU ms per request."""
    from bench.floor_app import app

    client = app.test_client()
    out = {}
    for scenario, count in (("a", requests_a), ("b", requests_b)):
        for _ in range(30):
            client.post(URL_PATH, data=bodies[scenario], content_type="application/json")
        started = time.process_time()
        for _ in range(count):
            client.post(URL_PATH, data=bodies[scenario], content_type="application/json")
        out[scenario] = (time.process_time() - started) / count * 1000
    return out


def profile_baseline(revision: str, requests_a: int, requests_b: int) -> dict[str, Any]:
    """This script's measurement of revision `revision`'s code: steps and totals, with the revision named."""
    import subprocess

    from bench.worktree import checked_out, short

    out = Path(tempfile.mkdtemp(prefix="ckd-profile-baseline-"))
    with checked_out(revision) as tree:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--requests-a", str(requests_a),
                        "--requests-b", str(requests_b), "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "CKD_CDS_PROFILE_CODE": str(tree)})  # fmt: skip
    measured = json.loads((out / "profile.json").read_text())
    return {"revision": short(revision), "steps": measured["steps"], "total_ms": measured["total_ms"]}


if __name__ == "__main__":
    sys.exit(main())
