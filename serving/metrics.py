"""Prometheus metrics of the service, summed over every gunicorn worker.

Under gunicorn (`gunicorn.conf.py` sets `PROMETHEUS_MULTIPROC_DIR`) each worker writes its
counters to memory-mapped files in that folder and `/metrics` reads them all, so a scrape sees
the whole service whichever worker answers it. Without the variable (one process, tests) the
metrics live in this process's registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_OWN = None if MULTIPROCESS else CollectorRegistry()

REQUESTS = Counter("serving_requests", "Scoring requests", ["model", "status"], registry=_OWN)
LATENCY = Histogram(
    "serving_request_seconds",
    "Scoring request latency, from the body parsed to the response built",
    ["model", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=_OWN,
)
BATCH_ROWS = Histogram(
    "serving_batch_records",
    "Records per scoring batch (requests that queued together are scored in one batch)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=_OWN,
)
# Values scored although they break a value rule (batch scoring counts the same as warnings).
RECORD_WARNINGS = Counter(
    "serving_record_warnings",
    "Record values scored with a warning, by rule kind (not_allowed, below_minimum, above_maximum, pattern)",
    ["model", "kind"],
    registry=_OWN,
)
# One sample per live worker (label pid): every worker should report the same version.
VERSION = Gauge(
    "serving_model_version", "Registry version served", ["model"], registry=_OWN, multiprocess_mode="liveall"
)
# Shadow scoring (shadow.py), per record: scored by the challenger, dropped (queue full, or the
# challenger went away while they waited), failed (the challenger raised), unwritten (the lake
# refused them for longer than the buffer holds).
SHADOW_RECORDS = Counter(
    "serving_shadow_records",
    "Records of answered requests shadow-scored by the challenger, by outcome "
    "(scored, dropped, failed, unwritten)",
    ["model", "outcome"],
    registry=_OWN,
)
CHALLENGER_VERSION = Gauge(
    "serving_challenger_version",
    "Registry version shadow-scoring beside the champion (0: none)",
    ["model"],
    registry=_OWN,
    multiprocess_mode="liveall",
)


def exposition() -> tuple[bytes, str]:
    """The metrics text of the whole service and its content type."""
    if not MULTIPROCESS:
        assert _OWN is not None  # noqa: S101 - type narrowing: _OWN is set whenever MULTIPROCESS is off
        return generate_latest(_OWN), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
