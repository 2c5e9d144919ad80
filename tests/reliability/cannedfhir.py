"""A loopback FHIR server that answers with canned resources, as a buggy or hostile EHR would (issue #13).

`CannedFhir(patient, observations, ...)` answers `Patient/<id>` with `patient` (whatever its id) and every search
with a searchset Bundle of the resources of that type; `requests` records each path asked for. `padding` adds that
many bytes to every answer (an oversized page); `trickle_s` sends the body one byte at a time with that pause.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


class CannedFhir:
    def __init__(
        self, patient: dict[str, Any], resources: list[dict[str, Any]], padding: int = 0, trickle_s: float = 0.0
    ) -> None:
        self.patient, self.resources, self.padding, self.trickle_s = patient, resources, padding, trickle_s
        self.requests: list[str] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                canned.requests.append(self.path)
                body = orjson.dumps(canned.answer(self.path)) + b" " * canned.padding
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                if canned.trickle_s:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(canned.trickle_s)
                    except OSError:
                        pass  # the client gave up
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> dict[str, Any]:
        kind = path.removeprefix("/fhir/").split("?")[0].split("/")[0]
        if kind == "Patient":
            return self.patient
        chosen = [r for r in self.resources if r.get("resourceType") == kind]
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"resource": r, "search": {"mode": "match"}} for r in chosen]}  # fmt: skip

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
