"""A local HTTP proxy in front of the real FHIR test server that misbehaves on demand.

Modes: pass, delay (sleep before answering), drop (close the connection without an answer), an HTTP status
("500", "401", "503"), malformed
(200 with broken JSON), fail-next-pages (first page of each search passes, `next` pages answer 500), refuse
(stop listening: connection refused). `only` limits the fault to paths containing that text. Loopback only.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:PORT/fhir
        self.mode, self.only, self.delay_s = "pass", "", 0.0
        self.requests: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, mode: str, only: str = "", delay_s: float = 0.0) -> None:
        self.mode, self.only, self.delay_s = mode, only, delay_s
        self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(h.path)
        faulty = self.mode != "pass" and self.only in h.path
        is_next_page = "_getpages" in h.path or "_page" in h.path or "_offset" in h.path or "page=" in h.path
        if faulty and self.mode == "delay":
            time.sleep(self.delay_s)
        if faulty and self.mode == "drop":
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if faulty and self.mode.isdigit():  # answer with that HTTP status
            return self.reply(h, int(self.mode), b'{"resourceType":"OperationOutcome","issue":[]}')
        if faulty and self.mode == "fail-next-pages" and is_next_page:
            return self.reply(h, 500, b"{}")
        upstream_path = h.path.removeprefix("/fhir")
        response = requests.get(self.upstream + upstream_path, headers={k: v for k, v in h.headers.items()
                                if k.lower() in ("authorization", "accept")}, timeout=30)  # fmt: skip
        body = response.content.replace(self.upstream.encode(), self.base.encode())
        if faulty and self.mode == "malformed":
            body = body[: len(body) // 2]
        self.reply(h, response.status_code, body)

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
