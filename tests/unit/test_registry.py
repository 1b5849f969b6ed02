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
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        registry.promote(model, "9", "cli:a@h")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"


def test_promoting_the_production_version_again_moves_nothing_and_records_nothing(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    first = registry.promote(model, "2", "cli:a@h", reason="first")
    again = registry.promote(model, "2", "cli:b@h", reason="again")
    assert again.already and not first.already
    assert (again.from_version, again.to_version, again.actor, again.at) == ("1", "2", "cli:a@h", first.at)
    assert registry.alias_version(model, registry.PREVIOUS) == "1"  # never the version itself
    assert [m["to_version"] for m in registry.history(model)] == ["1", "2"]


class _Lost(BaseException):
    """A worker lost at a fault point (BaseException: nothing in promote catches it)."""


@pytest.mark.parametrize("step", ["moved", "recorded"])
def test_a_retried_promote_after_a_lost_try_succeeds_with_one_audit_entry(
    model: str, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    registry.promote(model, "1", "cli:a@h")

    def lose(at: str) -> None:
        if at == step:
            raise _Lost(at)

    monkeypatch.setattr(registry, "FAULT_HOOK", lose)
    with pytest.raises(_Lost):
        registry.promote(model, "2", "airflow:d/r", reason="passed the gate")
    monkeypatch.setattr(registry, "FAULT_HOOK", None)
    retry = registry.promote(model, "2", "airflow:d/r", reason="passed the gate")
    assert retry.already and (retry.from_version, retry.to_version) == ("1", "2")
    moves = registry.history(model)
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, "1"), ("1", "2")]
    assert moves[-1]["reason"] == "passed the gate" and "already" not in moves[-1]
    assert registry.alias_version(model, registry.PRODUCTION) == "2"
    assert registry.alias_version(model, registry.PREVIOUS) == "1"
    assert "promoted_at" in MlflowClient().get_model_version(model, "2").tags


def test_a_challenger_shadows_without_moving_production(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    move = registry.set_challenger(model, "2", "airflow:x_training/r1", reason="passed the gate")
    assert (move.action, move.alias, move.to_version) == ("challenge", registry.CHALLENGER, "2")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
    assert registry.alias_version(model, registry.CHALLENGER) == "2"
    again = registry.set_challenger(model, "2", "airflow:x_training/r1")
    assert again.already and len([m for m in registry.history(model) if m["action"] == "challenge"]) == 1
    with pytest.raises(registry.RegistryError, match="production already"):
        registry.set_challenger(model, "1", "cli:a@h")


def test_promoting_the_challenger_keeps_previous_and_clears_the_challenger(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    registry.set_challenger(model, "3", "cli:a@h")
    with pytest.raises(registry.RegistryError, match="the challenger is version 3, not 2"):
        registry.promote_challenger(model, "cli:a@h", expected="2")
    move = registry.promote_challenger(model, "cli:b@h", expected="3")
    assert (move.from_version, move.to_version, move.already) == ("1", "3", False)
    assert registry.alias_version(model, registry.PRODUCTION) == "3"
    assert registry.alias_version(model, registry.PREVIOUS) == "1"
    assert registry.challenger_version(model) is None
    assert registry.alias_version(model, registry.CHALLENGER) == "3"  # parked on production
    retried = registry.promote_challenger(model, "cli:b@h", expected="3")  # the retry of a done move
    assert retried.already
    assert [m["to_version"] for m in registry.history(model) if m["action"] == "promote"] == ["1", "3"]
    with pytest.raises(registry.RegistryError, match="nothing to promote"):
        registry.promote_challenger(model, "cli:b@h")


def test_archiving_the_challenger_removes_only_its_alias(model: str) -> None:
    from mlflow import MlflowClient

    registry.promote(model, "1", "cli:a@h")
    registry.set_challenger(model, "2", "cli:a@h")
    move = registry.archive_challenger(model, "cli:c@h", reason="lost on 900 rows")
    assert (move.action, move.from_version, move.to_version) == ("archive", "2", None)
    assert registry.challenger_version(model) is None
    assert registry.alias_version(model, registry.CHALLENGER) == "1"  # parked: EDIT cannot delete
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
    assert "archived_at" in MlflowClient().get_model_version(model, "2").tags
    with pytest.raises(registry.RegistryError, match="nothing to archive"):
        registry.archive_challenger(model, "cli:c@h")


def test_a_parked_challenger_follows_production_and_never_challenges_again(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    registry.set_challenger(model, "2", "cli:a@h")
    registry.archive_challenger(model, "cli:a@h")  # parked on 1
    registry.promote(model, "3", "cli:a@h")
    assert registry.alias_version(model, registry.CHALLENGER) == "3"
    assert registry.challenger_version(model) is None
    registry.rollback(model, "cli:a@h")
    assert registry.alias_version(model, registry.PRODUCTION) == "1"
    assert registry.alias_version(model, registry.CHALLENGER) == "1"
    assert registry.challenger_version(model) is None
    registry.set_challenger(model, "2", "cli:a@h")  # a real challenger again: production moves leave it
    registry.promote(model, "3", "cli:a@h")
    assert registry.challenger_version(model) == "2"


def test_an_answer_is_recorded_once_with_who_when_and_comment(model: str) -> None:
    registry.promote(model, "1", "cli:a@h")
    answer = {"by": "alice", "responded_at": "2026-12-02T10:00:00+00:00", "comment": "x" * 5000}
    move = registry.record_decision(model, "2", "reject", "airflow:x_training/r2", answer, reason="no")
    assert (move.action, move.from_version, move.to_version, move.alias) == ("reject", "1", "2", "")
    again = registry.record_decision(model, "2", "reject", "airflow:x_training/r2", answer)
    assert again.already
    entries = [m for m in registry.history(model) if m["action"] == "reject"]
    assert len(entries) == 1
    assert entries[0]["approval"]["by"] == "alice"
    assert len(entries[0]["approval"]["comment"]) == registry.COMMENT_LIMIT
    assert registry.alias_version(model, registry.PRODUCTION) == "1"  # an answer moves nothing
    # A promote after a reject still finds its own last production move (the retry logic).
    registry.promote(model, "2", "cli:a@h")
    assert registry.promote(model, "2", "cli:a@h").already
    with pytest.raises(registry.RegistryError, match="unknown decision"):
        registry.record_decision(model, "2", "maybe", "cli:a@h", answer)
