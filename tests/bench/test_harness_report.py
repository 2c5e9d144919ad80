"""The benchmark's verdict and report on synthetic figures (the harness itself runs with `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.harness import describe, measure, production_gunicorn, verdict
from bench.profile import STEPS
from bench.report import plot, profile_table, query_ms, query_text, table, workers_table, write_doc
from bench.workers import parse_model


def figures(rps: float, p99: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p99 / 3, "p90_ms": p99 / 2, "p99_ms": p99, "errors": 0, "runs": []}


def results(service_rps: float) -> dict[str, Any]:
    levels = ("1", "8")
    return {
        "service": {s: {lv: figures(service_rps, 30.0) for lv in levels} for s in ("a", "b", "c", "d")},
        "floor": {s: {lv: figures(1000.0, 25.0) for lv in levels} for s in ("a", "b", "d")},
        "peer": {s: {lv: figures(250.0, 60.0) for lv in levels} for s in ("a", "b")},
        "peer_rss_mb": [120.0], "peer_about": "HealthChain 0.16.1 (FastAPI, pydantic), uvicorn, 2 worker processes",
        "fhir_query_ms": {"patient": {"first_page_ms": 2.0, "all_pages_ms": 2.0, "pages": 1},
                          "kidneyLabs": {"first_page_ms": 7.0, "all_pages_ms": 12.0, "pages": 2}},
        "service_rss_mb": [80.0, 82.0], "floor_rss_mb": [40.0, 41.0],
        "engine": {"engine_only": {"median_us": 900.0}, "adapter_and_engine": {"median_us": 3000.0},
                   "hook_patient_observations": 200, "hook_patient_adapter": {"median_us": 280.0},
                   "hook_patient_engine": {"median_us": 450.0}},
        "body_bytes": {"a": 160000, "b": 1800, "c": 300, "d": 170000},
        "settings": {"seconds": 15, "warmup": 3, "repeats": 3, "levels": [1, 8], "gunicorn": "2 workers"},
        "machine": {"cpu": "test cpu", "cores": 2, "python": "3.11", "date": "2026-11-26", "wrk": "wrk 4.1.0"},
    }  # fmt: skip


def test_verdict_uses_ratios_at_concurrency_8() -> None:
    fast, slow = verdict(results(900.0)), verdict(results(400.0))
    assert fast["level"] == "8"
    assert fast["met"]["a_rps_ratio"] is True  # 0.9 ≥ 0.5 (issue #15)
    assert slow["met"]["a_rps_ratio"] is False  # 0.4
    assert slow["met"]["b_rps_ratio"] is False
    assert fast["values"]["a_p99_ratio"] == 1.2
    assert fast["met"]["a_p99_ratio"] is True  # ≤ 2.5
    # issue #22: order-sign (d) by the same rules
    assert fast["met"]["d_rps_ratio"] is True
    assert slow["met"]["d_rps_ratio"] is False
    assert fast["values"]["d_p99_ratio"] == 1.2
    # the adapter and the engine apart, for the scenario (a) patient: each ≤ 300 µs
    assert fast["met"]["adapter_median_us"] is True  # 280
    assert fast["met"]["engine_median_us"] is False  # 450
    # p50 at the first level vs the slowest query with all its pages (12 ms), not its first page (7 ms)
    assert fast["values"]["c_vs_slowest_query"] == round(10.0 / 12.0, 3)
    assert fast["met"]["rss_mb_per_worker"] is True


def test_report_table_plot_and_doc(tmp_path: Path) -> None:
    r = results(500.0)
    r["verdict"] = verdict(r)
    assert "| (a) full prefetch, ~200 Observations | 8 | 500 | 1000 | 0.50 | 250 | 0.25 |" in table(r)
    assert "| (c) no prefetch: FHIR fallback | 8 | 500 | – | – | – | – |" in table(r)
    png = tmp_path / "p.png"
    plot(r, png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = tmp_path / "performance.md"
    write_doc(r, doc)
    text = doc.read_text()
    assert "**not met**" in text
    assert "The peer is HealthChain 0.16.1 (FastAPI, pydantic), uvicorn, 2 worker processes" in text
    assert "adapter median 280 µs, engine median 450 µs" in text
    assert "reaches 0.25 of the floor on (a) and 0.25 on (b); ckd-cds, doing the whole clinical path, 0.50" in text
    del r["peer"]
    r["peer_unavailable"] = "pip install healthchain==0.16.1 failed: no network"
    write_doc(r, doc)
    assert "could not be measured in this run: pip install healthchain==0.16.1 failed: no network" in doc.read_text()


def test_saved_results_with_one_number_per_query_still_read() -> None:
    assert query_ms(13.0) == 13.0
    assert query_ms({"first_page_ms": 7.0, "all_pages_ms": 12.0, "pages": 2}) == 12.0
    assert query_text("kidneyLabs", {"first_page_ms": 7.0, "all_pages_ms": 12.0, "pages": 2}) == (
        "kidneyLabs 12.0 ms (2 pages; first 7.0 ms)"
    )
    assert query_text("patient", 1.5) == "patient 1.5 ms"


def workers_results() -> dict[str, Any]:
    by = {s: {"rps": 100.0 * (i + 1), "p50_ms": 5.0, "p90_ms": 8.0, "p99_ms": 20.0, "errors": 0, "rounds": []}
          for i, s in enumerate(("a", "b", "c"))}  # fmt: skip
    return {"models": {"gthread:2x4": by}, "rss_mb": {"gthread:2x4": [88.0, 90.4]},
            "settings": {"level": 8, "seconds": 8, "warmup": 2, "rounds": 3},
            "machine": {"cpu": "test cpu", "cores": 2, "python": "3.11", "date": "2026-11-26"}}  # fmt: skip


def test_worker_models_table_and_doc_section(tmp_path: Path) -> None:
    w = workers_results()
    assert "| gthread:2x4 | 100, 5.0 / 20.0 | 200, 5.0 / 20.0 | 300, 5.0 / 20.0 | 90 |" in workers_table(w)
    r = results(500.0)
    r["verdict"] = verdict(r)
    doc = tmp_path / "performance.md"
    write_doc(r, doc)
    assert "| gthread:2x4 |" not in doc.read_text()  # no worker measurements, no table
    write_doc(r, doc, w)
    assert "| gthread:2x4 | 100, 5.0 / 20.0 |" in doc.read_text()


def test_worker_model_names() -> None:
    assert parse_model("gthread:4x2") == ("gthread", 4, 2)
    assert parse_model("sync:2x1") == ("sync", 2, 1)
    for bad in ("gevent:2x1", "gthread:x2", "sync:2"):
        with pytest.raises(SystemExit, match="bad model"):
            parse_model(bad)


def test_bench_uses_the_shipped_worker_model_whatever_this_shell_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    monkeypatch.setenv("GUNICORN_WORKERS", "7")
    shipped = production_gunicorn()
    assert shipped == {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_WORKERS": "4", "GUNICORN_THREADS": "1"}
    assert describe(shipped) == "4 workers, gthread, 1 thread (gunicorn.conf.py)"


def test_profile_table_and_the_bounds_it_explains(tmp_path: Path) -> None:
    steps = {"read the body and parse it (orjson; the floor pays this too)": 0.4, "engine": 0.6}
    profile = {"steps": {"a": steps, "b": {k: v / 10 for k, v in steps.items()}}, "total_ms": {"a": 3.0, "b": 0.3},
               "machine": {"cpu": "test cpu", "date": "2026-11-26"}}  # fmt: skip
    assert "| engine | 0.60 ms | 0.06 ms |" in profile_table(profile)
    assert "| **total** | **3.00 ms** | **0.30 ms** |" in profile_table(profile)
    r = results(500.0)
    r["verdict"] = verdict(r)
    doc = tmp_path / "performance.md"
    write_doc(r, doc, profile=profile)
    assert "about 2.6 ms (a) and 0.3 ms (b) of pure-Python work" in doc.read_text()  # total minus the parse
    profile["floor_total_ms"] = {"a": 1.0, "b": 0.15}
    write_doc(r, doc, profile=profile)
    assert "The floor costs 1.00 ms (a) and 0.15 ms (b) through the same test client" in doc.read_text()
    assert "(3.0 and 2.0 times)" in doc.read_text()
    profile["floor_total_ms"] = {"a": 1.0, "b": 0.15}
    write_doc(r, doc, profile=profile)
    assert "The floor costs 1.00 ms (a) and 0.15 ms (b) through the same test client" in doc.read_text()
    assert "(3.0 and 2.0 times)" in doc.read_text()
    write_doc(r, doc)
    assert "run `make profile`" in doc.read_text()


def test_profile_script_attributes_time_to_each_step(tmp_path: Path) -> None:
    """bench/profile.py on the real app: every wrapped step is reached, and the steps add up to the total."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "bench/profile.py", "--requests-a", "5", "--requests-b", "5", "--out",
                    str(tmp_path)], cwd=root, check=True, capture_output=True, timeout=300)  # fmt: skip
    p = json.loads((tmp_path / "profile.json").read_text())
    for scenario in ("a", "b"):
        steps = p["steps"][scenario]
        wrapped = {k: v for k, v in steps.items() if k != "Flask, Werkzeug and the test client"}
        assert len(wrapped) == len(STEPS)
        assert all(v > 0 for v in wrapped.values()), steps  # a wrapper that never ran would show 0
        assert sum(steps.values()) == pytest.approx(p["total_ms"][scenario])
    assert p["total_ms"]["a"] > p["total_ms"]["b"]  # 200 Observations cost more than a handful
    assert "call_service" in (tmp_path / "profile-a.txt").read_text()


