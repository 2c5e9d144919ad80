#!/usr/bin/env bash
# Start the FHIR test server with the demo patients, start ckd-cds on 127.0.0.1:8080 under gunicorn,
# show an example patient-view call and its cards, then keep serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/python -m service.fhir.testserver stop >/dev/null 2>&1 || true
$BIN/python -m service.fhir.testserver start --load-demo >/dev/null
# The test EHR (SMART authorization server, authlib) in front of it, for the kidney trend view (issue #23).
$BIN/python -m service.fhir.testehr >var/test-ehr.log 2>&1 &
EHR_PID=$!
trap '$BIN/python -m service.fhir.testserver stop; kill ${SERVICE_PID:-0} ${EHR_PID:-0} 2>/dev/null || true' EXIT
# A demo admin with a fresh random password (printed below; only its scrypt hash reaches the service).
ADMIN_PASSWORD=$($BIN/python -c 'import secrets; print(secrets.token_urlsafe(12))')
export CKD_CDS_ADMIN_USERS=$(ADMIN_PASSWORD="$ADMIN_PASSWORD" $BIN/python -c 'import json, os
from werkzeug.security import generate_password_hash
print(json.dumps({"admin": {"role": "editor", "password_hash": generate_password_hash(os.environ["ADMIN_PASSWORD"])}}))')
CKD_CDS_SERVICE_CONFIG=config/demo-service.yaml CKD_CDS_OPEN_FHIR_SERVERS="" $BIN/ckd-cds serve --host 127.0.0.1 --port 8080 &
SERVICE_PID=$!
$BIN/python -m service.democall
echo
echo "ckd-cds is serving on http://127.0.0.1:8080 (Ctrl-C to stop)."
echo "Admin console: http://127.0.0.1:8080/admin  user: admin  password: $ADMIN_PASSWORD"
wait $SERVICE_PID
