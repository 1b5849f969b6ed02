"""The REST service run for real: gunicorn with uvicorn workers on a loopback port, a real registry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
API_KEY = "test-key-123"


def _start(port: int, extra_env: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "SERVING_WORKERS": "2", **extra_env}
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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


@pytest.fixture(scope="module")
def service(production_models: dict) -> Iterator[str]:
    """The service on a free port with an API key, reloading aliases every second."""
    port = free_port()
    process = _start(
        port, {"SERVING_API_KEY": API_KEY, "SERVING_RELOAD_SECONDS": "1", "SERVING_MAX_RECORDS": "50"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


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
        json={**record, "tenure": "a year", "Contract": "Weekly"},
        headers=AUTH,
    )
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["detail"]}
    assert any(f.endswith("tenure") for f in fields) and any(f.endswith("Contract") for f in fields)
    missing = httpx.post(f"{service}/v1/models/churn/predict", json={"tenure": 3}, headers=AUTH)
    assert missing.status_code == 422 and any("customerID" in e["field"] for e in missing.json()["detail"])
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
    assert alone.status_code == 200  # history is optional


def test_models_health_ready_and_metrics(service: str, production_models: dict) -> None:
    models = httpx.get(f"{service}/v1/models", headers=AUTH).json()["models"]
    assert {m["model"] for m in models} == {"churn", "credit_risk"} and all(m["loaded"] for m in models)
    churn = httpx.get(f"{service}/v1/models/churn", headers=AUTH).json()
    assert churn["version"] == production_models["versions"]["churn"] and "test_roc_auc" in churn["metrics"]
    assert "customerID" in churn["request_schema"]["properties"]
    health = httpx.get(f"{service}/health").json()
    assert health["errors"] == {} and set(health["versions"]) == {"churn", "credit_risk"}
    metrics = httpx.get(f"{service}/metrics").text
    assert "serving_requests_total" in metrics and "serving_model_version" in metrics
