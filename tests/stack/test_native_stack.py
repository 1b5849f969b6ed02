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
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from tests.helpers import Inbox, free_port
from tests.stack.native import BIN, PROJECT_DIR, AirflowClient, Stack, unreachable_services

pytestmark = [pytest.mark.stack, pytest.mark.slow]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
CHURN = "churn-classifier"
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
        native.start_online_store()
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


def _answer_approval(native: Stack, api: AirflowClient, run_id: str, verb: str, comment: str) -> str:
    """Wait for credit_risk_training's approval task, then answer it with `mlops <verb>` as admin."""
    deadline = time.monotonic() + 900
    states = api.task_states("credit_risk_training", run_id)
    while states.get("approve", ("", 0))[0] != "awaiting_input":
        assert time.monotonic() < deadline and "failed" not in {s for s, _ in states.values()}, states
        time.sleep(3)
        states = api.task_states("credit_risk_training", run_id)
    env = {
        **os.environ,
        "AIRFLOW_API_URL": native.url("airflow"),
        "AIRFLOW_USERNAME": "admin",
        "AIRFLOW_PASSWORD": native.password,
    }
    command = [str(BIN / "mlops"), verb, "--model", "credit_risk", "--run", run_id, "--comment", comment]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _mails(inbox: Inbox, subject_start: str) -> list[Message]:
    """The messages the stack's SMTP server received whose subject starts with `subject_start`."""
    parsed = [message_from_bytes(envelope.content, policy=default) for envelope in inbox.messages]
    return [m for m in parsed if str(m["Subject"]).startswith(subject_start)]


def _body(message: Message) -> str:
    """The text of a message's HTML (else plain) part."""
    part = message.get_body(preferencelist=("html", "plain"))  # type: ignore[attr-defined]
    return str(part.get_content()) if part is not None else ""


def _decisions(native: Stack, name: str, run_id: str) -> list[dict[str, Any]]:
    """The audit trail's approval answers recorded by one Airflow run, read from the stack's registry."""
    from tabular_mlops import registry

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", native.url("mlflow"))
        trail = registry.history(name)
    answers = ("approve", "reject", "timeout")  # the promote after an approval carries it too
    return [e for e in trail if e["action"] in answers and run_id in e.get("actor", "")]


def test_training_dags_triggered_over_rest_register_and_promote_both_models(stack: dict) -> None:
    native, api = stack["stack"], stack["api"]
    runs = {
        model: api.trigger(f"{model}_training", {"data": str(stack["raw"][model])})
        for model in ("churn", "credit_risk")
    }
    # credit_risk needs a person's approval (promotion.approval: required); admin gives it from a terminal.
    _answer_approval(native, api, runs["credit_risk"], "approve", "reviewed the card")
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
    [answer] = _decisions(native, "credit-risk-classifier", runs["credit_risk"])
    assert answer["action"] == "approve" and answer["approval"]["by"] == "admin"
    # The notifier mailed the approvers (credit_risk's alert recipients) a link to the waiting task.
    [request] = _mails(stack["inbox"], "Approve credit_risk version")
    assert "credit-risk-oncall@example.com" in request["To"]
    assert f"{native.url('airflow')}/dags/credit_risk_training/runs/" in _body(request), _body(request)
    assert answer["approval"]["comment"] == "reviewed the card" and answer["approval"]["responded_at"]
    # credit_risk's history features went to the online store, computed with the version's SQL.
    assert api.task_states("credit_risk_training", runs["credit_risk"])["materialize"][0] == "success"


def test_a_rejected_credit_risk_candidate_moves_nothing_and_the_answer_is_kept(stack: dict) -> None:
    native, api = stack["stack"], stack["api"]
    client = _mlflow(native)
    before = client.get_model_version_by_alias("credit-risk-classifier", "production").version
    run_id = api.trigger("credit_risk_training", {"data": str(stack["raw"]["credit_risk"])})
    _answer_approval(native, api, run_id, "reject", "not this quarter")
    run = api.wait_run("credit_risk_training", run_id)
    states = api.task_states("credit_risk_training", run_id)
    assert states["promote"][0] == "skipped" and states["record_answer"][0] == "success", states
    assert client.get_model_version_by_alias("credit-risk-classifier", "production").version == before
    [answer] = _decisions(native, "credit-risk-classifier", run_id)
    assert answer["action"] == "reject" and answer["approval"]["by"] == "admin", answer
    assert answer["approval"]["comment"] == "not this quarter"
    assert run["state"] == "success", _fail_with_logs(native, api, "credit_risk_training", run)


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


