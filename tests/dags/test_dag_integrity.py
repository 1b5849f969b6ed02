"""Every DAG file imports cleanly through Airflow's DagBag, stays light, and follows house rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT_DIR / "dags"
CONFIGS = PROJECT_DIR / "include" / "configs"
HEAVY = [
    "pandas",
    "numpy",
    "pyarrow",
    "mlflow",
    "xgboost",
    "lightgbm",
    "sklearn",
    "great_expectations",
    "evidently",
    "duckdb",
]


def _dagbag(config_dir: Path | None = None) -> dict:
    """Fill a DagBag in a fresh interpreter (config is read at parse time) and return its verdict."""
    script = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {dag_id: {"owner": dag.owner, "tags": sorted(dag.tags), "tasks": [t.task_id for t in dag.tasks],
                      "retries": [t.retries for t in dag.tasks], "doc_md": bool(dag.doc_md),
                      "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
                      "types": {t.task_id: type(t).__mro__[1].__name__ for t in dag.tasks},
                      "catchup": dag.catchup, "schedule": getattr(dag.timetable, "summary", None)}
             for dag_id, dag in bag.dags.items()},
}))
"""
    env = dict(os.environ)
    if config_dir is not None:
        env["MLOPS_CONFIG_DIR"] = str(config_dir)
    result = subprocess.run(
        [sys.executable, "-c", script, str(DAGS_DIR)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dagbag() -> dict:
    return _dagbag()


def test_no_import_errors(dagbag: dict) -> None:
    assert dagbag["errors"] == {}


def test_one_training_dag_per_model_config(dagbag: dict) -> None:
    models = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.name != "defaults.yaml")
    assert {f"{m}_training" for m in models} <= set(dagbag["dags"])


@pytest.mark.parametrize("model", ["churn", "credit_risk"])
def test_training_dag_shape(dagbag: dict, model: str) -> None:
    dag = dagbag["dags"][f"{model}_training"]
    assert dag["tasks"][0] == "data_ingest"
    assert dag["catchup"] is False and dag["doc_md"]


def test_credit_risk_waits_for_a_human_between_gate_and_promote(dagbag: dict) -> None:
    dag = dagbag["dags"]["credit_risk_training"]
    upstream = dag["upstream"]
    assert dag["types"]["approve"] == "ApprovalOperator"  # Airflow's own HITL operator
    assert upstream["approval_needed"] == ["gate"]
    assert upstream["approve"] == ["approval_needed"]
    assert "approve" in upstream["promote"] and "gate" in upstream["promote"]
    # The online store gets the candidate's history features beside evaluation, off the gate's path.
    assert sorted(upstream["materialize"]) == ["data_ingest", "train"]
    assert "materialize" not in dagbag["dags"]["churn_training"]["tasks"]
    assert {"approve", "promote"} <= set(upstream["record_answer"])


def test_churn_promotes_without_an_approval_task(dagbag: dict) -> None:
    dag = dagbag["dags"]["churn_training"]
    assert "approve" not in dag["tasks"] and "record_answer" not in dag["tasks"]
    assert dag["upstream"]["promote"] == ["gate"]


def test_every_dag_has_owner_tags_and_retries(dagbag: dict) -> None:
    assert dagbag["dags"]
    for dag_id, dag in dagbag["dags"].items():
        assert dag["owner"] and dag["owner"] != "airflow", dag_id
        assert dag["tags"], dag_id
        assert dag["retries"] and all(r >= 1 for r in dag["retries"]), dag_id


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS_DIR.glob("*.py")))
def test_dag_file_imports_no_heavy_library(dag_file: str) -> None:
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(DAGS_DIR / dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_broken_config_is_an_import_error_naming_file_and_field(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "defaults.yaml", tmp_path)
    raw = yaml.safe_load((CONFIGS / "churn.yaml").read_text())
    raw["model"]["type"] = "catboost"
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(raw))
    errors = _dagbag(tmp_path)["errors"]
    assert sorted(Path(f).name for f in errors) == sorted(p.name for p in DAGS_DIR.glob("*.py"))
    for message in errors.values():
        assert str(tmp_path / "churn.yaml") in message and "model.type" in message and "catboost" in message


def test_new_model_by_yaml_alone_gets_its_dag(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "defaults.yaml", tmp_path)
    shutil.copy(CONFIGS / "churn.yaml", tmp_path)
    raw = yaml.safe_load((CONFIGS / "churn.yaml").read_text())
    raw["model"]["registered_name"] = "churn-eu-classifier"
    (tmp_path / "churn_eu.yaml").write_text(yaml.safe_dump(raw))
    bag = _dagbag(tmp_path)
    assert bag["errors"] == {}
    assert {"churn_training", "churn_eu_training", "churn_eu_batch_scoring"} <= set(bag["dags"])


@pytest.mark.parametrize("model", ["churn", "credit_risk"])
def test_batch_scoring_dag_shape(dagbag: dict, model: str) -> None:
    dag = dagbag["dags"][f"{model}_batch_scoring"]
    tasks = ["locate", "pin_model", "wait_for_partition", "prepare", "score_chunk", "publish"]
    # A model with an online store upserts the partition's history features after publishing.
    assert dag["tasks"] == tasks + (["materialize"] if model == "credit_risk" else [])
    if model == "credit_risk":
        assert "publish" in dag["upstream"]["materialize"]
    assert dag["schedule"] == "0 2 * * *"  # schedules.scoring of defaults.yaml, UTC
    assert dag["catchup"] is False and dag["doc_md"]


@pytest.mark.parametrize("model", ["churn", "credit_risk"])
def test_monitoring_dag_shape(dagbag: dict, model: str) -> None:
    dag = dagbag["dags"][f"{model}_monitoring"]
    assert dag["tasks"] == ["measure", "alert", "request_retrain", "propose_challenger"]
    assert dag["catchup"] is False and dag["doc_md"]
