"""The REST service run for real: gunicorn with uvicorn workers on a loopback port, a real registry."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.helpers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
API_KEY = "test-key-123"


def _start(port: int, extra_env: dict[str, str], stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    """gunicorn with 2 uvicorn workers on 127.0.0.1:port (stderr: a pipe, or a log file to read)."""
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "SERVING_WORKERS": "2",
        "SERVING_LOG_LEVEL": "warning",  # stderr is a pipe read only on failure: keep it small
        **extra_env,
    }
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"gunicorn exited: {process.stderr.read()[-3000:] if process.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {timeout}s")


@contextlib.contextmanager
def running_service(extra_env: dict[str, str]) -> Iterator[str]:
    """gunicorn on a free port with this environment, ready; yields its URL, stops it after."""
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = _start(port, extra_env, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            yield url
        finally:
            died = process.poll()  # a service that died under a test: its log says why
            process.terminate()
            process.wait(timeout=30)
            if died is not None:
                log.seek(0)
                print(f"gunicorn on {url} exited with {died} during the test:\n{log.read()[-5000:]}")


@pytest.fixture(scope="module")
def service(production_models: dict) -> Iterator[str]:
    """The service on a free port with an API key, reloading aliases every second."""
    with running_service(
        {"SERVING_API_KEY": API_KEY, "SERVING_RELOAD_SECONDS": "1", "SERVING_MAX_RECORDS": "50"}
    ) as url:
        yield url


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _telco_records(telco_raw: Path, n: int) -> list[dict]:
    frame = pd.read_csv(telco_raw / TELCO_FILE, keep_default_na=False).head(n).drop(columns=["Churn"])
    frame["TotalCharges"] = pd.to_numeric(frame["TotalCharges"].str.strip().replace("", None))
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict(orient="records")
    ]


def test_single_and_batch_churn_predictions(service: str, telco_raw: Path, production_models: dict) -> None:
    records = _telco_records(telco_raw, 5)
    one = httpx.post(f"{service}/v1/models/churn/predict", json=records[0], headers=AUTH)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (
        body["model_name"] == "churn-classifier"
        and body["model_version"] == production_models["versions"]["churn"]
    )
    assert one.headers["x-request-id"] == body["request_id"] and len(body["predictions"]) == 1
    prediction = body["predictions"][0]
    assert 0 <= prediction["probability"] <= 1 and prediction["prediction"] == int(
        prediction["probability"] >= 0.5
    )
    batch = httpx.post(f"{service}/v1/models/churn/predict", json=records, headers=AUTH)
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 5
    assert batch.json()["predictions"][0]["probability"] == pytest.approx(prediction["probability"], abs=1e-9)


def test_invalid_unknown_oversized_and_unauthorised_requests(service: str, telco_raw: Path) -> None:
    record = _telco_records(telco_raw, 1)[0]
    bad = httpx.post(
        f"{service}/v1/models/churn/predict",
        json=[record, {**record, "tenure": "a year", "MonthlyCharges": "lots"}],
        headers=AUTH,
    )
    assert bad.status_code == 422
    # The wrong-typed fields by record, nothing about the union's other reading of the body.
    assert {(e["record"], e["field"]) for e in bad.json()["detail"]} == {(1, "tenure"), (1, "MonthlyCharges")}
    missing = httpx.post(f"{service}/v1/models/churn/predict", json={"tenure": 3}, headers=AUTH)
    assert missing.status_code == 422
    assert [(e["record"], e["field"]) for e in missing.json()["detail"]] == [(0, "customerID")]
    assert httpx.post(f"{service}/v1/models/fraud/predict", json=record, headers=AUTH).status_code == 404
    too_many = httpx.post(f"{service}/v1/models/churn/predict", json=[record] * 51, headers=AUTH)
    assert too_many.status_code == 413
    assert httpx.post(f"{service}/v1/models/churn/predict", json=record).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{service}/v1/models/churn/predict", json=record, headers=wrong).status_code == 401
    assert httpx.get(f"{service}/health").status_code == 200  # open without a key
    assert httpx.get(f"{service}/metrics").status_code == 200
    garbage = httpx.post(
        f"{service}/v1/models/churn/predict",
        content=b"{not json",
        headers={**AUTH, "content-type": "application/json"},
    )
    assert garbage.status_code == 422


def test_credit_risk_scores_an_application_with_its_history(service: str, home_credit_raw: Path) -> None:
    applications = pd.read_csv(home_credit_raw / "application_test.csv").head(3)
    bureau = pd.read_csv(home_credit_raw / "bureau.csv")
    previous = pd.read_csv(home_credit_raw / "previous_application.csv")

    def records(frame: pd.DataFrame) -> list[dict]:
        return [
            {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")
        ]

    body = [
        {
            "application": records(applications.iloc[[i]])[0],
            "bureau": records(bureau[bureau["SK_ID_CURR"] == applications.iloc[i]["SK_ID_CURR"]]),
            "previous_application": records(
                previous[previous["SK_ID_CURR"] == applications.iloc[i]["SK_ID_CURR"]]
            ),
        }
        for i in range(3)
    ]
    response = httpx.post(f"{service}/v1/models/credit_risk/predict", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text[:2000]
    assert len(response.json()["predictions"]) == 3
    alone = httpx.post(
        f"{service}/v1/models/credit_risk/predict", json={"application": body[0]["application"]}, headers=AUTH
    )
    assert alone.status_code == 200  # no history sent: the online store has it (the chain materialised)


def test_credit_records_with_clashing_ids_score_as_if_alone(service: str, home_credit_raw: Path) -> None:
    """Linking ids only need to be unique within a record: two applicants reusing each other's
    SK_ID_CURR, SK_ID_BUREAU and SK_ID_PREV values in one request score exactly as alone."""
    applications = pd.read_csv(home_credit_raw / "application_test.csv")
    bureau = pd.read_csv(home_credit_raw / "bureau.csv")
    balance = pd.read_csv(home_credit_raw / "bureau_balance.csv")
    previous = pd.read_csv(home_credit_raw / "previous_application.csv")
    installments = pd.read_csv(home_credit_raw / "installments_payments.csv")

    def records(frame: pd.DataFrame) -> list[dict]:
        return [
            {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")
        ]

    def request(key: int) -> dict:
        mine = bureau[bureau["SK_ID_CURR"] == key]
        prev = previous[previous["SK_ID_CURR"] == key]
        return {
            "application": records(applications[applications["SK_ID_CURR"] == key])[0],
            "bureau": records(mine),
            "bureau_balance": records(balance[balance["SK_ID_BUREAU"].isin(mine["SK_ID_BUREAU"])]),
            "previous_application": records(prev),
            "installments_payments": records(
                installments[installments["SK_ID_PREV"].isin(prev["SK_ID_PREV"])]
            ),
        }

    with_history = [
        k
        for k in applications["SK_ID_CURR"]
        if (bureau["SK_ID_CURR"] == k).sum() >= 2 and (previous["SK_ID_CURR"] == k).sum() >= 2
    ]
    first, second = request(with_history[0]), request(with_history[1])
    # Give the second applicant the first one's ids, consistently within its own record.
    renames = {"SK_ID_CURR": {second["application"]["SK_ID_CURR"]: first["application"]["SK_ID_CURR"]}}
    for column, table in (("SK_ID_BUREAU", "bureau"), ("SK_ID_PREV", "previous_application")):
        theirs = [r[column] for r in first[table]]
        renames[column] = {r[column]: theirs[i % len(theirs)] for i, r in enumerate(second[table][:1])}
    clashing = {
        table: (
            {**rows, "SK_ID_CURR": first["application"]["SK_ID_CURR"]}
            if table == "application"
            else [{c: renames.get(c, {}).get(v, v) for c, v in row.items()} for row in rows]
        )
        for table, rows in second.items()
    }
    url = f"{service}/v1/models/credit_risk/predict"
    alone = [httpx.post(url, json=r, headers=AUTH, timeout=30).json() for r in (first, second, clashing)]
    assert alone[1]["predictions"] == alone[2]["predictions"]  # the ids' values do not matter
    both = httpx.post(url, json=[first, clashing], headers=AUTH, timeout=30)
    assert both.status_code == 200, both.text
    assert [p["probability"] for p in both.json()["predictions"]] == pytest.approx(
        [alone[0]["predictions"][0]["probability"], alone[1]["predictions"][0]["probability"]], abs=1e-9
    )


def test_models_health_ready_and_metrics(service: str, production_models: dict) -> None:
    models = httpx.get(f"{service}/v1/models", headers=AUTH).json()["models"]
    assert {m["model"] for m in models} == {"churn", "credit_risk"} and all(m["loaded"] for m in models)
    churn = httpx.get(f"{service}/v1/models/churn", headers=AUTH).json()
    assert churn["version"] == production_models["versions"]["churn"] and "test_roc_auc" in churn["metrics"]
    assert "customerID" in churn["request_schema"]["properties"]
    health = httpx.get(f"{service}/health").json()
    assert health["errors"] == {} and set(health["versions"]) == {"churn", "credit_risk"}
    metrics = httpx.get(f"{service}/metrics").text
    assert "serving_requests_total" in metrics and "serving_batch_records_count" in metrics
    # Multiprocess metrics: one version sample per live worker, whichever worker answered.
    versions = re.findall(r'serving_model_version\{model="churn",pid="(\d+)"\} (\S+)', metrics)
    assert len({pid for pid, _ in versions}) == 2, metrics
    assert {float(v) for _, v in versions} == {float(production_models["versions"]["churn"])}


def test_concurrent_requests_each_get_their_own_scores(service: str, telco_raw: Path) -> None:
    """Requests scored together in one micro-batch still get back exactly their own rows."""
    from concurrent.futures import ThreadPoolExecutor

    records = _telco_records(telco_raw, 24)
    together = httpx.post(f"{service}/v1/models/churn/predict", json=records, headers=AUTH).json()
    expected = [p["probability"] for p in together["predictions"]]
    # Mixed sizes and a repeated customer, 12 at a time, so the batches hold several requests.
    bodies = [records[i : i + 1 + i % 3] for i in range(0, 24, 2)] + [[records[0], records[0]]]
    url = f"{service}/v1/models/churn/predict"
    with httpx.Client(headers=AUTH, timeout=30) as client, ThreadPoolExecutor(12) as pool:
        for _ in range(3):
            replies = list(pool.map(lambda b: client.post(url, json=b), bodies))
            for body, reply in zip(bodies, replies, strict=True):
                assert reply.status_code == 200, reply.text
                got = [p["probability"] for p in reply.json()["predictions"]]
                want = [expected[records.index(r)] for r in body]
                assert got == pytest.approx(want, abs=1e-9)


def test_a_bad_request_in_a_batch_fails_alone(service: str, telco_raw: Path) -> None:
    """A record the features cannot be computed from fails its own request, not its batch mates."""
    from concurrent.futures import ThreadPoolExecutor

    record = _telco_records(telco_raw, 1)[0]
    # Allowed by the schema (TotalCharges has no upper bound), infinite once divided in the SQL.
    poison = {**record, "TotalCharges": 1e308, "tenure": 1, "MonthlyCharges": 1e-300}
    bodies = [record, poison, record, record, poison, record]
    url = f"{service}/v1/models/churn/predict"
    with httpx.Client(headers=AUTH, timeout=30) as client, ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda b: client.post(url, json=b), bodies))
    codes = [r.status_code for r in replies]
    assert codes == [200, 422, 200, 200, 422, 200], [r.text for r in replies]
    detail = replies[1].json()["detail"]
    # A stable message and the request id; the DuckDB error stays in the service log.
    assert detail.startswith("cannot score these records") and replies[1].headers["x-request-id"] in detail
    assert not re.search(r"duckdb|Error|Exception|Traceback|SELECT", detail), detail


def test_rest_probabilities_equal_batch_scoring_for_both_models(
    service: str, telco_raw: Path, home_credit_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    # The lake is the allowed root of score_partition's input and output: the test's folder.
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path))
    # churn: the same 40 customers through batch scoring and through REST.
    churn_in = tmp_path / "churn_in"
    churn_in.mkdir()
    pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False).head(40).to_csv(
        churn_in / TELCO_FILE, index=False
    )
    score_partition(get_model_config("churn"), str(churn_in), str(tmp_path / "churn_out"))
    batch = pd.read_parquet(tmp_path / "churn_out" / "predictions.parquet")
    rest = httpx.post(
        f"{service}/v1/models/churn/predict", json=_telco_records(telco_raw, 40), headers=AUTH
    ).json()
    assert [p["probability"] for p in rest["predictions"]] == pytest.approx(
        batch["probability"].tolist(), abs=1e-6
    )

    # credit_risk: 10 applicants with every history table, batch partition versus REST.
    applications = pd.read_csv(home_credit_raw / "application_test.csv").head(10)
    ids = set(applications["SK_ID_CURR"])
    credit_in = tmp_path / "credit_in"
    credit_in.mkdir()
    applications.to_csv(credit_in / "application_test.csv", index=False)
    history: dict[str, pd.DataFrame] = {}
    config = get_model_config("credit_risk")
    for table, spec in config.data.tables.items():
        if table in ("application_train", "application_test"):
            continue
        frame = pd.read_csv(home_credit_raw / spec.file)
        if "SK_ID_CURR" in frame:
            frame = frame[frame["SK_ID_CURR"].isin(ids)]
        else:  # bureau_balance hangs off bureau
            bureau_ids = set(history["bureau"]["SK_ID_BUREAU"])
            frame = frame[frame["SK_ID_BUREAU"].isin(bureau_ids)]
        history[table] = frame
        frame.to_csv(credit_in / spec.file, index=False)
    score_partition(config, str(credit_in), str(tmp_path / "credit_out"))
    batch = pd.read_parquet(tmp_path / "credit_out" / "predictions.parquet").set_index("SK_ID_CURR")

    def records(frame: pd.DataFrame) -> list[dict]:
        return [
            {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")
        ]

    body = []
    for _, application in applications.iterrows():
        key = application["SK_ID_CURR"]
        request: dict[str, Any] = {"application": records(applications[applications["SK_ID_CURR"] == key])[0]}
        bureau_ids = set(history["bureau"].loc[history["bureau"]["SK_ID_CURR"] == key, "SK_ID_BUREAU"])
        for table, frame in history.items():
            mine = (
                frame[frame["SK_ID_CURR"] == key]
                if "SK_ID_CURR" in frame
                else frame[frame["SK_ID_BUREAU"].isin(bureau_ids)]
            )
            request[table] = records(mine)
        body.append(request)
    rest = httpx.post(f"{service}/v1/models/credit_risk/predict", json=body, headers=AUTH, timeout=60).json()
    expected = batch.loc[applications["SK_ID_CURR"], "probability"].tolist()
    assert [p["probability"] for p in rest["predictions"]] == pytest.approx(expected, abs=1e-6)


def test_rest_and_batch_treat_the_same_records_the_same_way(
    service: str, telco_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unseen category and an out-of-range value are scored with a warning by both paths; a
    wrong type is rejected by both (REST 422 naming record and field, batch rejects.csv)."""
    import json

    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path))
    raw = pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False).head(4)
    raw.loc[1, "Contract"], raw.loc[2, "tenure"], raw.loc[3, "tenure"] = "Weekly", "90", "a year"
    folder = tmp_path / "mixed_in"
    folder.mkdir()
    raw.to_csv(folder / TELCO_FILE, index=False)
    config = get_model_config("churn")
    # One row in four is rejected on purpose: above the configured share a run fails.
    config = config.model_copy(
        update={"scoring": config.scoring.model_copy(update={"max_rejected_share": 0.5})}
    )
    score_partition(config, str(folder), str(tmp_path / "mixed_out"))
    batch = pd.read_parquet(tmp_path / "mixed_out" / "predictions.parquet")
    rejects = pd.read_csv(tmp_path / "mixed_out" / "rejects.csv")
    manifest = json.loads((tmp_path / "mixed_out" / "_manifest.json").read_text())
    batch_warnings = {label for t in manifest["input"]["tables"] for label in t["warnings"]}
    assert batch["customerID"].tolist() == raw["customerID"].head(3).tolist()
    assert rejects["reasons"].tolist() == ["tenure: not an integer ('a year')"]

    records = _telco_records(telco_raw, 4)
    records[1]["Contract"], records[2]["tenure"], records[3]["tenure"] = "Weekly", 90, "a year"
    url = f"{service}/v1/models/churn/predict"
    scored = httpx.post(url, json=records[:3], headers=AUTH)
    assert scored.status_code == 200, scored.text
    body = scored.json()
    assert [p["probability"] for p in body["predictions"]] == pytest.approx(
        batch["probability"].tolist(), abs=1e-6
    )
    assert [(w["record"], w["field"], w["kind"], w["value"]) for w in body["warnings"]] == [
        (1, "Contract", "not_allowed", "Weekly"),
        (2, "tenure", "above_maximum", 90),
    ]
    # Worded as batch counts them: "<field>: <problem>".
    assert {f"{w['field']}: {w['problem']}" for w in body["warnings"]} == batch_warnings
    rejected = httpx.post(url, json=records[2:], headers=AUTH)
    assert rejected.status_code == 422
    assert [(e["record"], e["field"]) for e in rejected.json()["detail"]] == [(1, "tenure")]
    metrics = httpx.get(f"{service}/metrics").text
    counted = re.findall(r'serving_record_warnings_total\{kind="(\w+)",model="churn"\} (\S+)', metrics)
    assert {"not_allowed", "above_maximum"} <= {kind for kind, count in counted if float(count) >= 1}


