"""`<model>_training` run for real with dag.test(): Airflow's own task runner and metadata DB."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag(airflow_db: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def _states(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def test_churn_training_ingests_generated_data(dagbag, telco_raw: Path, workspace: Path) -> None:
    run = dagbag.get_dag("churn_training").test(run_conf={"data": str(telco_raw)})
    assert run.state == "success", _states(run)
    interim = list((workspace / "data" / "interim" / "churn").glob("*/customers.parquet"))
    assert len(interim) == 1
    assert len(pd.read_parquet(interim[0])) == 2000


def test_broken_data_fails_the_run_once_without_retries(dagbag, telco_copy: Path, workspace: Path) -> None:
    path = telco_copy / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["customerID"]).to_csv(path, index=False)
    run = dagbag.get_dag("churn_training").test(run_conf={"data": str(telco_copy)})
    assert run.state == "failed"
    assert _states(run) == {"data_ingest": ("failed", 1)}  # bad data does not fix itself on retry
    # No run folder was published and no staging folder was left behind.
    assert not any((workspace / "data" / "interim" / "churn").iterdir())
    summaries = list((workspace / "reports" / "validation" / "churn").glob("*/summary.md"))
    assert len(summaries) == 1 and "customerID" in summaries[0].read_text()
