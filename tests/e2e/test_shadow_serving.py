"""Shadow scoring in serving: a `challenger` version scores every answered request off the response
path, and its probabilities reach the lake beside the champion's (serving/shadow.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.e2e.test_serving import _start, _telco_records, _wait_ready
from tests.helpers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
MODEL = "churn"


@pytest.fixture(scope="module")
def champion_and_challenger(tmp_path_factory: pytest.TempPathFactory, telco_raw: Path) -> Iterator[dict]:
    """A registry with a churn champion (production) and a churn challenger trained on other data;
    a config folder holding churn only, so the service is ready with churn alone."""
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.telco import generate_telco
    from tabular_mlops.pipeline import run_training_chain

    root = tmp_path_factory.mktemp("shadow")
    configs = root / "configs"
    configs.mkdir()
    for name in ("defaults.yaml", f"{MODEL}.yaml"):
        shutil.copy(PROJECT_DIR / "include" / "configs" / name, configs / name)
    other = root / "raw" / "telco_other"
    generate_telco(other, rows=2000, seed=23)  # another sample: the challenger's answers differ
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLOPS_MLFLOW_DIR", str(root))
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        patch.setenv("MLOPS_CONFIG_DIR", str(configs))
        config = get_model_config(MODEL)
        champion = run_training_chain(config, str(telco_raw), run_id="champion", promote=False)
        name = champion["registered_name"]
        registry.promote(name, champion["version"], "test", reason="shadow tests")
        challenger = run_training_chain(config, str(other), run_id="challenger", promote=False)
        yield {
            "name": name,
            "config": config,
            "champion": champion["version"],
            "challenger": challenger["version"],
        }


@pytest.fixture
def challenger_set(champion_and_challenger: dict) -> Iterator[dict]:
    """The challenger alias set for one test, removed after it."""
    from tabular_mlops import registry

    info = champion_and_challenger
    registry.set_challenger(info["name"], info["challenger"], "test", reason="shadow test")
    try:
        yield info
    finally:
        if registry.challenger_version(info["name"]) is not None:
            registry.archive_challenger(info["name"], "test", reason="end of test")


def _direct(name: str, version: str, records: list[dict]) -> list[float]:
    """A version's probabilities through its pyfunc's own (scikit-learn) path, not serving's."""
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    return [float(p) for p in model.predict_proba(pd.DataFrame(records))]


