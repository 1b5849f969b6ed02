"""The production topology as real processes on loopback, driven the way its users drive it.

Airflow (api-server, scheduler, dag-processor, triggerer, a Celery worker on Redis, metadata in Postgres,
the FAB auth manager), an MLflow tracking server (Postgres backend, artifacts proxied to S3, its
basic-auth app with least-privilege users for the workers and serving), moto's S3 server for
MinIO, aiosmtpd for mailpit and the serving app under gunicorn. Run by `make test-stack`
(marker `stack`) and by `.ci/run`. Skips with the reason where Postgres or Redis are unreachable,
except under CI (`CI` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from tests.helpers import Inbox, free_port
from tests.stack.native import PROJECT_DIR, AirflowClient, Stack, unreachable_services

pytestmark = [pytest.mark.stack, pytest.mark.slow]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
DAY = "2026-11-20"
API_KEY = "stack-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every service of the compose file, started here and stopped at the end of the module."""
    missing = unreachable_services()
    if missing:
        reason = "the native stack needs " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI machines start them before the run)")
        pytest.skip(reason)
    from aiosmtpd.controller import Controller
    from tabular_mlops.generators.home_credit import generate_home_credit
    from tabular_mlops.generators.telco import generate_telco

    root = tmp_path_factory.mktemp("stack")
    configs = root / "configs"
    shutil.copytree(PROJECT_DIR / "include" / "configs", configs)
    raw = {"churn": root / "raw" / "telco", "credit_risk": root / "raw" / "home_credit"}
    generate_telco(raw["churn"], rows=7043, seed=7)
    generate_home_credit(raw["credit_risk"], rows=8000, seed=7)
    for model, folder in raw.items():  # where the configs' data comes from (a retrain reads it)
        path = configs / f"{model}.yaml"
        config = yaml.safe_load(path.read_text())
        config["data"]["source"] = str(folder)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    # The stack's clock is real: switching a DAG on would start today's cron run, which waits for
    # (or judges) yesterday's partition that no test writes, and holds the DAG's one run slot. Runs
    # here are triggered; the calendar itself is tested with dag.test (test_scoring_calendar.py).
    defaults = yaml.safe_load((configs / "defaults.yaml").read_text())
    defaults["schedules"].update(scoring=None, monitoring=None)
    defaults["scoring"]["wait_hours"] = 0.25  # the trigger then looks for the marker every 9 s
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False))

    inbox = Inbox()
    native = Stack(root)
    native.ports["smtp"] = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=native.ports["smtp"])
    smtp.start()
    # This process checks the registry as the MLflow admin (MlflowClient reads these variables).
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        native.start_s3()
        native.start_mlflow()
        native.grant_registry_access(configs)
        os.environ.update(native.mlflow_credentials("admin"))
        native.start_airflow(configs)
        api = AirflowClient(native.url("airflow"), native.password)
        yield {"stack": native, "raw": raw, "inbox": inbox, "api": api, "configs": configs}
    except BaseException:
        for name in native.processes:
            print(f"--- {name} ---\n{native.log(name)}")
        raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        native.stop()
        smtp.stop()


def _s3(native: Stack) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=native.url("s3"), **native.aws_keys())


def _mlflow(native: Stack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=native.url("mlflow"), registry_uri=native.url("mlflow"))


def _fail_with_logs(native: Stack, api: AirflowClient, dag_id: str, run: dict) -> str:
    states = api.task_states(dag_id, run["dag_run_id"])
    return f"{dag_id} {run['state']}: {states}\n--- worker ---\n{native.log('worker')}"


