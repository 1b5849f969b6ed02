"""Alias moves against a real SQLite MLflow registry: promote, previous, rollback, audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from tabular_mlops import registry, signing


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered model with three versions in a fresh tracking store."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("demo-classifier")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    for _ in range(3):
        version = client.create_model_version("demo-classifier", source=(tmp_path / "model").as_uri())
        signing.sign("demo-classifier", str(version.version))  # as training does
    return "demo-classifier"


def test_an_unsigned_version_is_never_promoted(model: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.delete_model_version_tag(model, "2", signing.SIGNATURE_TAG)
    with pytest.raises(
        registry.RegistryError, match="refusing to promote: demo-classifier version 2 is not signed"
    ):
        registry.promote(model, "2", "cli:a@h")
    assert registry.alias_version(model, registry.PRODUCTION) is None


def test_rollback_refuses_a_previous_alias_pointed_at_an_unsigned_version(model: str) -> None:
    from mlflow import MlflowClient

    registry.promote(model, "1", "cli:a@h")
    registry.promote(model, "3", "cli:a@h")
    client = MlflowClient()
    client.delete_model_version_tag(model, "2", signing.SIGNATURE_TAG)
    client.set_registered_model_alias(model, registry.PREVIOUS, "2")  # anyone with EDIT can
    with pytest.raises(registry.RegistryError, match="refusing to roll back: demo-classifier version 2"):
        registry.rollback(model, "cli:a@h")
    assert registry.alias_version(model, registry.PRODUCTION) == "3"


def test_promote_keeps_the_replaced_version_as_previous(model: str) -> None:
    registry.promote(model, "1", "cli:test@host")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
    assert registry.alias_version(model, registry.PREVIOUS) is None
    move = registry.promote(model, "2", "airflow:x_training/run1", reason="passed", gate={"passed": True})
    assert (move.from_version, move.to_version) == ("1", "2")
    assert registry.alias_version(model, registry.PRODUCTION) == "2"
    assert registry.alias_version(model, registry.PREVIOUS) == "1"


def test_rollback_is_one_alias_move_and_everything_is_audited(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    registry.promote(model, "3", "cli:a@h")
    move = registry.rollback(model, "cli:b@h")
    assert (move.from_version, move.to_version) == ("3", "1")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
    assert registry.alias_version(model, registry.PREVIOUS) == "3"
    moves = registry.history(model)
    assert [(m["action"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promote", None, "1"),
        ("promote", "1", "3"),
        ("rollback", "3", "1"),
    ]
    assert moves[-1]["actor"] == "cli:b@h" and moves[0]["at"] < moves[-1]["at"]


def test_refusals_name_the_model(model: str) -> None:
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback(model, "cli:a@h")
    registry.promote(model, "1", "cli:a@h")
    with pytest.raises(registry.RegistryError, match="already in production"):
        registry.promote(model, "1", "cli:a@h")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        registry.promote(model, "9", "cli:a@h")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
