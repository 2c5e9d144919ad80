"""`make bench`: the service against a framework floor and a peer, on this machine, in one run (issues #8, #15).

1. Starts the real service (`ckd-cds serve`, gunicorn, production settings except JWT: wrk cannot mint a fresh signed
   token per request), the floor (bench/floor_app.py) under the same gunicorn settings, the peer (HealthChain's CDS
   Hooks service, bench/peer_healthchain.py, in its own virtual environment, under uvicorn with as many worker
   processes) and the FHIR test server with the benchmark patient, all at once.
2. Drives them with wrk: (a) full prefetch, about 200 Observations / 150 KB; (b) a small request; (c) no prefetch,
   so the service reads the FHIR test server; (d) order-sign with one draft and the full dosing prefetch (issue
   #22, service and floor only: the peer has no order hooks); at concurrency 1, 8 and 32. Service, floor and peer
   take turns run by run (interleaved, the order rotated each round), each after its own warm-up; medians of the runs.
3. Reports requests/s, p50/p90/p99, the service-to-floor ratios, the peer beside them, RSS per worker, the adapter
   and the engine apart (bench/bench_engine.py), and for (c) the service latency against the FHIR server's own
   slowest single query, measured in the same run.
4. Writes bench/results/bench-latest.json (machine described), bench/results/bench-latency.png, and
   docs/performance.md.

    python bench/harness.py [--seconds 15] [--warmup 3] [--repeats 3] [--levels 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.durability import machine  # noqa: E402
from bench.patients import hook_body, order_sign_body, small_patient, ten_year_patient  # noqa: E402
from bench.report import query_ms  # noqa: E402
from service.fhir import testserver  # noqa: E402
from service.fhir.loader import load_bundle  # noqa: E402
from service.web.acquire import next_link  # noqa: E402
from service.web.services.patient_view import ckd_prefetch  # noqa: E402
from tests import live  # noqa: E402

SERVICE_PORT, FLOOR_PORT, PEER_PORT, FHIR_PORT = 19101, 19102, 19103, 8591
URL_PATH = "/cds-services/ckd-patient-view"
SIGN_PATH = "/cds-services/ckd-renal-dosing-sign"
PEER_PATH = "/cds/cds-services/ckd-patient-view"  # HealthChain mounts CDS Hooks under /cds
PEER_PACKAGE = "healthchain==0.16.1"
PEER_VENV = ROOT / "bench" / ".venv-healthchain"
# Issue #15 at concurrency 8 (the adapter and engine for the scenario (a) patient); (c) keeps issue #8's target.
# Issue #22: the order-sign scenario (d) against the floor by the same rules as (a) and (b).
TARGETS = {"a_rps_ratio": 0.5, "a_p99_ratio": 2.5, "b_rps_ratio": 0.5, "d_rps_ratio": 0.5, "d_p99_ratio": 2.5,
           "adapter_median_us": 300.0, "engine_median_us": 300.0, "rss_mb_per_worker": 150.0,
           "c_vs_slowest_query": 1.3}  # fmt: skip
AT_MOST = ("a_p99_ratio", "d_p99_ratio", "adapter_median_us", "engine_median_us", "rss_mb_per_worker",
           "c_vs_slowest_query")  # fmt: skip


def require_wrk() -> None:
    """One line and exit status 2 when the load generator is missing, not a traceback from the first run."""
    if shutil.which("wrk") is None:
        print("bench: wrk not found; install it with 'apt-get install wrk'", file=sys.stderr)
        raise SystemExit(2)


def wrk(url: str, body_file: Path, connections: int, seconds: int) -> dict[str, Any]:
    threads = min(2, connections)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         str(ROOT / "bench" / "post.lua"), url],
        capture_output=True, text=True, check=True, env={**os.environ, "BODY_FILE": str(body_file)},
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("JSON "))
    figures: dict[str, Any] = json.loads(line.removeprefix("JSON "))
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over runs of requests/s and latency percentiles; errors summed; the runs kept."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
    out["runs"] = [{k: round(r[k], 2) for k in keys} for r in runs]
    return out


def measure(
    urls: dict[str, str], body_file: Path, level: int, seconds: int, warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Each target (name -> URL) warmed up, then measured in turns: round k starts at target k, so no target always
    runs first or after the same neighbour; the machine's drift falls on all of them alike."""
    for url in urls.values():
        wrk(url, body_file, level, warmup)
    names = list(urls)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for k in range(repeats):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            runs[name].append(wrk(urls[name], body_file, level, seconds))
    return {name: summarise(r) for name, r in runs.items()}