def test_training_dags_triggered_over_rest_register_and_promote_both_models(stack: dict) -> None:
    native, api = stack["stack"], stack["api"]
    runs = {
        model: api.trigger(f"{model}_training", {"data": str(stack["raw"][model])})
        for model in ("churn", "credit_risk")
    }
    for model, run_id in runs.items():
        run = api.wait_run(f"{model}_training", run_id)
        assert run["state"] == "success", _fail_with_logs(native, api, f"{model}_training", run)
    client = _mlflow(native)
    for name in ("churn-classifier", "credit-risk-classifier"):
        version = client.get_model_version_by_alias(name, "production")
        tags = client.get_run(version.run_id).data.tags
        assert tags["airflow_dag_id"].endswith("_training") and tags["airflow_run_id"]
    # The artifacts went through the tracking server into the bucket, not onto a local disk.
    stored = _s3(native).list_objects_v2(Bucket="mlflow").get("KeyCount", 0)
    assert stored > 10


def test_the_registry_admits_each_user_to_its_grants_only(stack: dict) -> None:
    native = stack["stack"]
    # The bootstrap is a one-shot that runs at every `docker compose up`: a second run must succeed.
    again = native.grant_registry_access(stack["configs"])
    assert set(again["users"].values()) == {"password updated"}, again
    api = f"{native.url('mlflow')}/api/2.0/mlflow"
    name = "churn-classifier"
    production = _mlflow(native).get_model_version_by_alias(name, "production").version
    check = {"name": name, "alias": "access-check", "version": production}
    source = {"name": name, "source": f"models:/{name}/{production}"}
    anonymous = {
        "search": httpx.get(f"{api}/registered-models/search", timeout=30),
        "register": httpx.post(f"{api}/model-versions/create", json=source, timeout=30),
        "set-alias": httpx.post(f"{api}/registered-models/alias", json=check, timeout=30),
    }
    assert {call: r.status_code for call, r in anonymous.items()} == dict.fromkeys(anonymous, 401)

    serving, workers = native.mlflow_users["serving"], native.mlflow_users["workers"]
    read = httpx.get(
        f"{api}/registered-models/alias", params={"name": name, "alias": "production"}, auth=serving
    )
    assert read.status_code == 200 and read.json()["model_version"]["version"] == production
    refused = httpx.post(f"{api}/registered-models/alias", json=check, auth=serving, timeout=30)
    assert refused.status_code == 403, refused.text
    with pytest.raises(Exception, match="access-check"):
        _mlflow(native).get_model_version_by_alias(name, "access-check")

    moved = httpx.post(f"{api}/registered-models/alias", json=check, auth=workers, timeout=30)
    assert moved.status_code == 200, moved.text
    assert _mlflow(native).get_model_version_by_alias(name, "access-check").version == production
    # EDIT, not MANAGE: the workers cannot delete what they move.
    delete = httpx.request("DELETE", f"{api}/registered-models/alias", params=check, auth=workers, timeout=30)
    assert delete.status_code == 403, delete.text
    _mlflow(native).delete_registered_model_alias(name, "access-check")  # as the admin


def _drifted_partition(raw: Path) -> bytes:
    frame = pd.read_csv(raw / TELCO_FILE, dtype=str, keep_default_na=False).head(1500)
    frame["MonthlyCharges"] = (pd.to_numeric(frame["MonthlyCharges"]) * 1.6 + 20).round(2).astype(str)
    frame["Contract"] = "Month-to-month"
    frame["InternetService"] = "Fiber optic"
    return frame.drop(columns=["Churn"]).to_csv(index=False).encode()


