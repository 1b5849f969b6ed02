"""The online store for real: the machine's Redis, a real registry, `mlops materialize`, gunicorn.

A credit_risk request with only the application gets its history features from the store; they
must be the features, and the probabilities, that batch scoring computes from the full tables.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import online_store_or_skip
from tests.e2e.conftest import PROJECT_DIR, own_registry
from tests.e2e.test_serving import running_service
from tests.helpers import free_port, last_json, run_mlops

HISTORY = [
    "bureau",
    "bureau_balance",
    "previous_application",
    "pos_cash_balance",
    "installments_payments",
    "credit_card_balance",
]


@pytest.fixture(scope="module")
def credit_version(tmp_path_factory: pytest.TempPathFactory, home_credit_raw: Path) -> Iterator[dict]:
    """A registry whose production credit_risk version was trained (and materialised) by the chain;
    the config folder holds credit_risk only, so the service is ready with that one model."""
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    online_store_or_skip()
    root = tmp_path_factory.mktemp("online")
    configs = root / "configs"
    configs.mkdir()
    for name in ("defaults.yaml", "credit_risk.yaml"):
        shutil.copy(PROJECT_DIR / "include" / "configs" / name, configs / name)
    with pytest.MonkeyPatch.context() as patch:
        own_registry(patch, root, configs)
        patch.setenv("MLOPS_LAKE", str(root / "lake"))
        result = run_training_chain(
            get_model_config("credit_risk"), str(home_credit_raw), run_id="online", promote=False
        )
        registry.promote(result["registered_name"], result["version"], "test", reason="online store tests")
        yield {"root": root, "version": result["version"]}


@pytest.fixture(scope="module")
def service(credit_version: dict) -> Iterator[str]:
    """The service over that registry (its environment: the module's, the session's store prefix)."""
    with running_service({"SERVING_RELOAD_SECONDS": "1"}) as url:
        yield url


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _partition(raw: Path, ids: set[int], folder: Path, rename: dict[int, int] | None = None) -> Path:
    """A scoring partition of these applicants (application_test) with their history rows."""
    from tabular_mlops.config import get_model_config

    config = get_model_config("credit_risk")
    folder.mkdir(parents=True)
    applications = pd.read_csv(raw / "application_test.csv")
    applications = applications[applications["SK_ID_CURR"].isin(ids)]
    bureau_ids: set[int] = set()
    for table in HISTORY:
        frame = pd.read_csv(raw / config.data.tables[table].file)
        mine = (
            frame["SK_ID_BUREAU"].isin(bureau_ids)
            if table == "bureau_balance"
            else frame["SK_ID_CURR"].isin(ids)
        )
        frame = frame[mine]
        if table == "bureau":
            bureau_ids = set(frame["SK_ID_BUREAU"])
        frame.to_csv(folder / config.data.tables[table].file, index=False)
    applications.replace({"SK_ID_CURR": rename or {}}).to_csv(folder / "application_test.csv", index=False)
    return folder


def _batch_probabilities(partition: Path, out: Path) -> pd.Series:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    score_partition(get_model_config("credit_risk"), str(partition), str(out))
    return pd.read_parquet(out / "predictions.parquet").set_index("SK_ID_CURR")["probability"]


def _batch_features(partition: Path, work: Path) -> pd.DataFrame:
    """Feature rows as batch scoring builds them: row rules, then the version's full SQL."""
    import duckdb
    from tabular_mlops.config import get_model_config
    from tabular_mlops.features import bind_parquet, run_feature_sql
    from tabular_mlops.scoring import find_tables, load_pinned, load_tables, pin_model, tables_to_read

    config = get_model_config("credit_risk")
    files = [p.name for p in partition.iterdir()]
    found = find_tables(config, str(partition), files, tables_to_read(config))
    _, typed = load_tables(config, str(partition), found, work, lambda _m: None)
    typed["application_train"] = typed.pop("application_test")
    sql = load_pinned(pin_model(config)).unwrap_python_model().sql
    with duckdb.connect() as con:
        bind_parquet(con, typed)
        return run_feature_sql(con, sql).df().set_index("SK_ID_CURR")


def _post(service: str, body: Any, **params: Any) -> httpx.Response:
    return httpx.post(f"{service}/v1/models/credit_risk/predict", json=body, params=params, timeout=60)