@contextmanager
def floor_server(port: int, gunicorn: dict[str, str]) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "CKD_CDS_HOST": "127.0.0.1", "CKD_CDS_PORT": str(port), "GUNICORN_LOGLEVEL": "warning",
           **gunicorn}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--access-logfile", "/dev/null",
         "bench.floor_app:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        testserver.wait_ready(f"{base}/healthz", proc, timeout=30)
    except RuntimeError:
        os.killpg(proc.pid, 9)
        raise
    try:
        yield base, proc.pid  # `python -m gunicorn` is the master itself
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def peer_python() -> tuple[Path | None, str]:
    """The peer's interpreter, its virtual environment made on first use (`pip install healthchain`); or None and
    why it could not be installed (the report says so)."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if made.returncode != 0:
            return None, f"python -m venv failed: {made.stderr.strip()[-300:]}"
    check = subprocess.run([str(python), "-c", "import healthchain, uvicorn"], capture_output=True, check=False)
    if check.returncode != 0:
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               PEER_PACKAGE, "uvicorn"], capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            return None, f"pip install {PEER_PACKAGE} failed: {done.stderr.strip().splitlines()[-1:]}"
    return python, ""


@contextmanager
def peer_server(port: int, workers: int) -> Iterator[tuple[str | None, int | None, str]]:
    """HealthChain's CDS Hooks service under uvicorn with `workers` processes: (base URL, master pid, "") or
    (None, None, why it is not running)."""
    python, why = peer_python()
    if python is None:
        yield None, None, why
        return
    proc = subprocess.Popen(  # uvicorn's multi-worker start, with TCP_NODELAY kept (bench/peer_healthchain.py)
        [str(python), str(ROOT / "bench" / "peer_healthchain.py"), "127.0.0.1", str(port), str(workers)],
        cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        testserver.wait_ready(f"{base}/cds/cds-discovery", proc, timeout=60)
    except RuntimeError as exc:
        os.killpg(proc.pid, 9)
        yield None, None, f"the peer did not start: {exc}"
        return
    try:
        yield base, proc.pid, ""
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def worker_rss_mb(master: int) -> list[float]:
    """RSS of each gunicorn worker (the children of its master process)."""
    from bench.durability import worker_pids

    sizes = []
    for pid in worker_pids(master):
        status = Path(f"/proc/{pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        sizes.append(round(kb / 1024, 1))
    return sizes


def run_query(
    session: requests.Session, fhir: testserver.RunningServer, key: Any, patient_id: str
) -> tuple[float, int]:
    """One prefetch query with its `next` pages followed, as the service follows them: (first page ms, pages)."""
    headers = {"Authorization": f"Bearer {fhir.token}", "Accept": "application/fhir+json"}
    url: str | None = f"{fhir.base_url}/{key.path(patient_id)}"
    started, pages, first_ms = time.perf_counter(), 0, 0.0
    while url is not None:
        response = session.get(url, headers=headers, timeout=10)
        response.raise_for_status()
        pages += 1
        if pages == 1:
            first_ms = (time.perf_counter() - started) * 1000
        url = next_link(response.json()) if key.kind == "search" else None
    return first_ms, pages


def slowest_fhir_query_ms(fhir: testserver.RunningServer, patient_id: str, samples: int = 20) -> dict[str, Any]:
    """Each prefetch query run directly against the FHIR server, alone: median ms of its first page and of the whole
    query with its `next` pages followed (kidneyLabs of the ten-year patient has two)."""
    session = requests.Session()
    out = {}
    for key in ckd_prefetch():
        first, whole, pages = [], [], 0
        for _ in range(samples):
            started = time.perf_counter()
            first_ms, pages = run_query(session, fhir, key, patient_id)
            whole.append((time.perf_counter() - started) * 1000)
            first.append(first_ms)
        out[key.name] = {"first_page_ms": statistics.median(first), "all_pages_ms": statistics.median(whole),
                         "pages": pages}  # fmt: skip
    return out


def parallel_fhir_ms(fhir: testserver.RunningServer, patient_id: str, samples: int = 20) -> float:
    """All prefetch queries at once, one thread and session each, straight to the FHIR server: median wall ms.

    What (c) could take at best on this server with no service at all. Near the slowest single query if the server
    answers concurrently; near the sum of the queries if it answers them one after another.
    """
    keys = ckd_prefetch()
    sessions = [requests.Session() for _ in keys]
    times = []
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        for _ in range(samples):
            started = time.perf_counter()
            list(pool.map(lambda ks: run_query(ks[1], fhir, ks[0], patient_id), zip(keys, sessions, strict=True)))
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def engine_figures() -> dict[str, Any]:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_engine.py")], capture_output=True,
                            text=True, check=True, cwd=ROOT)  # fmt: skip
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def request_files(work: Path, fhir: testserver.RunningServer) -> tuple[dict[str, Path], dict[str, Any]]:
    """The three request bodies as files for wrk; the ten-year patient is loaded into the FHIR server for (c)."""
    today = date.today()
    big, small = ten_year_patient(today), small_patient(today)
    load_bundle(fhir.base_url, fhir.token, big)
    bodies = {"a": hook_body(big, prefetch=True), "b": hook_body(small, prefetch=True),
              "c": hook_body(big, prefetch=False, fhir=(fhir.base_url, fhir.token)),
              "d": order_sign_body(today)}  # fmt: skip
    files = {}
    for name, body in bodies.items():
        files[name] = work / f"{name}.json"
        files[name].write_text(json.dumps(body))
    return files, big


def production_gunicorn() -> dict[str, str]:
    """The worker model of gunicorn.conf.py as shipped (GUNICORN_* overrides of this shell ignored), as variables.

    Both the service and the floor get exactly these: tests/live.py has its own defaults for the test suite.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
    code = ("import runpy, json; c = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps([c['worker_class'], c['workers'], c['threads']]))")  # fmt: skip
    kind, workers, threads = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean,
                                                       capture_output=True, text=True, check=True).stdout)  # fmt: skip
    return {"GUNICORN_WORKER_CLASS": kind, "GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": str(threads)}


