"""Durability under load: feedback posts from concurrent clients while a gunicorn worker is killed with SIGKILL.

Every feedback that got a 2xx must be in the store afterwards. Meanwhile an admin saves new configuration versions
and hook calls run: every card must carry a version label that exists in the history (no half-written config).

    python bench/durability.py --posts 10000 --database sqlite      # or: --database postgresql
Writes bench/results/durability-<database>.json with the machine described.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.demo import demo_bundles  # noqa: E402
from tests import live  # noqa: E402
from tests.web.test_hooks import call, prefetch_for, resources  # noqa: E402

TOKEN = "durability-admin-token"  # noqa: S105 - a throwaway token for a local test server
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def database(kind: str) -> tuple[str, Any]:
    """(URL, cleanup) for a fresh SQLite file or a fresh PostgreSQL database."""
    if kind == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="ckd-dur-")) / "store.db"
        return f"sqlite:///{path}", lambda: None
    name = f"ckd_cds_dur_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def worker_pids(master: int) -> list[int]:
    """The master's worker processes: the children of any of its threads (a supervisor thread may start a
    replacement), without multiprocessing's resource tracker (uvicorn --workers starts one)."""
    pids = []
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            continue
    out = []
    for pid in sorted(set(pids)):
        try:
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def master_pid(port: int) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and str(port).encode() in cmd and b"service.cli" in cmd:
                return int(proc.name)
    raise RuntimeError("gunicorn master not found")


def run(kind: str, posts: int, concurrency: int = 16, port: int = 18611) -> dict[str, Any]:
    url, cleanup = database(kind)
    env = {"CKD_CDS_DATABASE_URL": url, "CKD_CDS_ADMIN_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest()}
    acknowledged: list[str] = []
    failed = {"errors": 0}
    labels_seen: set[str] = set()
    stop = threading.Event()
    try:
        with live.served(port, env, workers=2) as base:
            master = master_pid(port)
            session_local = threading.local()

            def post(i: int) -> None:
                s = getattr(session_local, "s", None) or requests.Session()
                session_local.s = s
                card = f"durability-{i}"
                item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}
                try:
                    r = s.post(f"{base}/cds-services/ckd-patient-view/feedback", json={"feedback": [item]}, timeout=10)
                except requests.RequestException:
                    failed["errors"] += 1  # a connection cut by the kill: not acknowledged, may or may not be stored
                    return
                if 200 <= r.status_code < 300:
                    acknowledged.append(card)
                else:
                    failed["errors"] += 1

            def edit_config() -> None:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                age = 40
                while not stop.is_set():
                    try:
                        current = requests.get(f"{base}/admin/api/config", headers=auth, timeout=10).json()
                        body = {"document": {"statin": {"min_age": age}}, "base_version": current["version"],
                                "comment": "durability run"}  # fmt: skip
                        requests.put(f"{base}/admin/api/config", json=body, headers=auth, timeout=10)
                    except requests.RequestException:
                        continue  # the killed worker cut this connection: try again
                    age = 50 if age == 40 else 40
                    time.sleep(0.1)

            def hook_calls() -> None:
                bundle = demo_bundles(date.today())["05-g4-on-metformin"]
                body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))
                while not stop.is_set():
                    try:
                        r = requests.post(f"{base}/cds-services/ckd-patient-view", json=body, timeout=10)
                    except requests.RequestException:
                        continue
                    if r.status_code == 200:
                        labels_seen.update(
                            c["extension"]["org.ckd-cds.rule"]["configVersion"] for c in r.json()["cards"]
                        )

            side = [threading.Thread(target=edit_config), threading.Thread(target=hook_calls)]
            for t in side:
                t.start()
            started = time.monotonic()
            killed: list[int] = []
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                for i in range(posts):
                    pool.submit(post, i)
                    if i == posts // 2:
                        victim = worker_pids(master)[0]
                        os.kill(victim, signal.SIGKILL)  # mid-run, without warning
                        killed.append(victim)
            elapsed = time.monotonic() - started
            stop.set()
            for t in side:
                t.join()
        stored = stored_cards(url)
        saved_labels = stored_labels(url)
        lost = sorted(set(acknowledged) - stored)
        return {
            "database": kind, "posts": posts, "concurrency": concurrency, "acknowledged_2xx": len(acknowledged),
            "not_acknowledged": failed["errors"], "lost_after_2xx": len(lost), "lost_examples": lost[:5],
            "workers_killed": len(killed), "seconds": round(elapsed, 1), "posts_per_second": round(posts / elapsed),
            "config_versions_saved": len(saved_labels), "config_labels_on_cards": len(labels_seen),
            "unknown_labels_on_cards": sorted(labels_seen - saved_labels),
        }  # fmt: skip
    finally:
        cleanup()


def stored_cards(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT card_uuid FROM feedback")).all()
    engine.dispose()
    return {r[0] for r in rows}


def stored_labels(url: str) -> set[str]:
    """Every configuration version ever saved, as the label cards carry (v<number>-<hash prefix>)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version, content_hash FROM config_versions")).all()
    engine.dispose()
    return {f"v{v}-{h[:8]}" for v, h in rows}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "date": date.today().isoformat()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    result = {**run(args.database, args.posts, args.concurrency), "machine": machine()}
    out = ROOT / "bench" / "results" / f"durability-{args.database}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["lost_after_2xx"] == 0 and not result["unknown_labels_on_cards"] else 1


if __name__ == "__main__":
    sys.exit(main())