def _shadow_rows(lake: Path) -> pd.DataFrame:
    files = sorted((lake / "shadow" / MODEL).glob("dt=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _counter(text: str, sample: str, **labels: str) -> float:
    """A churn sample of the /metrics text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"model": MODEL, **labels}
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and s.labels == wanted
    )


def _every_worker_shadows(url: str, version: float, workers: int = 2, timeout: float = 60) -> None:
    """Until serving_challenger_version (one sample per live worker pid) reads `version` (0: none)
    in every worker: /health answers from one worker at a time."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    values: list[float] = []
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        values = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "serving_challenger_version" and s.labels.get("model") == MODEL
        ]
        if len(values) == workers and all(v == version for v in values):
            return
        time.sleep(0.2)
    raise AssertionError(f"serving_challenger_version per worker: {values}")


def _until_shadow_scored(url: str, records: int, timeout: float = 120) -> None:
    """Until the workers' shadow threads have scored `records` (the CPU budget rests between batches,
    and records still queued when the alias goes are dropped, not scored)."""
    deadline = time.monotonic() + timeout
    counted = 0.0
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        counted = _counter(text, "serving_shadow_records_total", outcome="scored")
        if counted >= records:
            return
        time.sleep(0.2)
    raise AssertionError(f"{counted} of {records} records shadow-scored in {timeout} s")


def _challenger_state(url: str, loaded: bool, timeout: float = 60) -> dict:
    """/health's churn challenger once it reads `loaded`, seen on several answers in a row (any worker)."""
    deadline = time.monotonic() + timeout
    streak = 0
    state: dict = {}
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/health", timeout=5).json()["challengers"][MODEL]
        streak = streak + 1 if state["loaded"] is loaded else 0
        if streak >= 10:
            return state
        time.sleep(0.2)
    raise AssertionError(f"challenger never read loaded={loaded}: {state}")


def _post_all(url: str, records: list[dict], prefix: str, headers: dict[str, str]) -> dict[str, dict]:
    """One request per 3 records, each with its own X-Request-ID; the bodies by request id."""
    answers = {}
    with httpx.Client(headers=headers, timeout=30) as http:
        for start in range(0, len(records), 3):
            rid = f"{prefix}{start:04d}"
            response = http.post(
                f"{url}/v1/models/{MODEL}/predict",
                json=records[start : start + 3],
                headers={"X-Request-ID": rid},
            )
            assert response.status_code == 200, response.text
            answers[rid] = response.json()
    return answers


def test_gunicorn_shadows_the_challenger_into_the_lake_and_stops_when_the_alias_goes(
    challenger_set: dict, telco_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops import registry

    info = challenger_set
    lake = tmp_path / "lake"
    records = _telco_records(telco_raw, 60)
    port = free_port()
    # A flush only at shutdown (an hour otherwise): the rows written prove the shutdown flush too.
    env = {"MLOPS_LAKE": str(lake), "SERVING_RELOAD_SECONDS": "1", "SERVING_SHADOW_FLUSH_SECONDS": "3600"}
    process = _start(port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        state = _challenger_state(url, loaded=True)
        assert state["version"] == info["challenger"], state
        _every_worker_shadows(url, float(info["challenger"]))  # else a request may miss the shadow
        described = httpx.get(f"{url}/v1/models/{MODEL}").json()
        assert (
            described["version"] == info["champion"]
            and described["challenger"]["version"] == info["challenger"]
        )
        shadowed = _post_all(url, records[:30], "shadow", {})
        assert {a["model_version"] for a in shadowed.values()} == {info["champion"]}
        _until_shadow_scored(url, 30)
        registry.archive_challenger(info["name"], "test", reason="stop shadowing")
        assert "no version has alias 'challenger'" in _challenger_state(url, loaded=False)["reason"]
        _every_worker_shadows(url, 0)
        unshadowed = _post_all(url, records[30:], "plain", {})
        assert {a["model_version"] for a in unshadowed.values()} == {info["champion"]}
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert process.returncode == 0, process.stderr.read()[-3000:] if process.stderr else ""
    assert _counter(metrics, "serving_shadow_records_total", outcome="scored") == 30, metrics
    rows = _shadow_rows(lake)
    assert sorted(rows["request_id"].unique()) == sorted(shadowed), "every shadowed request, none after"
    assert set(rows["champion_version"]) == {info["champion"]}
    assert set(rows["challenger_version"]) == {info["challenger"]}
    rows = rows.sort_values(["request_id", "record"]).reset_index(drop=True)
    sent = [
        records[int(rid[len("shadow") :]) + i]
        for rid, i in zip(rows["request_id"], rows["record"], strict=True)
    ]
    assert list(rows["entity_id"]) == [r["customerID"] for r in sent]
    answered = [
        shadowed[rid]["predictions"][i]["probability"]
        for rid, i in zip(rows["request_id"], rows["record"], strict=True)
    ]
    assert list(rows["champion_probability"]) == pytest.approx(answered, abs=1e-12)
    assert list(rows["champion_probability"]) == pytest.approx(
        _direct(info["name"], info["champion"], sent), abs=1e-6
    )
    challenger = _direct(info["name"], info["challenger"], sent)
    assert list(rows["challenger_probability"]) == pytest.approx(challenger, abs=1e-6)
    assert (rows["challenger_probability"] - rows["champion_probability"]).abs().max() > 1e-3
    assert str(rows["scored_at"].dt.tz) == "UTC"
    days = {p.parent.name for p in (lake / "shadow" / MODEL).glob("dt=*/*.parquet")}
    assert days == {f"dt={d}" for d in rows["scored_at"].dt.strftime("%Y-%m-%d")}


def test_a_challenger_that_raises_never_fails_a_request(
    challenger_set: dict, telco_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The challenger's DuckDB session dies under it: every request still gets the champion's answer,
    the failures are counted, and the champion keeps scoring."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SERVING_LAZY_APP", "1")
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    from serving.app import create_app
    from serving.metrics import SHADOW_RECORDS
    from serving.models import ModelStore

    info = challenger_set
    records = _telco_records(telco_raw, 20)
    failed = SHADOW_RECORDS.labels(MODEL, "failed")
    store = ModelStore({MODEL: info["config"]})
    with TestClient(create_app(store, watch=False)) as client:
        state = client.get("/health").json()["challengers"][MODEL]
        assert state["loaded"] and state["version"] == info["challenger"], state
        before = failed._value.get()
        # A real fault, not a stand-in: the challenger's connection is closed while its thread idles.
        store.shadow.models[MODEL].challenger.lean.session().con.close()
        answers = [
            client.post(f"/v1/models/{MODEL}/predict", json=records[i : i + 2]) for i in range(0, 20, 2)
        ]
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
        assert {a.json()["model_version"] for a in answers} == {info["champion"]}
        deadline = time.monotonic() + 30
        while failed._value.get() - before < len(records) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert failed._value.get() - before == len(records)
        assert client.get("/ready").status_code == 200
        assert client.get("/health").json()["challengers"][MODEL]["loaded"]
    assert _shadow_rows(tmp_path / "lake").empty, "no row for records the challenger did not score"


def test_a_challenger_that_fails_its_golden_check_leaves_the_champion_and_ready_alone(
    challenger_set: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from fastapi.testclient import TestClient

    from tests.e2e.test_serving import _tampered_golden

    monkeypatch.setenv("SERVING_LAZY_APP", "1")
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    from serving.app import create_app
    from serving.models import ModelStore

    info = challenger_set
    run_id = mlflow.MlflowClient().get_model_version(info["name"], info["challenger"]).run_id
    with (
        _tampered_golden(run_id, tmp_path),
        TestClient(create_app(ModelStore({MODEL: info["config"]}), watch=False)) as client,
    ):
        assert client.get("/ready").status_code == 200
        health = client.get("/health").json()
        assert health["versions"] == {MODEL: info["champion"]} and not health["errors"]
        reason = health["challengers"][MODEL]["reason"]
        assert "challenger not loaded" in reason and "moved its golden probabilities" in reason, reason
        assert client.get(f"/v1/models/{MODEL}").json()["challenger"] == {"loaded": False, "reason": reason}


def test_shadow_rows_reach_an_s3_lake_through_the_bundle_connection(
    challenger_set: dict, telco_raw: Path, bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLOPS_LAKE on S3 (moto's server, reached through aws_default): the rows buffered when the
    worker stops are written there, one file per worker and day."""
    import io
    import logging

    from fastapi.testclient import TestClient

    monkeypatch.setenv("SERVING_LAZY_APP", "1")
    monkeypatch.setenv("MLOPS_LAKE", f"s3://{bucket}/lake")
    from serving.app import create_app
    from serving.models import ModelStore

    info = challenger_set
    records = _telco_records(telco_raw, 4)
    handlers = list(logging.getLogger().handlers)
    with TestClient(create_app(ModelStore({MODEL: info["config"]}), watch=False)) as client:
        assert logging.getLogger().handlers == handlers, "the S3 hook's import reconfigured logging"
        answer = client.post(f"/v1/models/{MODEL}/predict", json=records, headers={"X-Request-ID": "s3-rows"})
        assert answer.status_code == 200, answer.text
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"lake/shadow/{MODEL}/").get("Contents", [])
    keys = [o["Key"] for o in listed]
    assert len(keys) == 1 and keys[0].split("/")[3].startswith("dt=") and keys[0].endswith(".parquet"), keys
    rows = pd.read_parquet(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()))
    assert list(rows["request_id"]) == ["s3-rows"] * 4 and list(rows["record"]) == [0, 1, 2, 3]
    expected = [p["probability"] for p in answer.json()["predictions"]]
    assert list(rows["champion_probability"]) == pytest.approx(expected, abs=1e-12)
    assert set(rows["challenger_version"]) == {info["challenger"]}
