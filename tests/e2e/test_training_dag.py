"""`<model>_training` run for real with dag.test(): Airflow's task runner, a real MLflow registry.

Each module run gets its own SQLite tracking store, so versions and aliases start from nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
CHAIN = ["data_ingest", "build_features", "train", "evaluate", "gate", "promote"]


@pytest.fixture(scope="module")
def registry(fresh_registry: str) -> str:
    """This module's fresh registry (versions and aliases start from nothing)."""
    return fresh_registry


@pytest.fixture(scope="module")
def dagbag(airflow_db: str, registry: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def telco_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Telco file of the real size (7,043 customers, blank TotalCharges included)."""
    from tabular_mlops.generators.telco import generate_telco

    folder = tmp_path_factory.mktemp("telco_full")
    generate_telco(folder, rows=7043, seed=3)
    return folder


def _states(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def _aliases(name: str) -> dict[str, str | None]:
    from tabular_mlops import registry

    return {alias: registry.alias_version(name, alias) for alias in (registry.PRODUCTION, registry.PREVIOUS)}


def test_churn_promotes_then_refuses_shuffled_labels_and_dry_run_moves_nothing(
    dagbag, telco_full: Path, workspace: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from tabular_mlops import registry

    dag = dagbag.get_dag("churn_training")
    first = dag.test(run_conf={"data": str(telco_full)})
    assert first.state == "success", _states(first)
    assert _aliases("churn-classifier") == {"production": "1", "previous": None}
    reports = list((workspace / "reports" / "evaluation" / "churn").glob("*/"))
    assert len(reports) == 1
    expected = {"metrics.json", "roc.png", "precision_recall.png", "calibration.png", "confusion_matrix.png"}
    assert expected <= {p.name for p in reports[0].iterdir()}
    metrics = json.loads((reports[0] / "metrics.json").read_text())
    assert metrics["roc_auc"] >= 0.82 and metrics["accuracy"] >= 0.78  # the playbook gate
    [move] = registry.history("churn-classifier")
    assert move["to_version"] == "1" and move["actor"].startswith("airflow:churn_training/")

    # Degraded data: the same customers with their labels shuffled.
    shuffled = tmp_path / "shuffled"
    shutil.copytree(telco_full, shuffled)
    frame = pd.read_csv(shuffled / TELCO_FILE, dtype=str, keep_default_na=False)
    frame["Churn"] = np.random.default_rng(0).permutation(frame["Churn"].to_numpy())
    frame.to_csv(shuffled / TELCO_FILE, index=False)
    second = dag.test(run_conf={"data": str(shuffled)})
    states = _states(second)
    assert second.state == "failed"
    assert states["gate"] == ("failed", 1) and states["promote"][0] == "upstream_failed"
    assert _aliases("churn-classifier") == {"production": "1", "previous": None}
    refused = MlflowClient().get_model_version("churn-classifier", "2")
    assert refused.tags["gate.passed"] == "false" and "FAIL" in refused.description

    third = dag.test(run_conf={"data": str(telco_full), "dry_run": True})
    assert third.state == "success", _states(third)
    assert _aliases("churn-classifier") == {"production": "1", "previous": None}
    assert len(registry.history("churn-classifier")) == 1
    # A dry run registers nothing: versions 1 and 2 are all there is.
    versions = MlflowClient().search_model_versions("name = 'churn-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_broken_data_fails_the_run_once_without_retries(dagbag, telco_copy: Path, workspace: Path) -> None:
    path = telco_copy / TELCO_FILE
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["customerID"]).to_csv(path, index=False)
    run = dagbag.get_dag("churn_training").test(run_conf={"data": str(telco_copy)})
    assert run.state == "failed"
    states = _states(run)
    assert states["data_ingest"] == ("failed", 1)  # bad data does not fix itself on retry
    assert all(states[task][0] == "upstream_failed" for task in CHAIN[1:])
    # No run folder was published and no staging folder was left behind.
    assert not any((workspace / "data" / "interim" / "churn").iterdir())
    summaries = list((workspace / "reports" / "validation" / "churn").glob("*/summary.md"))
    assert len(summaries) == 1 and "customerID" in summaries[0].read_text()


def test_a_retried_train_task_returns_the_version_its_lost_try_registered(
    registry: str, telco_raw: Path, workspace: Path
) -> None:
    """A worker lost after registering leaves a version behind: the retry must not add another."""
    from mlflow import MlflowClient
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import ingest_raw_tables
    from tabular_mlops.pipeline import build_features, train

    report = ingest_raw_tables(get_model_config("churn"), source=str(telco_raw), run_id="retry")
    features = build_features("churn", str(report.interim_dir), "retry")
    client = MlflowClient(registry)
    before = {str(v.version) for v in client.search_model_versions("name = 'churn-classifier'")}
    origin = {"dag_id": "churn_training", "run_id": "manual__retry-test"}
    first = train("churn", str(report.interim_dir), features, origin=origin)
    again = train("churn", str(report.interim_dir), features, origin=origin)
    assert again == {"run_id": first["run_id"], "version": first["version"], "seconds": 0.0, "resumed": True}
    other = train("churn", str(report.interim_dir), features, origin={**origin, "run_id": "manual__other"})
    assert int(other["version"]) == int(first["version"]) + 1
    after = {str(v.version) for v in client.search_model_versions("name = 'churn-classifier'")}
    assert after - before == {first["version"], other["version"]}  # two runs, two versions


def test_a_promote_retried_after_its_lost_try_moved_the_alias_succeeds_once(
    dagbag, telco_full: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try of `promote` moves the alias and records it, then is lost; the retry succeeds."""
    from datetime import timedelta

    from tabular_mlops import registry

    from tests.helpers import asset_events

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # aliases from nothing
    lost: list[str] = []

    def lose_the_worker(step: str) -> None:
        if step == "recorded" and not lost:
            lost.append(step)
            raise RuntimeError("worker lost after moving the alias")

    monkeypatch.setattr(registry, "FAULT_HOOK", lose_the_worker)
    dag = dagbag.get_dag("churn_training")
    promote = dag.task_dict["promote"]  # retry at once: the back-off is Airflow's, not under test
    monkeypatch.setattr(promote, "retry_delay", timedelta(0))
    monkeypatch.setattr(promote, "retry_exponential_backoff", False)
    # dry_run said again: the module's DAG object keeps the Params of the dry run above.
    run = dag.test(run_conf={"data": str(telco_full), "dry_run": False})
    states = _states(run)
    assert run.state == "success", states
    assert lost and states["promote"] == ("success", 2)
    assert _aliases("churn-classifier") == {"production": "1", "previous": None}
    assert [m["to_version"] for m in registry.history("churn-classifier")] == ["1"]  # one entry
    result = run.get_task_instance("promote").xcom_pull(task_ids="promote")
    assert result["promoted"] is True and result["already"] is True
    assert len(asset_events("model/churn", run.run_id)) == 1
