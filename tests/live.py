"""Start the real service (`ckd-cds serve` under gunicorn) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.fhir.testserver import wait_ready

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def served(port: int, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    """The service on 127.0.0.1:`port` with `env` added; stopped (whole process group) afterwards."""
    full = {**os.environ, "GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": "2", **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "test-artifacts" / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=ROOT, env=full,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/healthz", proc, timeout=30)
    except RuntimeError:
        os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        raise
    try:
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
