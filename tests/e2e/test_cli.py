"""The installed `mlops` command, run as a user runs it: exit codes, progress, JSON last line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import last_json, run_mlops


def test_generate_then_validate_with_dirty_rows(tmp_path: Path, workspace: Path) -> None:
    out = tmp_path / "telco"
    generated = run_mlops(
        "generate", "--dataset", "telco", "--out", str(out), "--rows", "600", "--dirty-rows", "3"
    )
    assert generated.returncode == 0, generated.stderr
    summary = last_json(generated)
    assert summary["rows"] == {"WA_Fn-UseC_-Telco-Customer-Churn.csv": 600}
    assert len(summary["dirty_rows"]) == 3

    validated = run_mlops("validate", "--model", "churn", "--data", str(out), "--run-id", "cli")
    assert validated.returncode == 0, validated.stderr
    result = last_json(validated)
    assert result["status"] in ("passed", "passed_with_warnings")
    assert result["tables"]["customers"]["quarantined"] == 3
    assert result["tables"]["customers"]["written"] == 597
    assert "[mlops] customers:" in validated.stderr  # progress goes to stderr
    assert Path(result["report"]).is_file()
    assert (workspace / "data" / "interim" / "churn" / "cli" / "customers.parquet").is_file()


def test_broken_file_exits_1_and_names_the_failed_expectation(telco_copy: Path, workspace: Path) -> None:
    path = telco_copy / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["Contract"]).to_csv(path, index=False)
    result = run_mlops("validate", "--model", "churn", "--data", str(telco_copy), "--run-id", "broken")
    assert result.returncode == 1
    summary = last_json(result)
    assert summary["status"] == "failed"
    assert any("customers.Contract" in line for line in summary["failures"])
    assert "expect_column_to_exist on customers.Contract" in result.stderr
    assert not (workspace / "data" / "interim" / "churn" / "broken").exists()


def test_unknown_model_and_missing_folder_are_clear_errors(tmp_path: Path, workspace: Path) -> None:
    unknown = run_mlops("validate", "--model", "fraud", "--data", str(tmp_path))
    assert unknown.returncode == 2
    assert "fraud" in unknown.stderr and "churn" in unknown.stderr  # names what exists

    missing = run_mlops("validate", "--model", "churn", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nowhere'}: data folder does not exist" in missing.stderr
    # What it looked for, and that the one table's CSV file itself would do.
    assert "churn reads one table: a folder holding WA_Fn-UseC_-Telco-Customer-Churn.csv" in missing.stderr
    assert "or a .csv file of that table" in missing.stderr


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    result = run_mlops("generate", "--dataset", "mnist", "--out", str(tmp_path))
    assert result.returncode == 2 and "invalid choice: 'mnist'" in result.stderr
    rows = run_mlops("generate", "--dataset", "telco", "--out", str(tmp_path), "--rows", "0")
    assert rows.returncode != 0 and "--rows must be at least 1" in rows.stderr
    assert not list(tmp_path.iterdir())


def test_home_credit_generation_prints_progress_and_counts(tmp_path: Path) -> None:
    result = run_mlops(
        "generate", "--dataset", "home_credit", "--out", str(tmp_path), "--rows", "300", "--seed", "4"
    )
    assert result.returncode == 0, result.stderr
    summary = last_json(result)
    assert summary["rows"]["application_train.csv"] == 300
    assert set(summary["rows"]) == {p.name for p in tmp_path.iterdir()}
    assert "home_credit: " in result.stderr and "applicants" in result.stderr


def test_train_dry_run_then_promote_history_and_rollback(
    telco_raw: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlops train` prints the run id as it goes and one JSON object last; alias moves are audited."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLOPS_MLFLOW_DIR": str(tmp_path)}
    # A low floor keeps the 2,000-customer sample above the gate; the floor itself is tested elsewhere.
    dry = run_mlops(
        "train",
        "--model",
        "churn",
        "--data",
        str(telco_raw),
        "--dry-run",
        "--min-auc",
        "0.6",
        "--min-accuracy",
        "0.6",
        env=env,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = last_json(dry)
    assert summary["dry_run"] is True and summary["promoted"] is False and summary["gate"]["passed"] is True
    assert f"[mlops] MLflow run {summary['run_id']}" in dry.stderr
    assert summary["metrics"]["candidate"]["roc_auc"] > 0.6
    # A dry run registers nothing: the registry does not even know the model yet.
    assert summary["version"] is None and "no version registered" in dry.stderr
    unknown = run_mlops("history", "--model", "churn", env=env)
    assert unknown.returncode == 1 and "not found" in unknown.stderr

    # A version the chain registered but did not promote, for `mlops promote` to move the alias to.
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    registered = run_training_chain(get_model_config("churn"), str(telco_raw), run_id="cli", promote=False)
    promoted = run_mlops("promote", "--model", "churn", "--version", registered["version"], env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert last_json(promoted)["to_version"] == registered["version"]
    again = run_mlops("promote", "--model", "churn", "--version", registered["version"], env=env)
    assert again.returncode == 0, again.stderr
    assert last_json(again)["already"] is True and "already in production" in again.stderr
    refused = run_mlops("rollback", "--model", "churn", env=env)
    assert refused.returncode == 1 and "nothing to roll back to" in refused.stderr
    history = last_json(run_mlops("history", "--model", "churn", env=env))
    assert [m["action"] for m in history["moves"]] == ["promote"]
    assert history["moves"][0]["actor"].startswith("cli:")


def test_train_refused_by_the_gate_exits_1_with_the_json(
    telco_raw: Path, workspace: Path, tmp_path: Path
) -> None:
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLOPS_MLFLOW_DIR": str(tmp_path)}
    result = run_mlops("train", "--model", "churn", "--data", str(telco_raw), "--min-auc", "0.99", env=env)
    assert result.returncode == 1
    summary = last_json(result)
    assert summary["promoted"] is False and summary["gate"]["passed"] is False
    assert any("0.990" in reason for reason in summary["gate"]["reasons"])