@pytest.mark.parametrize("script", ["bench/harness.py", "bench/workers.py"])
def test_without_wrk_one_line_and_status_2(script: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, script], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": str(tmp_path)})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "bench: wrk not found; install it with 'apt-get install wrk'\n"


def test_measure_interleaves_targets_and_rotates_the_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Warm-ups first, then rounds in turns, each round starting one target later; medians per target."""
    calls: list[tuple[str, int]] = []

    def fake_wrk(url: str, body_file: Path, connections: int, seconds: int) -> dict[str, Any]:
        calls.append((url, seconds))
        rps = {"s": 100.0, "f": 400.0, "p": 200.0}[url] + len(calls)
        return {"rps": rps, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "non_2xx": 0, "socket_errors": 0}

    monkeypatch.setattr("bench.harness.wrk", fake_wrk)
    out = measure({"service": "s", "floor": "f", "peer": "p"}, tmp_path / "body.json", 8, 15, 3, 3)
    assert calls[:3] == [("s", 3), ("f", 3), ("p", 3)]  # warm-ups
    assert [u for u, _ in calls[3:]] == ["s", "f", "p", "f", "p", "s", "p", "s", "f"]
    assert out["service"]["rps"] == 100.0 + 9  # runs 4, 9, 11: median of 104, 109, 111
    assert [r["rps"] for r in out["floor"]["runs"]] == [405.0, 407.0, 412.0]


def test_profile_table_with_a_baseline_measured_in_the_same_run() -> None:
    steps = {"engine": 0.6, "new step": 0.1}
    profile = {"steps": {"a": steps, "b": steps}, "total_ms": {"a": 3.0, "b": 1.0},
               "baseline": {"revision": "abc1234", "steps": {"a": {"engine": 0.9}, "b": {"engine": 0.3}},
                            "total_ms": {"a": 4.0, "b": 1.5}}}  # fmt: skip
    text = profile_table(profile)
    assert "| Step, per request (ms) | (a) at abc1234 | (a) now | (b) at abc1234 | (b) now |" in text
    assert "| engine | 0.90 | 0.60 | 0.30 | 0.60 |" in text
    assert "| new step | – | 0.10 | – | 0.10 |" in text  # a step the baseline did not time
    assert "| **total** | **4.00** | **3.00** | **1.50** | **1.00** |" in text


def test_goldens_report_any_byte_that_differs(tmp_path: Path) -> None:
    """make goldens fails on one changed byte, a changed status, or a patient in one dump only."""
    from bench.goldens import differences, digest, load

    def dump(name: str, rows: list[tuple[str, int, str]]) -> dict[str, tuple[int, str]]:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"patient": p, "status": s, "body": b}) + "\n" for p, s, b in rows))
        return load(path)

    before = dump("before.jsonl", [("demo/01", 200, '{"cards":[]}'), ("demo/02", 200, '{"cards":[{"a":1}]}')])
    same = dump("same.jsonl", [("demo/02", 200, '{"cards":[{"a":1}]}'), ("demo/01", 200, '{"cards":[]}')])
    assert differences(before, same) == []
    assert digest(before) == digest(same)  # the order of the lines does not matter
    changed = dump("changed.jsonl", [("demo/01", 200, '{"cards":[]}'), ("demo/02", 200, '{"cards":[{"a":2}]}'),
                                     ("demo/03", 412, "{}")])  # fmt: skip
    assert differences(before, changed) == ["demo/02", "demo/03"]
    assert digest(before) != digest(changed)
    status = dump("status.jsonl", [("demo/01", 400, '{"cards":[]}'), ("demo/02", 200, '{"cards":[{"a":1}]}')])
    assert differences(before, status) == ["demo/01"]
