"""`ckd-cds serve` under gunicorn: two workers, metrics aggregated across them, and refusal on a bad config."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import live

ROOT = Path(__file__).resolve().parents[2]
PORT = 18473
TOKEN = "gunicorn-test-admin-token"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    env = {"CKD_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "CKD_CDS_ADMIN_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest()}  # fmt: skip
    with live.served(PORT, env) as base:
        yield base


def test_metrics_aggregate_every_worker(served: str) -> None:
    n = 120
    for _ in range(n):
        assert requests.get(f"{served}/cds-services", timeout=5).status_code == 200
    page = requests.get(f"{served}/metrics", timeout=5).text
    total = sum(
        float(v)
        for v in re.findall(
            r'^ckd_cds_requests_total\{hook="-",service="discovery",status="200"\} (\S+)$', page, re.MULTILINE
        )
    )
    assert total == n  # in multiprocess mode /metrics sums both workers' files


def test_every_worker_serves_a_saved_version_within_2_seconds(served: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = requests.get(f"{served}/admin/api/config", headers=auth, timeout=5).json()
    body = {"document": {"statin": {"min_age": 45}}, "base_version": before["version"], "comment": "reload test"}
    saved = requests.put(f"{served}/admin/api/config", json=body, headers=auth, timeout=5).json()
    time.sleep(2.0)
    answers = [requests.get(f"{served}/readyz", timeout=5).json() for _ in range(60)]
    assert len({a["worker"] for a in answers}) == 2  # both workers answered
    assert {a["configVersion"] for a in answers} == {saved["label"]}  # and none serves the old version


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sglt2i:\n  min_egfr: 99\n")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(PORT + 1), "--config", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "sglt2i.min_egfr" in result.stderr
