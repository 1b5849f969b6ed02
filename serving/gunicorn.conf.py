"""gunicorn settings of the scoring service, from the environment (12-factor style)."""

import os

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
