"""gunicorn integration (loaded by gunicorn.conf.py in the master, inherited by every worker).

- `JsonAccessLogger`: every access-log value is escaped as a JSON string, so a `%0a` or `%00` in a path can neither
  split a line nor corrupt it (issue #13); gunicorn's own escaping handles only double quotes.
- `write_operation_outcome`: the answers gunicorn gives by itself, before the application sees a request (malformed
  request line 400, URI too long 414, headers too large 431, ...), become FHIR OperationOutcome JSON like every other
  error of the service, instead of gunicorn's HTML page. The reason phrase is gunicorn's; the detail that could echo
  request content is left out.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger, SafeAtoms

ISSUE_CODES = {400: "invalid", 413: "too-long", 414: "too-long", 431: "too-long"}


class JsonSafeAtoms(SafeAtoms):  # type: ignore[misc]
    """gunicorn's atoms with every string escaped for a JSON string literal (control characters included)."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = json.dumps(value)[1:-1] if isinstance(value, str) else value


class JsonAccessLogger(Logger):  # type: ignore[misc]
    atoms_wrapper_class = JsonSafeAtoms


def operation_outcome(status: int, reason: str) -> bytes:
    issue = {"severity": "error", "code": ISSUE_CODES.get(status, "exception"), "diagnostics": reason}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


def write_operation_outcome(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Replacement for gunicorn.util.write_error (same signature; `mesg` is not echoed)."""
    body = operation_outcome(status_int, reason)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin1")  # fmt: skip
    util.write_nonblock(sock, head + body)


def install() -> None:
    util.write_error = write_operation_outcome