def test_an_unanswered_promotion_times_out_as_reject_through_the_scheduler(stack: dict) -> None:
    """credit_risk_registry's form asks to promote the rejected version; nobody answers. The
    deadline (72 h) is moved into the past in the metadata DB: the real scheduler's sweep applies
    the default (Reject), nothing moves, and the trail records a timeout that nobody answered."""
    import sqlalchemy

    native, api = stack["stack"], stack["api"]
    client, name = _mlflow(native), "credit-risk-classifier"
    production = client.get_model_version_by_alias(name, "production").version
    others = [v.version for v in client.search_model_versions(f"name = '{name}'") if v.version != production]
    assert others, "the rejected run registered no version"
    conf = {"action": "promote_version", "version": str(max(others, key=int)), "reason": "no answer"}
    run_id = api.trigger("credit_risk_registry", conf)
    deadline = time.monotonic() + 300
    while api.task_states("credit_risk_registry", run_id).get("approve", ("", 0))[0] != "awaiting_input":
        assert time.monotonic() < deadline, api.task_states("credit_risk_registry", run_id)
        time.sleep(2)
    engine = sqlalchemy.create_engine(native.airflow_db)
    with engine.begin() as db:  # the 72 hours pass
        db.execute(
            sqlalchemy.text(
                "update task_instance set trigger_timeout = now() - interval '1 second' "
                "where dag_id = 'credit_risk_registry' and run_id = :run and task_id = 'approve'"
            ),
            {"run": run_id},
        )
    engine.dispose()
    run = api.wait_run("credit_risk_registry", run_id, timeout=300)
    states = api.task_states("credit_risk_registry", run_id)
    assert states["act"][0] == "skipped" and states["record_answer"][0] == "success", states
    assert client.get_model_version_by_alias(name, "production").version == production
    [answer] = _decisions(native, name, run_id)
    assert answer["action"] == "timeout" and answer["approval"]["by"] == "nobody (timed out)", answer
    assert run["state"] == "success", _fail_with_logs(native, api, "credit_risk_registry", run)


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
    while time.monotonic() < deadline and not _mails(stack["inbox"], "churn"):
        time.sleep(1)
    alerts = _mails(stack["inbox"], "churn")
    assert alerts, f"no drift alert email arrived: {[m['Subject'] for m in _mails(stack['inbox'], '')]}"
    assert "drift" in alerts[0]["Subject"].lower() + _body(alerts[0]).lower()
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
    # credit_risk by applicant id: the application alone, its history from the online store the
    # training run materialised, with the top three reasons of the decision.
    applications = pd.read_csv(stack["raw"]["credit_risk"] / "application_train.csv", nrows=200)
    bureau = pd.read_csv(stack["raw"]["credit_risk"] / "bureau.csv", usecols=["SK_ID_CURR"])
    known = applications[applications["SK_ID_CURR"].isin(bureau["SK_ID_CURR"])].drop(columns="TARGET")
    application = {
        k: (None if pd.isna(v) else v) for k, v in known.head(1).to_dict(orient="records")[0].items()
    }
    response = httpx.post(
        f"{url}/v1/models/credit_risk/predict?explain=3",
        json={"application": application},
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["history_source"] == "online_store" and prediction["features_as_of"]
    assert len(prediction["reasons"]) == 3 and all(r["description"] for r in prediction["reasons"])
    health = httpx.get(f"{url}/health", timeout=10).json()["online_store"]["credit_risk"]
    assert health["reachable"] and health["materialized"] and health["entities"] > 1000


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


def _shadow_rows(native: Stack, model: str) -> pd.DataFrame:
    """Every shadow row serving wrote to the stack's lake for `model` (s3://lake/shadow/<model>/)."""
    import io

    s3 = _s3(native)
    listed = s3.list_objects_v2(Bucket="lake", Prefix=f"shadow/{model}/").get("Contents", [])
    frames = [
        pd.read_parquet(io.BytesIO(s3.get_object(Bucket="lake", Key=o["Key"])["Body"].read()))
        for o in listed
        if o["Key"].endswith(".parquet")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["request_id"])


def _churn_versions(native: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, list[str]]:
    """This process on the stack's registry (as its admin, with the signing key that promote and
    set_challenger verify); churn's MLflow client, production version and its other versions."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", native.url("mlflow"))
    monkeypatch.setenv("MLOPS_MODEL_SIGNING_KEY", native.signing_key)
    client = _mlflow(native)
    production = str(client.get_model_version_by_alias(CHURN, "production").version)
    listed = client.search_model_versions(f"name = '{CHURN}'")
    return client, production, [str(v.version) for v in listed if str(v.version) != production]


def test_a_shadow_challenger_scores_every_request_into_the_lake(
    stack: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second churn version as `challenger` (set as the MLflow admin): serving answers with the
    champion, fails no request, and the challenger's probabilities land in s3://lake/shadow/churn/."""
    from tabular_mlops import registry, signing

    native, name = stack["stack"], CHURN
    client, production, others = _churn_versions(native, monkeypatch)
    url = native.url("serving") if "serving" in native.processes else native.start_serving(API_KEY)
    if others:  # another training run of this module registered one (the retrain, the lost worker)
        challenger = str(max(others, key=int))
    else:  # only one version: a second from the same run, signed as training signs
        source = client.get_model_version(name, production)
        challenger = str(client.create_model_version(name, source.source, run_id=source.run_id).version)
        signing.sign(name, challenger)
    registry.set_challenger(name, challenger, "stack-test", reason="shadow on the native stack")
    try:
        _wait_health(url, lambda h: h["challengers"]["churn"].get("version") == challenger)
        body = _churn_record(stack["raw"]["churn"])
        auth = {"Authorization": f"Bearer {API_KEY}"}
        sent = [f"stack-shadow-{i:03d}" for i in range(20)]
        with httpx.Client(headers=auth, timeout=30) as http:
            for rid in sent:
                response = http.post(
                    f"{url}/v1/models/churn/predict", json=body, headers={"X-Request-ID": rid}
                )
                assert response.status_code == 200, response.text
                assert response.json()["model_version"] == production
        deadline = time.monotonic() + 90  # flushed every 2 s (SERVING_SHADOW_FLUSH_SECONDS)
        rows = _shadow_rows(native, "churn")
        while not set(sent) <= set(rows["request_id"]) and time.monotonic() < deadline:
            time.sleep(2)
            rows = _shadow_rows(native, "churn")
        assert set(sent) <= set(rows["request_id"]), native.log("serving")
        ours = rows[rows["request_id"].isin(sent)]
        assert set(ours["champion_version"]) == {production} and set(ours["challenger_version"]) == {
            challenger
        }
        assert (
            ours["champion_probability"].between(0, 1).all()
            and ours["challenger_probability"].between(0, 1).all()
        )
        assert set(ours["entity_id"]) == {body["customerID"]}
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'outcome="failed"' not in metrics, metrics
    finally:
        registry.archive_challenger(name, "stack-test", reason="end of the shadow test")


def test_a_winning_challenger_event_promotes_it_through_the_registry_dag(
    stack: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `challenger/churn` Asset event, as monitoring emits when the challenger won (created here
    over REST, as the UI's Create Asset Event does): the scheduler runs churn_registry on it, which
    moves production to the challenger (churn needs no approval), keeps previous and parks the alias."""
    from tabular_mlops import registry

    native, api, name = stack["stack"], stack["api"], CHURN
    _, production, others = _churn_versions(native, monkeypatch)
    assert others, "the training tests registered only one churn version"
    challenger = str(max(others, key=int))
    registry.set_challenger(name, challenger, "stack-test", reason="shadow winner")
    api.unpause("churn_registry")
    before = len(api.runs("churn_registry"))
    assets = api.call("GET", "/assets", params={"name_pattern": "challenger/churn"}).json()["assets"]
    [asset] = [a for a in assets if a["name"] == "challenger/churn"]
    evidence = {"labelled_rows": 900, "verdict": "wins", "interval": [0.01, 0.03]}
    event = {"asset_id": asset["id"], "extra": {"version": challenger, "evidence": evidence}}
    created = api.call("POST", "/assets/events", json=event)
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 300
    while len(api.runs("churn_registry")) == before:
        assert time.monotonic() < deadline, "the challenger event did not run churn_registry"
        time.sleep(3)
    triggered = api.runs("churn_registry")[0]
    assert triggered["run_type"] == "asset_triggered"
    try:
        run = api.wait_run("churn_registry", triggered["dag_run_id"], timeout=300)
        assert run["state"] == "success", _fail_with_logs(native, api, "churn_registry", run)
        aliases = {a: registry.alias_version(name, a) for a in ("production", "previous", "challenger")}
        # The workers hold EDIT, which cannot delete an alias: the challenger is parked on production.
        assert aliases == {"production": challenger, "previous": production, "challenger": challenger}
        assert registry.challenger_version(name) is None
        [move] = [m for m in registry.history(name) if triggered["dag_run_id"] in m["actor"]]
        assert move["action"] == "promote" and "won in shadow" in move["reason"], move
    finally:
        registry.rollback(name, "stack-test", reason="end of the challenger promotion test")


def test_a_promotion_reaches_serving_through_the_registry_webhook(
    stack: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Moving production (as the admin, through the bundle's registry code) reaches serving through
    MLflow's signed webhook: prints the time from the alias move to the first answer carrying the new
    version (polling is 30 s away). A forged call gets 401 and posts no notice."""
    from tabular_mlops import registry

    native, name = stack["stack"], CHURN
    client, production, others = _churn_versions(native, monkeypatch)
    url = native.url("serving") if "serving" in native.processes else native.start_serving(API_KEY)
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