def test_store_served_features_and_probabilities_equal_batch_scorings(
    service: str, home_credit_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops.config import get_model_config

    from serving.models import _load

    result = run_mlops("materialize", "--model", "credit_risk", "--data", str(home_credit_raw))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result)
    assert summary["mode"] == "full" and summary["model_version"] is not None
    assert summary["entities"] > 200 and summary["columns"] > 300

    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path))
    ids = set(pd.read_csv(home_credit_raw / "application_test.csv")["SK_ID_CURR"].head(200))
    partition = _partition(home_credit_raw, ids, tmp_path / "in")
    applications = pd.read_csv(partition / "application_test.csv")
    body = [{"application": a} for a in _records(applications)]

    # Features: the store's history part plus the SQL's application part, against batch's rows.
    lean = _load(get_model_config("credit_risk")).lean
    online, details = lean.online_features(body)
    batch = _batch_features(partition, tmp_path / "work").loc[applications["SK_ID_CURR"]]
    assert {d["history_source"] for d in details} <= {"online_store", "none"}
    assert sum(d["history_source"] == "online_store" for d in details) > 150
    for column in lean.classifier.feature_columns:
        ours, theirs = online[column], batch[column].to_numpy()
        if theirs.dtype.kind in "biuf":
            np.testing.assert_allclose(ours.astype(float), theirs.astype(float), atol=1e-6, err_msg=column)
        else:
            assert [None if pd.isna(v) else v for v in theirs] == list(ours), column
    lean.close()

    # Probabilities over HTTP: the application alone, against batch scoring of the full tables.
    expected = _batch_probabilities(partition, tmp_path / "out").loc[applications["SK_ID_CURR"]]
    response = _post(service, body)
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    assert [p["probability"] for p in predictions] == pytest.approx(expected.tolist(), abs=1e-6)
    known = [p for p in predictions if p["history_source"] == "online_store"]
    assert known and all(p["features_as_of"] for p in known)


def test_an_applicant_the_store_does_not_know_is_scored_without_history_and_flagged(
    service: str, home_credit_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path))
    first = int(pd.read_csv(home_credit_raw / "application_test.csv")["SK_ID_CURR"].iloc[0])
    stranger = 987_654_321
    # Batch: the same application under the stranger's id, with header-only history tables.
    from tabular_mlops.config import get_model_config

    partition = _partition(home_credit_raw, {first}, tmp_path / "in", rename={first: stranger})
    config = get_model_config("credit_risk")
    for table in HISTORY:
        file = partition / config.data.tables[table].file
        pd.read_csv(file).head(0).to_csv(file, index=False)
    expected = _batch_probabilities(partition, tmp_path / "out").loc[stranger]

    application = _records(pd.read_csv(partition / "application_test.csv"))[0]
    response = _post(service, {"application": application})
    assert response.status_code == 200, response.text[:2000]
    prediction = response.json()["predictions"][0]
    assert prediction["history_source"] == "none" and prediction["features_as_of"] is None
    assert prediction["probability"] == pytest.approx(float(expected), abs=1e-6)
    # Sending empty history tables is "no history" too, computed from the request: the same score.
    sent = _post(service, {"application": application, **{t: [] for t in HISTORY}}).json()["predictions"][0]
    assert sent["history_source"] == "request"
    assert sent["probability"] == pytest.approx(float(expected), abs=1e-6)


def _keys(prefix: str) -> list[str]:
    import redis

    return sorted(k.decode() for k in redis.Redis().scan_iter(match=f"{prefix}*", count=1000))


