"""`ckd-cds serve` under gunicorn: two workers, metrics aggregated across them, and refusal on a bad config."""

from __future__ import annotations

import hashlib
import json
import re
import socket
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


@pytest.fixture
def served_small_cap(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = {"CKD_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "CKD_CDS_MAX_BODY_BYTES": "2000"}
    with live.served(PORT + 2, env, workers=1) as base:
        yield base, ROOT / "test-artifacts" / f"server-{PORT + 2}.log"


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_gunicorn_edges_answer_json_and_keep_the_access_log_valid(served_small_cap: tuple[str, Path]) -> None:
    base, log_path = served_small_cap
    port = PORT + 2

    def chunked() -> Iterator[bytes]:
        for _ in range(40):
            yield b'{"padding": "' + b"x" * 100 + b'"}'

    # issue #13: a chunked body over the cap was cut silently by werkzeug and answered 400 "not valid JSON"
    response = requests.post(f"{base}/cds-services/ckd-patient-view", data=chunked(),
                             headers={"Content-Type": "application/json"}, timeout=5)  # fmt: skip
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    # gunicorn's own answers (before the application sees the request) are OperationOutcome JSON, not HTML
    too_long = raw_request(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = too_long.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414")
    assert b"application/fhir+json" in head
    assert json.loads(body)["issue"][0]["code"] == "too-long"
    malformed = raw_request(port, b"NOT A REQUEST\r\n\r\n")
    assert malformed.startswith(b"HTTP/1.1 400")
    assert json.loads(malformed.partition(b"\r\n\r\n")[2])["resourceType"] == "OperationOutcome"
    # %0a and %00 in a path: one access-log line, valid JSON, the characters escaped
    raw_request(port, b"GET /cds-services/%0a%00%22x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.5)
    lines = [line for line in log_path.read_bytes().decode("utf-8", "replace").splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]  # every access-log line parses
    assert any(r["path"] == '/cds-services/\n\x00"x' for r in records)
