"""The serving image, checked statically (no Docker engine here): lean, non-root, healthy, pinned."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DOCKERFILE = (PROJECT_DIR / "serving" / "Dockerfile").read_text()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().split("[")[0]] = match.group(2)
    return pins


def test_image_is_slim_non_root_with_healthcheck_and_gunicorn_entrypoint() -> None:
    assert re.search(r"^FROM python:3\.11-slim$", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in DOCKERFILE and "/health" in DOCKERFILE
    assert re.search(
        r'^ENTRYPOINT \["gunicorn", "-c", "serving/gunicorn\.conf\.py", "serving\.app:app"\]$',
        DOCKERFILE,
        re.M,
    )
    for source in ("serving/requirements.txt", "plugins/tabular_mlops", "include", "serving"):
        assert re.search(rf"^COPY {re.escape(source)} ", DOCKERFILE, re.M), source


def test_serving_lock_is_full_agrees_with_the_bundle_lock_and_leaves_airflow_out() -> None:
    serving = _pins(PROJECT_DIR / "serving" / "requirements.txt")
    bundle = _pins(PROJECT_DIR / "requirements.txt")
    assert {"fastapi", "gunicorn", "uvicorn-worker", "mlflow", "xgboost", "lightgbm", "duckdb"} <= set(
        serving
    )
    assert not [name for name in serving if name.startswith("apache-airflow")]
    disagree = {
        name: (v, bundle[name]) for name, v in serving.items() if name in bundle and bundle[name] != v
    }
    assert disagree == {}
