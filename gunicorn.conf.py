"""gunicorn settings for ckd-cds (`ckd-cds serve`, docker-compose). Override with GUNICORN_* variables."""

import gc
import os

from service.gunicorn_hooks import install

install()  # gunicorn's own 400/414/431 answers as OperationOutcome JSON (service/gunicorn_hooks.py)

bind = f"{os.environ.get('CKD_CDS_HOST', '127.0.0.1')}:{os.environ.get('CKD_CDS_PORT', '8080')}"
# Chosen by measurement (`make bench-workers`, docs/performance.md): processes, not threads, for CPU-bound hook
# calls (threads contend for the GIL and stretch the tail); gthread rather than sync for keep-alive connections.
# Set GUNICORN_WORKERS to about twice the cores the container may use.
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = 30  # far above the 3 s request budget
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# Route template only: the query string and body never reach the access log (contract D-09).
access_log_format = (
    '{"time":"%(t)s","method":"%(m)s","path":"%(U)s","status":%(s)s,"bytes":%(B)s,'
    '"duration_us":%(D)s,"request_id":"%({x-request-id}o)s"}'
)
logger_class = "service.gunicorn_hooks.JsonAccessLogger"  # every value JSON-escaped: one valid line per request
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def child_exit(server, worker):
    """Prometheus multiprocess mode: drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Move everything loaded so far (modules, the app, its configuration) out of the garbage collector's sight.

    Each request allocates tens of thousands of short-lived objects (a 150 KB body parses into about 6,000
    containers); every collection of the oldest generation would otherwise walk the ~100,000 objects of the loaded
    application as well. Measured in-process on scenario (a): 6.5 -> 4.2 ms CPU per request (docs/performance.md).
    https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.freeze()