def test_materialising_again_replaces_the_keys_and_forgets_an_applicant_who_left(
    service: str, home_credit_raw: Path, tmp_path: Path
) -> None:
    from tabular_mlops.config import get_model_config

    config = get_model_config("credit_risk")
    bureau = pd.read_csv(home_credit_raw / "bureau.csv")
    leaver = int(bureau["SK_ID_CURR"].iloc[0])
    application = _records(
        pd.read_csv(home_credit_raw / "application_train.csv")
        .query("SK_ID_CURR == @leaver")
        .drop(columns="TARGET")
    )[0]
    first = run_mlops("materialize", "--model", "credit_risk", "--data", str(home_credit_raw))
    assert first.returncode == 0, first.stderr[-3000:]
    namespace = last_json(first)["namespace"]
    before = _post(service, {"application": application}).json()["predictions"][0]
    assert before["history_source"] == "online_store"

    # The source without the leaver: every history row of theirs is gone (bureau_balance via bureau).
    source = tmp_path / "raw"
    shutil.copytree(home_credit_raw, source)
    their_bureau = set(bureau.loc[bureau["SK_ID_CURR"] == leaver, "SK_ID_BUREAU"])
    for table in HISTORY:
        path = source / config.data.tables[table].file
        frame = pd.read_csv(path)
        gone = (
            frame["SK_ID_BUREAU"].isin(their_bureau)
            if table == "bureau_balance"
            else frame["SK_ID_CURR"] == leaver
        )
        frame[~gone].to_csv(path, index=False)
    again = run_mlops("materialize", "--model", "credit_risk", "--data", str(source))
    assert again.returncode == 0, again.stderr[-3000:]
    summary = last_json(again)
    assert summary["namespace"] == namespace and summary["entities"] == last_json(first)["entities"] - 1

    after = _post(service, {"application": application}).json()["predictions"][0]
    assert after["history_source"] == "none"
    # One live generation: its rows, its metadata and the pointer; nothing of the replaced one.
    generation = summary["generation"]
    assert _keys(namespace) == sorted(
        [f"{namespace}:current", f"{namespace}:meta:{generation}", f"{namespace}:rows:{generation}"]
    )
    restored = run_mlops("materialize", "--model", "credit_risk", "--data", str(home_credit_raw))
    assert restored.returncode == 0, restored.stderr[-3000:]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server of the test's own on a free loopback port (killed to play the store down)."""
    binary = shutil.which("redis-server")
    if binary is None:
        online_store_or_skip()  # CI machines have Redis installed: fail there, skip elsewhere
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - the machine's redis-server, fixed argv, loopback only
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            import time

            time.sleep(0.05)
    try:
        yield url, process
    finally:
        process.kill()
        process.wait(timeout=10)


def test_with_the_store_down_id_only_requests_get_503_and_history_requests_are_served(
    credit_version: dict, home_credit_raw: Path, own_redis: tuple[str, subprocess.Popen]
) -> None:
    url, redis_process = own_redis
    stored = run_mlops(
        "materialize",
        "--model",
        "credit_risk",
        "--data",
        str(home_credit_raw),
        env={"MLOPS_ONLINE_STORE_URL": url},
    )
    assert stored.returncode == 0, stored.stderr[-3000:]
    with running_service({"MLOPS_ONLINE_STORE_URL": url}) as service:
        ids = set(pd.read_csv(home_credit_raw / "bureau.csv")["SK_ID_CURR"].head(50))
        applications = pd.read_csv(home_credit_raw / "application_test.csv")
        application = _records(applications[applications["SK_ID_CURR"].isin(ids)].head(1))[0]
        assert _post(service, {"application": application}).status_code == 200
        health = httpx.get(f"{service}/health").json()["online_store"]["credit_risk"]
        assert health["reachable"] and health["materialized"] and health["entities"] > 0

        redis_process.kill()
        redis_process.wait(timeout=10)
        down = _post(service, {"application": application})
        assert down.status_code == 503, down.text
        detail = down.json()["detail"]
        assert "online store" in detail and "history tables" in detail
        with_history = _post(service, {"application": application, "bureau": [], "previous_application": []})
        assert with_history.status_code == 200, with_history.text[:2000]
        assert with_history.json()["predictions"][0]["history_source"] == "request"
        health = httpx.get(f"{service}/health").json()
        assert health["online_store"]["credit_risk"]["reachable"] is False
        assert "6379" not in health["online_store"]["credit_risk"]["url"]
        assert httpx.get(f"{service}/ready").status_code == 200  # history requests are still served


def test_reasons_come_with_each_decision_when_asked(service: str, home_credit_raw: Path) -> None:
    run_mlops("materialize", "--model", "credit_risk", "--data", str(home_credit_raw))
    applications = pd.read_csv(home_credit_raw / "application_test.csv").head(3)
    body = [{"application": a} for a in _records(applications)]
    body[1]["explain"] = 1  # a record's own explain wins over the query's
    response = _post(service, body, explain=4)
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    assert [len(p["reasons"]) for p in predictions] == [4, 1, 4]
    for prediction in predictions:
        sizes = [abs(r["contribution"]) for r in prediction["reasons"]]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
        for reason in prediction["reasons"]:
            assert reason["direction"] == ("raises risk" if reason["contribution"] > 0 else "lowers risk")
            assert reason["description"] and reason["description"] != reason["field"]
    assert "reasons" not in _post(service, body[:1]).json()["predictions"][0]  # not asked: not computed
    too_many = _post(service, body[:1], explain=21)
    assert too_many.status_code == 422 and "explain" in too_many.text
