"""The gate tells a registry or object store that is down from a production model that is broken.

Real runs: ingest, features and LightGBM on generated Telco data, a real SQLite registry, and a
production version whose artifacts live on an S3 endpoint nobody listens on (transient) or in a
folder that no longer exists (permanent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tabular_mlops import registry

from tests.helpers import free_port

NAME = "churn-classifier"


@pytest.fixture
def candidate(telco_raw: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A registered, not yet promoted churn candidate in a fresh registry."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLOPS_MLFLOW_DIR", str(tmp_path / "mlflow"))
    return run_training_chain(get_model_config("churn"), str(telco_raw), run_id="gate-faults", promote=False)


def _production_at(source: str) -> str:
    """Register a version with its artifacts at `source` and point production at it."""
    from mlflow import MlflowClient

    client = MlflowClient()
    version = str(client.create_model_version(NAME, source=source).version)
    client.set_registered_model_alias(NAME, registry.PRODUCTION, version)
    return version


def test_production_unreachable_while_gating_is_retried_not_refused(
    candidate: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.faults import is_transient
    from tabular_mlops.promotion import evaluate_candidate

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    _production_at("s3://lake/mlflow/production-model")
    config = get_model_config("churn")
    with pytest.raises(Exception) as raised:
        evaluate_candidate(config, candidate["run_id"], candidate["version"])
    assert is_transient(raised.value), repr(raised.value)  # Airflow's task retries take it from here


def test_a_production_model_that_cannot_load_refuses_the_candidate(candidate: dict, tmp_path: Path) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.promotion import evaluate_candidate, gate_candidate

    version = _production_at((tmp_path / "gone").as_uri())
    config = get_model_config("churn")
    summary = evaluate_candidate(config, candidate["run_id"], candidate["version"])
    assert summary["production_version"] == version
    verdict = gate_candidate(config, candidate["run_id"])
    assert not verdict["passed"]
    assert any("production model could not be scored" in r for r in verdict["reasons"]), verdict["reasons"]
