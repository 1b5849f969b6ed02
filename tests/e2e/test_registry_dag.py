"""`<model>_registry` run for real with dag.test(): the UI's registry actions on a real registry.

The versions are registered runs with a signed placeholder model: these actions move aliases and
never load a model (loading is what serving and scoring test).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
CHURN, CREDIT = "churn-classifier", "credit-risk-classifier"


@pytest.fixture(scope="module")
def bag(airflow_db: str, fresh_registry: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The DAGs, over a registry holding three signed versions of each model."""
    import mlflow
    from airflow.dag_processing.dagbag import DagBag
    from tabular_mlops import signing, tracking

    model = tmp_path_factory.mktemp("model")
    (model / "MLmodel").write_text("flavors: {}\n")
    # The bundle's own configure: an earlier module's mlflow.set_tracking_uri must not pick the store.
    client = tracking.configure()
    assert mlflow.get_tracking_uri() == fresh_registry
    mlflow.set_experiment("registry-dag-test")  # not the experiment an earlier module made active
    for name in (CHURN, CREDIT):
        client.create_registered_model(name)
        for _ in range(3):
            with mlflow.start_run() as run:
                mlflow.set_tag("input_fingerprint", "abc123")
            version = client.create_model_version(name, source=model.as_uri(), run_id=run.info.run_id)
            client.update_model_version(name, version.version, description=f"# {name} v{version.version}")
            signing.sign(name, str(version.version))
    dagbag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag


def _aliases(name: str) -> dict[str, str | None]:
    from tabular_mlops import registry

    moved = (registry.PRODUCTION, registry.PREVIOUS)
    aliases = {alias: registry.alias_version(name, alias) for alias in moved}
    return {**aliases, registry.CHALLENGER: registry.challenger_version(name)}  # None when parked


def _run(bag: Any, model: str, **conf: Any) -> dict[str, str]:
    # Every Param each time: the DAG object keeps the last run's conf as its Params.
    run = bag.get_dag(f"{model}_registry").test(run_conf={"reason": "", "version": None, **conf})
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_every_action_of_the_form_moves_what_the_cli_would(bag: Any, workspace: Path) -> None:
    from tabular_mlops import registry

    assert _run(bag, "churn", action="promote_version", version="1")["act"] == "success"
    assert _run(bag, "churn", action="promote_version", version="2", reason="better")["act"] == "success"
    assert _aliases(CHURN) == {"production": "2", "previous": "1", "challenger": None}
    assert _run(bag, "churn", action="rollback")["act"] == "success"
    assert _aliases(CHURN)["production"] == "1"
    registry.set_challenger(CHURN, "3", "test")
    assert _run(bag, "churn", action="archive_challenger")["act"] == "success"
    assert _aliases(CHURN)["challenger"] is None
    registry.set_challenger(CHURN, "3", "test")
    assert _run(bag, "churn", action="promote_challenger", version="3")["act"] == "success"
    assert _aliases(CHURN) == {"production": "3", "previous": "1", "challenger": None}
    trail = registry.history(CHURN)
    assert [m["action"] for m in trail] == [
        "promote", "promote", "rollback", "challenge", "archive", "challenge", "promote"
    ]  # fmt: skip
    assert all(m["actor"].startswith("airflow:churn_registry/") for m in trail if m["action"] != "challenge")
    assert trail[1]["reason"] == "better"


def test_an_action_that_cannot_be_made_fails_in_plan_naming_why(bag: Any, workspace: Path) -> None:
    before = _aliases(CHURN)
    states = _run(bag, "churn", action="promote_version", version="9")
    assert states["plan"] == "failed" and states["act"] == "upstream_failed"
    states = _run(bag, "churn", action="promote_challenger")
    assert states["plan"] == "failed"
    assert _aliases(CHURN) == before
    with pytest.raises(Exception, match="version"):  # the form refuses what is not a version number
        _run(bag, "churn", action="promote_version", version="1; drop")


def test_a_credit_risk_promotion_from_the_form_waits_for_approval(bag: Any, workspace: Path) -> None:
    from tabular_mlops import registry
    from tabular_mlops.approval import APPROVE, REJECT, answer_in_metadata_db

    registry.promote(CREDIT, "1", "test")
    bob = {"id": "9", "name": "bob"}
    for option, expected in ((REJECT, "1"), (APPROVE, "2")):
        thread = threading.Thread(
            target=answer_in_metadata_db,
            args=("credit_risk_registry", option, f"{option} it", bob),
            daemon=True,
        )
        thread.start()
        states = _run(bag, "credit_risk", action="promote_version", version="2")
        thread.join(timeout=60)
        assert states["approve"] == "success" and states["record_answer"] == "success", states
        assert _aliases(CREDIT)["production"] == expected
    answers = [m for m in registry.history(CREDIT) if m["action"] in registry.DECISIONS]
    assert [(m["action"], m["approval"]["by"], m["approval"]["comment"]) for m in answers] == [
        ("reject", "bob", "Reject it"),
        ("approve", "bob", "Approve it"),
    ]
    # A rollback goes straight on: it returns to the version production had.
    states = _run(bag, "credit_risk", action="rollback")
    assert states["approve"] == "skipped" and states["act"] == "success", states
    assert _aliases(CREDIT)["production"] == "1"
