"""The benchmark's verdict and report on synthetic figures (the harness itself runs with `make bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import verdict
from bench.report import plot, table, write_doc


def figures(rps: float, p99: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p99 / 3, "p90_ms": p99 / 2, "p99_ms": p99, "errors": 0, "runs": []}


def results(service_rps: float) -> dict[str, Any]:
    levels = ("1", "8")
    return {
        "service": {s: {lv: figures(service_rps, 30.0) for lv in levels} for s in ("a", "b", "c")},
        "floor": {s: {lv: figures(1000.0, 25.0) for lv in levels} for s in ("a", "b")},
        "fhir_query_ms": {"patient": 2.0, "kidneyLabs": 12.0},
        "service_rss_mb": [80.0, 82.0], "floor_rss_mb": [40.0, 41.0],
        "engine": {"engine_only": {"median_us": 900.0}, "adapter_and_engine": {"median_us": 3000.0}},
        "body_bytes": {"a": 160000, "b": 1800, "c": 300},
        "settings": {"seconds": 15, "warmup": 3, "repeats": 3, "levels": [1, 8], "gunicorn": "2 workers"},
        "machine": {"cpu": "test cpu", "cores": 2, "python": "3.11", "date": "2026-11-26", "wrk": "wrk 4.1.0"},
    }  # fmt: skip


def test_verdict_uses_ratios_at_concurrency_8() -> None:
    fast, slow = verdict(results(900.0)), verdict(results(100.0))
    assert fast["level"] == "8"
    assert fast["met"]["a_rps_ratio"] is True  # 0.9 ≥ 0.8
    assert slow["met"]["a_rps_ratio"] is False  # 0.1
    assert fast["values"]["a_p99_ratio"] == 1.2
    assert fast["met"]["a_p99_ratio"] is True
    assert fast["values"]["c_vs_slowest_query"] == round(10.0 / 12.0, 3)  # p50 at the first level vs slowest query
    assert fast["met"]["rss_mb_per_worker"] is True


def test_report_table_plot_and_doc(tmp_path: Path) -> None:
    r = results(500.0)
    r["verdict"] = verdict(r)
    assert "| (a) full prefetch, ~200 Observations | 8 | 500 | 1000 | 0.50 |" in table(r)
    png = tmp_path / "p.png"
    plot(r, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = tmp_path / "performance.md"
    write_doc(r, doc)
    assert "**not met**" in doc.read_text()
