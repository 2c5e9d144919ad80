"""The benchmark floor: a minimal Flask app under the same gunicorn settings as the service.

Its patient-view endpoint parses the same JSON body and returns one static card: the cost of the framework, the
server and the JSON parse, with no clinical work. `make bench` compares the service against it.
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask(__name__)
CARD = orjson.dumps({"cards": [{"summary": "Static floor card", "indicator": "info", "source": {"label": "floor"}}]})


@app.post("/cds-services/<service_id>")
def patient_view(service_id: str) -> Response:
    body = orjson.loads(request.get_data())
    if not isinstance(body, dict) or "context" not in body:
        return Response(b'{"error":"bad request"}', status=400, mimetype="application/json")
    return Response(CARD, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