@contextlib.contextmanager
def _tampered_golden(run_id: str, tmp_path: Path) -> Iterator[dict]:
    """The run's golden requests with the first expected probability moved by 1e-5, restored after."""
    import json

    import mlflow
    from tabular_mlops.training import GOLDEN_REQUESTS

    path = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"serving/{GOLDEN_REQUESTS}")
    )
    original = json.loads(path.read_text())
    tampered = {
        **original,
        "probabilities": [original["probabilities"][0] + 1e-5, *original["probabilities"][1:]],
    }
    (tmp_path / "tampered").mkdir()
    (tmp_path / "tampered" / GOLDEN_REQUESTS).write_text(json.dumps(tampered))
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / GOLDEN_REQUESTS).write_text(path.read_text())
    client = mlflow.MlflowClient()
    client.log_artifact(run_id, str(tmp_path / "tampered" / GOLDEN_REQUESTS), "serving")
    try:
        yield original
    finally:
        client.log_artifact(run_id, str(tmp_path / "original" / GOLDEN_REQUESTS), "serving")


def test_golden_requests_cover_the_served_path_and_a_moved_answer_is_refused(
    production_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """credit_risk's golden requests are applications with their history rows; the app replays
    them at load and refuses a version whose answers differ from the logged ones."""
    import mlflow
    from fastapi.testclient import TestClient
    from tabular_mlops import tracking
    from tabular_mlops.config import get_model_config

    monkeypatch.setenv("SERVING_LAZY_APP", "1")
    from serving.app import create_app
    from serving.models import ModelStore

    config = get_model_config("credit_risk")
    name = tracking.registered_name(config.model.registered_name)
    version = production_models["versions"]["credit_risk"]
    run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    with _tampered_golden(run_id, tmp_path) as original:
        requests = original["requests"]
        assert len(requests) == len(original["probabilities"]) >= 10
        assert sum(len(r["bureau"]) for r in requests) and sum(len(r["bureau_balance"]) for r in requests)
        assert sum(len(r["installments_payments"]) for r in requests)
        with TestClient(create_app(ModelStore({"credit_risk": config}), watch=False)) as client:
            error = client.get("/health").json()["errors"]["credit_risk"]  # the detail: in /health
            assert "moved its golden probabilities by up to 1.00e-05" in error, error
            # /ready is open too, but names no load error: a fixed text that points at /health.
            generic = "not loaded; details in /health and the service log"
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["missing"] == {"credit_risk": generic}
            one = client.get("/ready/credit_risk")
            assert one.status_code == 503
            assert one.json() == {"model": "credit_risk", "ready": False, "reason": generic}
            refused = client.post("/v1/models/credit_risk/predict", json=requests[:1], headers=AUTH)
            rid = refused.headers["x-request-id"]  # a version that does not load: a stable message
            assert refused.status_code == 503
            assert refused.json()["detail"] == f"model 'credit_risk' is not servable now (request_id {rid})"
    # Restored: the same app loads the version, and answers the golden requests as logged.
    with TestClient(create_app(ModelStore({"credit_risk": config}), watch=False)) as client:
        assert client.get("/ready").status_code == 200
        answer = client.post("/v1/models/credit_risk/predict", json=requests[:5], headers=AUTH)
        assert answer.status_code == 200, answer.text
    got = [p["probability"] for p in answer.json()["predictions"]]
    assert got == pytest.approx(original["probabilities"][:5], abs=1e-6)


@contextlib.contextmanager
def _unpromoted(model: str) -> Iterator[str]:
    """`model` with its production alias removed (never promoted, as far as serving sees), restored
    after; yields its registered name. A running service keeps the version it loaded."""
    from tabular_mlops import registry, tracking
    from tabular_mlops.config import get_model_config

    name = tracking.registered_name(get_model_config(model).model.registered_name)
    client = tracking.configure()
    version = client.get_model_version_by_alias(name, registry.PRODUCTION).version
    client.delete_registered_model_alias(name, registry.PRODUCTION)
    try:
        yield name
    finally:
        client.set_registered_model_alias(name, registry.PRODUCTION, version)


def test_only_the_selected_models_decide_readiness(telco_raw: Path, production_models: dict) -> None:
    """SERVING_MODELS=churn with only churn promoted: ready; credit_risk is not served here (404)."""
    with (
        _unpromoted("credit_risk"),
        running_service({"SERVING_MODELS": "churn", "SERVING_WORKERS": "1"}) as url,
    ):
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "models": ["churn"], "missing": {}}
        churn = httpx.get(f"{url}/ready/churn").json()
        assert churn["ready"] is True and churn["version"] == production_models["versions"]["churn"]
        outside = "model 'credit_risk' is not served here; served models: churn"
        for answer in (
            httpx.get(f"{url}/ready/credit_risk"),
            httpx.get(f"{url}/v1/models/credit_risk"),
            httpx.post(f"{url}/v1/models/credit_risk/predict", json={"application": {"SK_ID_CURR": 1}}),
        ):
            assert answer.status_code == 404 and answer.json()["detail"] == outside
        scored = httpx.post(f"{url}/v1/models/churn/predict", json=_telco_records(telco_raw, 2))
        assert scored.status_code == 200, scored.text
        health = httpx.get(f"{url}/health").json()
        assert health["models"] == ["churn"] and list(health["versions"]) == ["churn"]
        assert health["errors"] == {}