def test_scoring_an_s3_partition_triggers_monitoring_and_a_drift_alert_email(stack: dict) -> None:
    native, api = stack["stack"], stack["api"]
    s3 = _s3(native)
    api.unpause("churn_monitoring")  # scheduled on the predictions Asset
    before = len(api.runs("churn_monitoring"))
    run_id = api.trigger("churn_batch_scoring", {}, logical_date=f"{DAY}T02:00:00Z")
    # The partition is late: the run waits for it in the triggerer, holding no worker slot.
    deadline = time.monotonic() + 300
    while api.task_states("churn_batch_scoring", run_id).get("wait_for_partition", ("", 0))[0] != "deferred":
        assert time.monotonic() < deadline, api.task_states("churn_batch_scoring", run_id)
        time.sleep(2)
    key = f"incoming/churn/dt={DAY}/{TELCO_FILE}"
    s3.put_object(Bucket="lake", Key=key, Body=_drifted_partition(stack["raw"]["churn"]))
    # The producer's completion marker, its last file.
    s3.put_object(Bucket="lake", Key=f"incoming/churn/dt={DAY}/_SUCCESS", Body=b"")
    run = api.wait_run("churn_batch_scoring", run_id)
    assert run["state"] == "success", _fail_with_logs(native, api, "churn_batch_scoring", run)
    manifest_key = f"predictions/churn/dt={DAY}/_manifest.json"
    manifest = json.loads(s3.get_object(Bucket="lake", Key=manifest_key)["Body"].read())
    assert manifest["counts"]["scored"] == 1500

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(api.runs("churn_monitoring")) == before:
        time.sleep(3)
    monitoring = api.runs("churn_monitoring")[0]
    done = api.wait_run("churn_monitoring", monitoring["dag_run_id"])
    assert done["state"] == "success", _fail_with_logs(native, api, "churn_monitoring", done)
    assert done["run_type"] == "asset_triggered"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stack["inbox"].messages:
        time.sleep(1)
    assert stack["inbox"].messages, "no drift alert email arrived"
    message = stack["inbox"].messages[0].content.decode(errors="replace")
    assert "churn" in message and "drift" in message.lower()
    # The alert asked for a retrain: the retrain Asset event scheduled churn_training.
    deadline = time.monotonic() + 120
    while not [r for r in api.runs("churn_training") if r["run_type"] == "asset_triggered"]:
        assert time.monotonic() < deadline, "the drift alert did not schedule a retrain"
        time.sleep(3)


def _churn_record(raw: Path) -> dict[str, Any]:
    """The first generated customer as a scoring request body."""
    record = pd.read_csv(raw / TELCO_FILE, nrows=1).drop(columns=["Churn"])
    body = {k: (None if pd.isna(v) else v) for k, v in record.to_dict(orient="records")[0].items()}
    body["TotalCharges"] = float(body["TotalCharges"]) if str(body["TotalCharges"]).strip() else None
    return body


def test_serving_scores_over_http_with_the_registry_behind_the_tracking_server(stack: dict) -> None:
    native = stack["stack"]
    url = native.start_serving(API_KEY)
    body = _churn_record(stack["raw"]["churn"])
    auth = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{url}/v1/models/churn/predict", json=body, headers=auth, timeout=30)
    assert response.status_code == 200, response.text
    production = _mlflow(native).get_model_version_by_alias("churn-classifier", "production").version
    assert response.json()["model_version"] == str(production)


def test_a_worker_killed_mid_training_is_replaced_and_the_run_registers_one_version(stack: dict) -> None:
    native, api = stack["stack"], stack["api"]
    client = _mlflow(native)
    for earlier in api.runs("churn_training"):  # the retrain the drift alert asked for, if any
        api.wait_run("churn_training", earlier["dag_run_id"])
    before = {v.version for v in client.search_model_versions("name = 'churn-classifier'")}
    run_id = api.trigger("churn_training", {"data": str(stack["raw"]["churn"])})
    deadline = time.monotonic() + 600
    while api.task_states("churn_training", run_id).get("train", ("", 0))[0] != "running":
        assert time.monotonic() < deadline, api.task_states("churn_training", run_id)
        time.sleep(1)
    time.sleep(3)  # inside the fit
    native.kill("worker")  # SIGKILL the worker and its task processes: a lost machine
    native.start_worker("worker-2")
    run = api.wait_run("churn_training", run_id, timeout=900)
    assert run["state"] == "success", _fail_with_logs(native, api, "churn_training", run)
    state, tries = api.task_states("churn_training", run_id)["train"]
    assert state == "success" and tries >= 2  # the scheduler noticed the lost task and retried it
    after = {v.version for v in client.search_model_versions("name = 'churn-classifier'")}
    assert len(after - before) == 1, sorted(after - before)


