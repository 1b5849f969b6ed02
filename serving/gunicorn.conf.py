"""gunicorn settings of the scoring service, from the environment (12-factor style)."""

import os
import shutil
import sys
import tempfile

# Loopback unless HOST says otherwise (the image sets HOST=0.0.0.0 and compose requires a key).
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
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
# Registry-event notices and seen webhook delivery ids (serving/webhook.py): a webhook reaches one
# worker, every worker's notice thread reads this folder.
_EVENTS_DIR = os.environ.get("SERVING_EVENTS_DIR") or tempfile.mkdtemp(prefix="serving-events-")
os.environ["SERVING_EVENTS_DIR"] = _EVENTS_DIR


def on_starting(server: object) -> None:
    """Refuse an open API beyond loopback, bad limits or SERVING_MODELS; start from empty metric files."""
    from serving.guard import exposure_error, max_inflight_bytes
    from serving.selection import serving_configs

    try:
        max_inflight_bytes()  # reads both byte limits: a bad value stops the master, with its message
        serving_configs()  # an unknown SERVING_MODELS name (or a broken config) too, before any worker
        refusal = exposure_error(list(server.cfg.address))  # type: ignore[attr-defined]
    except ValueError as exc:
        refusal = str(exc)
    if refusal:
        server.log.error(refusal)  # type: ignore[attr-defined]
        sys.exit(1)
    shutil.rmtree(_METRICS_DIR, ignore_errors=True)
    os.makedirs(_METRICS_DIR, exist_ok=True)
    os.makedirs(_EVENTS_DIR, mode=0o700, exist_ok=True)  # old notices are harmless: workers start past them


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