def test_a_selected_model_without_a_production_version_is_named_while_the_other_scores(
    telco_raw: Path, home_credit_raw: Path, monkeypatch: pytest.MonkeyPatch, production_models: dict
) -> None:
    """Both selected, only churn promoted: /ready and /ready/credit_risk say what is missing, churn
    scores, credit_risk answers 503 with the same words."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SERVING_LAZY_APP", "1")
    monkeypatch.setenv("SERVING_MODELS", "credit_risk, churn")  # spaces and order do not matter
    from serving.app import create_app

    application = pd.read_csv(home_credit_raw / "application_test.csv").head(1)
    record = {k: (None if pd.isna(v) else v) for k, v in application.to_dict(orient="records")[0].items()}
    reason = "no production version of credit-risk-classifier yet"
    with _unpromoted("credit_risk"), TestClient(create_app(watch=False)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        expected = {"ready": False, "models": ["churn", "credit_risk"], "missing": {"credit_risk": reason}}
        assert ready.json() == expected
        assert client.get("/ready/churn").status_code == 200
        credit = client.get("/ready/credit_risk")
        assert credit.status_code == 503
        assert credit.json() == {"model": "credit_risk", "ready": False, "reason": reason}
        scored = client.post("/v1/models/churn/predict", json=_telco_records(telco_raw, 2))
        assert scored.status_code == 200, scored.text
        refused = client.post("/v1/models/credit_risk/predict", json={"application": record})
        assert refused.status_code == 503 and refused.json() == {"detail": reason}
        assert refused.headers["x-request-id"]
        health = client.get("/health").json()
        assert health["models"] == ["churn", "credit_risk"] and health["errors"] == {"credit_risk": reason}


def test_hot_reload_swaps_versions_without_failing_a_request(
    service: str, telco_raw: Path, production_models: dict
) -> None:
    import threading

    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    record = _telco_records(telco_raw, 1)[0]
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(headers=AUTH, timeout=10) as http:
            while not stop.is_set():
                response = http.post(f"{service}/v1/models/churn/predict", json=record)
                seen.append((response.status_code, response.json().get("model_version")))

    newer = run_training_chain(get_model_config("churn"), str(telco_raw), run_id="reload", promote=False)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(1)
        registry.promote(newer["registered_name"], newer["version"], "test", reason="hot reload test")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            recent = [v for _, v in seen[-20:]]
            if len(recent) == 20 and set(recent) == {newer["version"]}:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
        registry.rollback(newer["registered_name"], "test", reason="restore the module's production")
    assert {code for code, _ in seen} == {200}, "a request failed during the swap"
    versions = [v for _, v in seen]
    assert versions[0] == production_models["versions"]["churn"] and versions[-1] == newer["version"]


def test_fuzzing_the_openapi_schema_finds_no_server_error(service: str, tmp_path: Path) -> None:
    """schemathesis generates valid and invalid bodies for every operation: none may get a 5xx."""
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{service}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "50",
            "--seed",
            "1",
            "--request-timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b(\d+) generated, \1 passed\b", result.stdout), result.stdout[-2000:]


def test_a_registry_lost_while_loading_a_newer_version_reads_unreachable_and_keeps_serving(
    production_models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newer production version's artifacts sit on an object store that does not answer."""
    from mlflow import MlflowClient
    from tabular_mlops import registry, tracking
    from tabular_mlops.config import get_model_config

    from serving.models import ModelStore
    from tests.helpers import free_port

    config = get_model_config("churn")
    name = tracking.registered_name(config.model.registered_name)
    served = production_models["versions"]["churn"]
    store = ModelStore({"churn": config})
    store.refresh()
    assert store.served["churn"].version == served and "churn" not in store.errors
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    client = MlflowClient()
    newer = str(client.create_model_version(name, source="s3://lake/mlflow/newer-model").version)
    client.set_registered_model_alias(name, registry.PRODUCTION, newer)
    try:
        store.refresh()
    finally:
        client.set_registered_model_alias(name, registry.PRODUCTION, served)
    assert store.served["churn"].version == served
    assert store.errors["churn"].startswith(f"registry unreachable, serving version {served}: ")
    assert store.registry["reachable"] is False
    store.refresh()  # back: the loaded version is production again and the error clears
    assert "churn" not in store.errors and store.registry["reachable"] is True


def test_churn_decisions_carry_their_reasons_through_the_same_code(service: str, telco_raw: Path) -> None:
    records = _telco_records(telco_raw, 3)
    response = httpx.post(
        f"{service}/v1/models/churn/predict", params={"explain": 2}, json=records, headers=AUTH, timeout=30
    )
    assert response.status_code == 200, response.text[:2000]
    for prediction in response.json()["predictions"]:
        assert len(prediction["reasons"]) == 2 and "history_source" not in prediction
        first, second = prediction["reasons"]
        assert abs(first["contribution"]) >= abs(second["contribution"]) > 0
        assert first["description"] and first["description"] != first["field"]  # plain words, not the name
        assert first["direction"] == ("raises risk" if first["contribution"] > 0 else "lowers risk")
