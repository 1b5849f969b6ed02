"""gunicorn settings of the scoring service, from the environment (12-factor style)."""

import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("SERVING_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
worker_class = "uvicorn_worker.UvicornWorker"
timeout = int(os.environ.get("SERVING_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("SERVING_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("SERVING_KEEPALIVE", "5"))
# Load the models in each worker after the fork: boosters and DuckDB do not survive a fork well.
preload_app = False
accesslog = os.environ.get("SERVING_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("SERVING_LOG_LEVEL", "info")

# Prometheus multiprocess mode: workers write their metrics to files here, /metrics sums them.
# Set before any worker imports the app (the variable is read when the metrics are created).
_METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="serving-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR


def on_starting(server: object) -> None:
    """Start from empty metric files (a restarted service must not count its past life twice)."""
    shutil.rmtree(_METRICS_DIR, ignore_errors=True)
    os.makedirs(_METRICS_DIR, exist_ok=True)


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
