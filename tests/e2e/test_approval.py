"""Governed promotion of credit_risk (promotion.approval: required) run for real with dag.test().

The approval task is Airflow's ApprovalOperator: it parks in awaiting_input, and an answer
written the way the REST route writes it (approval.answer_in_metadata_db) resumes it. The REST
route itself, `mlops approve` and `mlops reject` are driven in the native stack test.
"""

from __future__ import annotations

import json
import threading
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
NAME = "credit-risk-classifier"
ALICE = {"id": "7", "name": "alice"}


@pytest.fixture(scope="module")
def credit_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tabular_mlops.generators.home_credit import generate_home_credit

    folder = tmp_path_factory.mktemp("home_credit")
    generate_home_credit(folder, rows=4000, seed=8)
    return folder


@pytest.fixture(scope="module")
def dag(airflow_db: str, fresh_registry: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("credit_risk_training")


def _run_answered(dag: Any, conf: dict[str, Any], option: str, comment: str) -> tuple[Any, str]:
    """Run the DAG while a second thread answers its approval task as alice; return (run, run id)."""
    from tabular_mlops.approval import answer_in_metadata_db

    answered: dict[str, Any] = {}

    def answer() -> None:
        try:
            answered["run_id"] = answer_in_metadata_db(dag.dag_id, option, comment, ALICE, timeout=900)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            answered["error"] = exc

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    run = dag.test(run_conf=conf)
    thread.join(timeout=60)
    assert "error" not in answered, answered
    return run, answered["run_id"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_an_approved_candidate_moves_production_and_the_trail_holds_who_when_and_why(
    dag: Any, credit_raw: Path, workspace: Path, smtp_server: Any
) -> None:
    from mlflow import MlflowClient
    from tabular_mlops import registry

    run, run_id = _run_answered(
        dag, {"data": str(credit_raw), "min_auc": 0.7, "dry_run": False}, "Approve", "card read, CI fine"
    )
    assert run.state == "success", _states(run)
    assert run.run_id == run_id
    assert _states(run)["approve"] == "success" and _states(run)["record_answer"] == "success"
    assert registry.alias_version(NAME, registry.PRODUCTION) == "1"
    version = MlflowClient().get_model_version(NAME, "1")
    for key in ("git_commit", "input_fingerprint", "config_hash", "airflow_dag_id", "airflow_run_id"):
        assert version.tags.get(key), key
    features = list((workspace / "data" / "features" / "credit_risk").glob("*/feature_columns.json"))
    assert len(features) == 1 and len(json.loads(features[0].read_text())) > 300
    trail = registry.history(NAME)
    assert [m["action"] for m in trail] == ["promote", "approve"]
    promoted, answer = trail
    assert promoted["approval"]["by"] == "alice" and promoted["approval"]["decision"] == "approve"
    assert answer["approval"]["comment"] == "card read, CI fine" and answer["approval"]["responded_at"]
    assert answer["actor"] == f"airflow:credit_risk_training/{run_id}"
    # The approvers heard of it: one mail with the link to the task and the body they judge on.
    assert len(smtp_server.messages) == 1
    mail = message_from_bytes(smtp_server.messages[0].content)
    assert mail["Subject"] == "Approve credit_risk version 1?"
    assert mail["From"] == "mlops-alerts@example.com"  # alerts.sender, not the connection's from_email
    text = mail.get_payload(0).get_payload(decode=True).decode()
    assert f"/dags/credit_risk_training/runs/{run_id}/tasks/approve/required_actions" in text
    assert "input_fingerprint" in text and "roc_auc 95% CI" in text


def test_a_rejected_candidate_moves_nothing_and_the_answer_is_recorded(
    dag: Any, credit_raw: Path, workspace: Path, smtp_server: Any
) -> None:
    from tabular_mlops import registry

    before = registry.alias_version(NAME, registry.PRODUCTION)
    run, run_id = _run_answered(
        dag, {"data": str(credit_raw), "min_auc": 0.7, "dry_run": False}, "Reject", "slices too thin"
    )
    states = _states(run)
    assert states["approve"] == "success" and states["promote"] == "skipped", states
    assert states["record_answer"] == "success"
    recorded = [ti for ti in run.get_task_instances() if ti.task_id == "record_answer"][0]
    assert recorded.xcom_pull(task_ids="record_answer")["decision"] == "reject", recorded.xcom_pull(
        task_ids=["approve", "record_answer"]
    )
    assert registry.alias_version(NAME, registry.PRODUCTION) == before
    rejected = [m for m in registry.history(NAME) if m["action"] == "reject"]
    assert len(rejected) == 1
    assert rejected[0]["approval"]["by"] == "alice"
    assert rejected[0]["approval"]["comment"] == "slices too thin"
    assert rejected[0]["to_version"] != before and rejected[0]["from_version"] == before


def test_a_dry_run_asks_nobody(dag: Any, credit_raw: Path, workspace: Path) -> None:
    from tabular_mlops import registry

    before = registry.alias_version(NAME, registry.PRODUCTION)
    run = dag.test(run_conf={"data": str(credit_raw), "min_auc": 0.7, "dry_run": True})
    states = _states(run)
    assert run.state == "success", states
    assert states["approve"] == "skipped" and states["promote"] == "success", states
    assert registry.alias_version(NAME, registry.PRODUCTION) == before
