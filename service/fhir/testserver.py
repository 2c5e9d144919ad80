"""The local FHIR test server: sekmet-fhir 0.1.1 in its own virtual environment (it pins its own FastAPI/pydantic).

Started on 127.0.0.1 with a generated settings file (simulator off, bearer-token auth on, a temporary data dir),
readiness polled on /fhir/metadata, stopped by PID. Used by the pytest session fixture, `make demo` and
`python -m service.fhir.testserver start|load|stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
FHIR_VENV = Path(os.environ.get("CKD_CDS_FHIR_VENV", ROOT / ".fhir-venv"))
SEKMET = "sekmet-fhir==0.1.1"
STATE_FILE = ROOT / "var" / "fhir-server.json"


@dataclass(frozen=True, slots=True)
class RunningServer:
    base_url: str
    token: str
    pid: int
    data_dir: str


def ensure_venv() -> Path:
    """Create .fhir-venv with sekmet-fhir if it is not there yet; returns the sekmet executable."""
    exe = FHIR_VENV / "bin" / "sekmet"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FHIR_VENV)], check=True)
        pip = [str(FHIR_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SEKMET]
        subprocess.run(pip, check=True)
    return exe


def settings_yaml(port: int, token: str, data_dir: str) -> str:
    return json.dumps(  # JSON is YAML
        {
            "base_url": f"http://127.0.0.1:{port}/fhir",
            "host": "127.0.0.1",
            "port": port,
            "data_dir": data_dir,
            "simulator": {"enabled": False},
            "server_auth": {"types": ["bearer"], "tokens": [token]},
            "validation": {"inbound": "off"},
            "log_inbound": False,
        }
    )


def answers(base_url: str) -> bool:
    try:
        requests.get(f"{base_url}/metadata", timeout=1)
    except requests.RequestException:
        return False
    return True


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200; RuntimeError on timeout, or at once if `proc` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not become ready within {timeout:g} s")


def start(port: int = 8091, token: str | None = None) -> RunningServer:
    exe = ensure_venv()
    if answers(f"http://127.0.0.1:{port}/fhir"):
        raise RuntimeError(f"port {port} is already in use; stop that server first (make fhir-down)")
    token = token or secrets.token_urlsafe(24)
    data_dir = tempfile.mkdtemp(prefix="ckd-cds-fhir-")
    settings = Path(data_dir) / "settings.yaml"
    settings.write_text(settings_yaml(port, token, data_dir), encoding="utf-8")
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 - the server process owns it
    env = {**os.environ, "SEKMET_CONFIG": str(settings)}
    proc = subprocess.Popen(
        [str(exe), "serve", "--config", str(settings)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir
    )
    base_url = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_ready(f"{base_url}/metadata", proc)
    except RuntimeError:
        proc.kill()
        raise
    return RunningServer(base_url=base_url, token=token, pid=proc.pid, data_dir=data_dir)


def stop(server: RunningServer) -> None:
    try:
        os.kill(server.pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(server.pid, 0)
            time.sleep(0.1)
        os.kill(server.pid, signal.SIGKILL)
    except (ProcessLookupError, ChildProcessError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.fhir.testserver")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start")
    s.add_argument("--port", type=int, default=8091)
    s.add_argument("--load-demo", action="store_true", help="load the demo patients (dates shifted to today)")
    sub.add_parser("stop")
    args = parser.parse_args(argv)
    if args.command == "start":
        server = start(args.port)
        if args.load_demo:
            from service.demo import load_demo_patients

            load_demo_patients(server.base_url, server.token)
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(_as_dict(server)))
        STATE_FILE.chmod(0o600)  # the local test server's own generated token
        print(json.dumps({"base_url": server.base_url, "pid": server.pid}))  # noqa: T201 - CLI output
        return 0
    if STATE_FILE.exists():
        stop(RunningServer(**json.loads(STATE_FILE.read_text())))
        STATE_FILE.unlink()
    return 0


def _as_dict(server: RunningServer) -> dict[str, object]:
    return {"base_url": server.base_url, "token": server.token, "pid": server.pid, "data_dir": server.data_dir}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
