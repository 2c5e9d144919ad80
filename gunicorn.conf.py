"""gunicorn settings for ckd-cds (`ckd-cds serve`, docker-compose). Override with GUNICORN_* variables."""

import os

bind = f"{os.environ.get('CKD_CDS_HOST', '127.0.0.1')}:{os.environ.get('CKD_CDS_PORT', '8080')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"  # FHIR fallback waits on I/O; threads keep a worker responsive (contract D-04)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30  # far above the 3 s request budget
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# Route template only: the query string and body never reach the access log (contract D-09).
access_log_format = (
    '{"time":"%(t)s","method":"%(m)s","path":"%(U)s","status":%(s)s,"bytes":%(B)s,'
    '"duration_us":%(D)s,"request_id":"%({x-request-id}o)s"}'
)
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def child_exit(server, worker):
    """Prometheus multiprocess mode: drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