def test_serving_keeps_answering_through_an_mlflow_outage_and_reconnects(stack: dict) -> None:
    native = stack["stack"]
    url = native.url("serving")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = _churn_record(stack["raw"]["churn"])
    # An earlier test may just have promoted a version: serving (one worker here) must run what
    # production points at before the outage, or it would swap versions when the registry is back.
    production = str(_mlflow(native).get_model_version_by_alias("churn-classifier", "production").version)
    health = _wait_health(url, lambda h: h["versions"].get("churn") == production and not h["errors"])
    served = health["versions"]["churn"]

    native.kill("mlflow")
    health = _wait_health(url, lambda h: h["registry"].get("reachable") is False)
    assert "registry unreachable" in health["errors"]["churn"] and health["versions"]["churn"] == served
    for _ in range(5):
        response = httpx.post(f"{url}/v1/models/churn/predict", json=body, headers=auth, timeout=30)
        assert response.status_code == 200 and response.json()["model_version"] == served

    native.start_mlflow()  # same port, same Postgres store
    health = _wait_health(url, lambda h: h["registry"].get("reachable") is True and not h["errors"])
    assert health["versions"]["churn"] == served


def _wait_health(url: str, condition: Any, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    health: dict = {}
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if condition(health):
            return health
        time.sleep(1)
    raise AssertionError(f"/health never reached the expected state: {health}")


def test_a_promotion_reaches_serving_through_the_registry_webhook(
    stack: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Moving production (as the admin, through the bundle's registry code) reaches serving through
    MLflow's signed webhook: prints the time from the alias move to the first answer carrying the new
    version (polling is 30 s away). A forged call gets 401 and posts no notice."""
    from tabular_mlops import registry

    native = stack["stack"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", native.url("mlflow"))
    url = native.url("serving") if "serving" in native.processes else native.start_serving(API_KEY)
    name, client = "churn-classifier", _mlflow(native)
    production = str(client.get_model_version_by_alias(name, "production").version)
    others = [v.version for v in client.search_model_versions(f"name = '{name}'") if v.version != production]
    assert others, "the training tests registered only one churn version"
    target = str(max(others, key=int))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = _churn_record(stack["raw"]["churn"])
    _wait_health(url, lambda h: h["versions"].get("churn") == production)
    notice = native.root / "serving-events" / "churn.reload"

    def notices() -> str:
        return notice.read_text() if notice.exists() else ""

    before = notices()

    forged = {"X-MLflow-Delivery-Id": "forged-1", "X-MLflow-Timestamp": str(int(time.time()))}
    forged["X-MLflow-Signature"] = "v1,bm90IHRoZSBzaWduYXR1cmU="
    event = {
        "entity": "model_version_alias",
        "data": {"name": name, "alias": "production", "version": target},
    }
    refused = httpx.post(f"{url}/internal/registry-events", json=event, headers=forged, timeout=10)
    assert refused.status_code == 401
    assert notices() == before  # nothing posted: no worker reloads

    with httpx.Client(headers=auth, timeout=30) as http:
        moved = time.monotonic()  # before the call: the figure includes the audit tags written with it
        registry.promote(name, target, "stack-test", reason="webhook reload time")
        version = None
        while time.monotonic() - moved < 60:
            response = http.post(f"{url}/v1/models/churn/predict", json=body)
            assert response.status_code == 200, response.text
            version = response.json()["model_version"]
            if version == target:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - moved
    try:
        assert version == target, native.log("serving") + native.log("mlflow")
        assert f"{name}@production" in notices()[len(before) :]  # the webhook's notice, not a poll
        with capsys.disabled():
            print(f"\n[webhook] alias move -> first response with churn v{target}: {elapsed:.2f} s")
    finally:
        registry.rollback(name, "stack-test", reason="end of the webhook reload test")
        _wait_health(url, lambda h: h["versions"].get("churn") == production)