def describe(gunicorn: dict[str, str]) -> str:
    threads = gunicorn["GUNICORN_THREADS"]
    return (f"{gunicorn['GUNICORN_WORKERS']} workers, {gunicorn['GUNICORN_WORKER_CLASS']}, {threads} "
            f"thread{'' if threads == '1' else 's'} (gunicorn.conf.py)")  # fmt: skip


def service_env(work: Path, gunicorn: dict[str, str]) -> dict[str, str]:
    """Production settings but for the database file (SQLite, audited), JWT off and no response-schema check."""
    return {"CKD_CDS_DATABASE_URL": f"sqlite:///{work / 'store.db'}", "CKD_CDS_VALIDATE_RESPONSES": "0",
            "GUNICORN_LOGLEVEL": "warning", **gunicorn}  # fmt: skip


def run(seconds: int, warmup: int, repeats: int, levels: list[int]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ckd-bench-"))
    fhir = testserver.start(port=FHIR_PORT)
    try:
        files, big = request_files(work, fhir)
        gunicorn = production_gunicorn()
        env = service_env(work, gunicorn)
        results: dict[str, Any] = {"service": {}, "floor": {}, "peer": {}}
        with (live.served(SERVICE_PORT, env) as service, floor_server(FLOOR_PORT, gunicorn) as (floor, floor_master),
              peer_server(PEER_PORT, int(gunicorn["GUNICORN_WORKERS"])) as (peer, peer_master, peer_why)):  # fmt: skip
            urls = {"service": service + URL_PATH, "floor": floor + URL_PATH}
            if peer is not None:
                urls["peer"] = peer + PEER_PATH
            for scenario in ("a", "b"):
                for level in levels:
                    measured = measure(urls, files[scenario], level, seconds, warmup, repeats)
                    for who, figures in measured.items():
                        results[who].setdefault(scenario, {})[str(level)] = figures
            for level in levels:  # (d) order-sign: service and floor (the peer has no order hooks)
                sign_urls = {"service": service + SIGN_PATH, "floor": floor + SIGN_PATH}
                for who, figures in measure(sign_urls, files["d"], level, seconds, warmup, repeats).items():
                    results[who].setdefault("d", {})[str(level)] = figures
            results["service"]["c"] = {
                str(level): measure({"service": service + URL_PATH}, files["c"], level, seconds, warmup, repeats)[
                    "service"
                ]
                for level in levels
            }
            from bench.durability import master_pid

            results["service_rss_mb"] = worker_rss_mb(master_pid(SERVICE_PORT))
            results["floor_rss_mb"] = worker_rss_mb(floor_master)
            results["peer_rss_mb"] = worker_rss_mb(peer_master) if peer_master else []
            results["peer_about"] = (
                (
                    f"HealthChain {PEER_PACKAGE.split('==')[1]} (FastAPI, pydantic), "
                    f"uvicorn, {gunicorn['GUNICORN_WORKERS']} worker processes"
                )
                if peer
                else ""
            )
            results["peer_unavailable"] = peer_why
        patient_id = big["entry"][0]["resource"]["id"]
        results["fhir_query_ms"] = slowest_fhir_query_ms(fhir, patient_id)
        results["fhir_parallel_ms"] = parallel_fhir_ms(fhir, patient_id)
    finally:
        testserver.stop(fhir)
    results["body_bytes"] = {name: f.stat().st_size for name, f in files.items()}
    results["engine"] = engine_figures()
    results["settings"] = {"seconds": seconds, "warmup": warmup, "repeats": repeats, "levels": levels,
                           "gunicorn": describe(gunicorn), "interleaved": True}  # fmt: skip
    results["machine"] = {**machine(), "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                                                            check=False).stdout.splitlines()[0]}  # fmt: skip
    results["verdict"] = verdict(results)
    return results


def verdict(r: dict[str, Any]) -> dict[str, Any]:
    level = "8" if "8" in r["service"]["a"] else next(iter(r["service"]["a"]))
    s, f = r["service"], r["floor"]
    slowest = max(query_ms(q) for q in r["fhir_query_ms"].values())
    first = next(iter(r["service"]["c"]))
    checks = {
        "a_rps_ratio": s["a"][level]["rps"] / f["a"][level]["rps"],
        "a_p99_ratio": s["a"][level]["p99_ms"] / f["a"][level]["p99_ms"],
        "b_rps_ratio": s["b"][level]["rps"] / f["b"][level]["rps"],
        "d_rps_ratio": s["d"][level]["rps"] / f["d"][level]["rps"],
        "d_p99_ratio": s["d"][level]["p99_ms"] / f["d"][level]["p99_ms"],
        "adapter_median_us": r["engine"]["hook_patient_adapter"]["median_us"],
        "engine_median_us": r["engine"]["hook_patient_engine"]["median_us"],
        "rss_mb_per_worker": max(r["service_rss_mb"] or [0.0]),
        "c_vs_slowest_query": s["c"][first]["p50_ms"] / slowest,
    }
    passed = {k: (v <= TARGETS[k] if k in AT_MOST else v >= TARGETS[k]) for k, v in checks.items()}
    return {"level": level, "values": {k: round(v, 3) for k, v in checks.items()}, "targets": TARGETS,
            "met": passed}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    require_wrk()
    results = run(args.seconds, args.warmup, args.repeats, [int(x) for x in args.levels.split(",")])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import plot, saved, write_doc

    plot(results, args.out / "bench-latency.png")
    if args.out == ROOT / "bench" / "results":
        write_doc(results, ROOT / "docs" / "performance.md", saved(args.out, "workers"), saved(args.out, "profile"))
    print(json.dumps(results["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
