"""The serving image, checked statically (no Docker engine here): lean, non-root, healthy, pinned."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

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


def test_loopback_by_default_and_the_image_binds_all_interfaces_only_with_a_key() -> None:
    conf = (PROJECT_DIR / "serving" / "gunicorn.conf.py").read_text()
    assert "os.environ.get('HOST', '127.0.0.1')" in conf and "exposure_error" in conf
    serve = re.search(r"^serve:.*\n\t(.+)$", (PROJECT_DIR / "Makefile").read_text(), re.M)
    assert serve and "HOST=$(or $(HOST),127.0.0.1)" in serve.group(1)
    assert re.search(r"^\s+HOST=0\.0\.0\.0 \\$", DOCKERFILE, re.M)  # the container's port is the way in
    compose = yaml.safe_load((PROJECT_DIR / "docker-compose.yaml").read_text())
    environment = compose["services"]["serving"]["environment"]
    assert str(environment["SERVING_API_KEY"]).startswith("${SERVING_API_KEY:?")  # no key: no start
    assert "SERVING_ALLOW_ANONYMOUS" not in environment
