"""Prometheus metrics (contract D-09): low-cardinality labels only, never a patient id, hookInstance or URL.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set before the workers start (service.web.serve), so every worker
writes its own files and /metrics aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("ckd_cds_requests_total", "Hook, discovery and feedback requests", ["service", "hook", "status"])
LATENCY = Histogram(
    "ckd_cds_request_seconds", "Service call latency by data path", ["path"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
)  # fmt: skip
PREFETCH = Counter("ckd_cds_prefetch_keys_total", "Prefetch key states", ["key", "state"])
FALLBACK = Histogram(
    "ckd_cds_fallback_seconds", "FHIR fallback latency per key", ["key", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3),
)  # fmt: skip
PRECONDITION = Counter("ckd_cds_412_total", "412 answers by reason", ["reason"])
AUTH_FAILURES = Counter("ckd_cds_auth_failures_total", "Rejected JWTs by reason", ["reason"])
CARDS = Counter("ckd_cds_cards_total", "Cards returned by rule and indicator", ["rule", "indicator"])
CARDS_OVERFLOW = Counter("ckd_cds_cards_overflow_total", "Cards listed on the overflow card (max_cards)")
FEEDBACK = Counter("ckd_cds_feedback_total", "Feedback items by rule and outcome", ["rule", "outcome"])
RESOURCES_REJECTED = Counter(
    "ckd_cds_resources_rejected_total", "Resources left out: not the patient in context", ["reason"]
)
CARDS_SNOOZED = Counter("ckd_cds_cards_snoozed_total", "Cards left out after an override (issue #14)", ["rule"])
TREND_LAUNCHES = Counter(
    "ckd_cds_trend_launches_total", "Kidney trend view launch steps by outcome (issue #23)", ["step", "outcome"]
)
AUDIT_FAILURES = Counter("ckd_cds_audit_write_failures_total", "Audit records that could not be written")


def exposition() -> tuple[bytes, str]:
    """The metrics page: aggregated over workers in multiprocess mode, this process's registry otherwise."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
