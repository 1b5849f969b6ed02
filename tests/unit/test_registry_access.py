"""`mlops registry-access`: its settings and the grants it plans (the server side runs in the stack test)."""

from __future__ import annotations

import pytest
from tabular_mlops import cli, registry_access
from tabular_mlops.registry_access import Account, RegistryAccessError, accounts_from_env, plan_grants

GOOD = {"MLFLOW_WORKERS_PASSWORD": "w" * 12, "MLFLOW_SERVING_PASSWORD": "s" * 12}


def test_accounts_come_from_the_environment_with_default_usernames() -> None:
    accounts = accounts_from_env(GOOD)
    assert [(a.role, a.username) for a in accounts] == [
        ("workers", "airflow-workers"),
        ("serving", "serving"),
    ]
    named = accounts_from_env({**GOOD, "MLFLOW_SERVING_USERNAME": "scoring"})
    assert named[1].username == "scoring" and named[1].password == "s" * 12


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_SERVING_PASSWORD": "s" * 12}, "MLFLOW_WORKERS_PASSWORD is not set"),
        ({**GOOD, "MLFLOW_SERVING_PASSWORD": "short"}, "MLFLOW_SERVING_PASSWORD is shorter than 12"),
        ({**GOOD, "MLFLOW_SERVING_USERNAME": "airflow-workers"}, "name the same user 'airflow-workers'"),
    ],
)
def test_a_bad_setting_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(RegistryAccessError, match=message):
        accounts_from_env(env)


def test_workers_edit_and_serving_only_reads_the_bundles_resources() -> None:
    accounts = [Account("workers", "w", "x" * 12), Account("serving", "s", "y" * 12)]
    resources = registry_access.bundle_resources()
    ids = {name: str(i) for i, name in enumerate(resources["training"] + resources["monitoring"])}
    grants = {
        (g.username, g.resource_type, g.resource_id): g.permission
        for g in plan_grants(accounts, ids, resources)
    }
    assert set(resources["models"]) == {"churn-classifier", "credit-risk-classifier"}
    for name in resources["models"]:
        assert grants[("w", "registered_model", name)] == "EDIT"  # versions and alias moves, no delete
        assert grants[("s", "registered_model", name)] == "READ"
    for name in resources["training"]:
        assert grants[("w", "experiment", ids[name])] == "EDIT"
        assert grants[("s", "experiment", ids[name])] == "READ"  # the versions' artifacts
    assert not [
        key for key in grants if key[0] == "s" and key[2] in {ids[n] for n in resources["monitoring"]}
    ]
    assert set(grants.values()) == {"EDIT", "READ"}  # never MANAGE


def test_the_command_refuses_without_the_admin_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert cli.main(["registry-access"]) == cli.EXIT_FAILED
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in capsys.readouterr().err


def test_the_command_needs_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert cli.main(["registry-access"]) == cli.EXIT_FAILED
    assert "must be an MLflow server, not sqlite:///mlflow.db" in capsys.readouterr().err
