"""A promotion reaches every serving worker through MLflow's registry webhook, long before polling would.

A real `mlflow server` (SQLite backend, artifacts served from a local folder, 127.0.0.1) delivers
the alias events; the webhook is registered with the bundle's own `mlops webhook`; serving runs
under gunicorn with 2 workers and SERVING_RELOAD_SECONDS=600, so only the webhook can explain a
reload within the test's deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_serving import AUTH, PROJECT_DIR, _start, _telco_records, _wait_ready
from tests.helpers import BIN, free_port, last_json, run_mlops, wait_until_ok

pytestmark = pytest.mark.slow
SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex
DEADLINE = 60.0  # seconds; polling would take SERVING_RELOAD_SECONDS=600


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`mlflow server` with webhooks to loopback allowed; this process's MLflow and bundle env on it."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("webhook")
    configs = root / "configs"
    shutil.copytree(PROJECT_DIR / "include" / "configs", configs)
    (configs / "credit_risk.yaml").unlink()  # churn only: /ready then means churn is loaded
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",  # serving is on 127.0.0.1
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    log = (root / "mlflow.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/health", process, timeout=180)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", url)
            patch.setenv("MLOPS_CONFIG_DIR", str(configs))
            patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
            patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
            patch.setenv("MLOPS_WEBHOOK_SECRET", SECRET)
            yield {"url": url, "root": root, "log": root / "mlflow.log"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _served_versions(url: str) -> list[float]:
    """serving_model_version of churn in every live worker (one sample per pid)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [
        float(v) for v in re.findall(r'^serving_model_version\{model="churn",pid="\d+"\} (\S+)$', text, re.M)
    ]


def _until(condition: Any, timeout: float = DEADLINE) -> bool:
    """Poll condition() every 0.1 s until it holds (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_a_promotion_reaches_every_worker_through_the_webhook(
    registry_server: dict[str, Any], telco_raw: Path
) -> None:
    from mlflow import MlflowClient
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain
    from tabular_mlops.webhooks import ENDPOINT_PATH, WEBHOOK_NAME, register

    serving_port = free_port()
    serving = f"http://127.0.0.1:{serving_port}"
    # Registered before any alias moves, with the bundle's CLI; registering again updates the same one.
    first = run_mlops("webhook", "--url", f"{serving}{ENDPOINT_PATH}")
    assert first.returncode == 0, first.stderr[-3000:]
    again = register(f"{serving}{ENDPOINT_PATH}")
    assert (last_json(first)["action"], again["action"]) == ("created", "updated")
    assert again["webhook_id"] == last_json(first)["webhook_id"]
    named = [w for w in MlflowClient().list_webhooks() if w.name == WEBHOOK_NAME]
    assert len(named) == 1 and {str(e) for e in named[0].events} == {
        "model_version_alias.created",
        "model_version_alias.deleted",
    }

    config = get_model_config("churn")
    old = run_training_chain(config, str(telco_raw), run_id="webhook_v1", promote=False)
    registry.promote(old["registered_name"], old["version"], "test", reason="webhook test: first version")
    new = run_training_chain(config, str(telco_raw), run_id="webhook_v2", promote=False)

    events = registry_server["root"] / "serving-events"
    env = {
        "SERVING_API_KEY": AUTH["Authorization"].removeprefix("Bearer "),
        "SERVING_RELOAD_SECONDS": "600",
        "MLOPS_WEBHOOK_SECRET": SECRET,
        "SERVING_EVENTS_DIR": str(events),
    }
    serving_log = (registry_server["root"] / "serving.log").open("w")
    process = _start(serving_port, env, stderr=serving_log)
    try:
        _wait_ready(serving, process)
        record = _telco_records(telco_raw, 1)[0]
        # /ready answered from one worker: wait until both have loaded (that is start-up, not a reload).
        assert _until(lambda: _served_versions(serving) == [float(old["version"])] * 2), _served_versions(
            serving
        )

        # A forged delivery claiming production moved: 401, no notice posted, nothing reloads.
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": old["registered_name"], "alias": "production", "version": new["version"]},
            }
        )
        forged = {"X-MLflow-Delivery-Id": str(uuid.uuid4()), "X-MLflow-Timestamp": str(int(time.time()))}
        forged["X-MLflow-Signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        for headers in (forged, {}):
            refused = httpx.post(f"{serving}{ENDPOINT_PATH}", content=body, headers=headers, timeout=10)
            assert refused.status_code == 401, refused.text
        # MLflow retries a delivery it could not make: the first promotion's, made before serving
        # listened, may arrive now, signed, and post a notice of its own. The forged one may not.
        notices = "".join(path.read_text() for path in events.glob("*.reload"))
        assert forged["X-MLflow-Delivery-Id"] not in notices, notices
        assert _served_versions(serving) == [float(old["version"])] * 2

        registry.promote(new["registered_name"], new["version"], "test", reason="webhook test: promote")
        answered: list[str] = []

        def new_version_answers() -> bool:
            answer = httpx.post(f"{serving}/v1/models/churn/predict", json=record, headers=AUTH, timeout=10)
            assert answer.status_code == 200, answer.text  # no request fails across the swap
            answered.append(answer.json()["model_version"])
            return answered[-1] == new["version"]

        logs = f"mlflow log: {registry_server['log'].read_text()[-2000:]}\nserving log: {serving_log.name}"
        assert _until(new_version_answers), f"answers {sorted(set(answered))}; {logs}"
        # Both workers, not only the one the webhook reached (polling is 600 s away).
        want = [float(new["version"])] * 2
        assert _until(lambda: _served_versions(serving) == want), (_served_versions(serving), logs)
        assert "production" in (events / "churn.reload").read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        serving_log.close()
