"""Odd but valid data (issue 14, points 11 and 12): header-only tables, min_rows, `min_share: 0`,
and data problems that end as one error line at the CLI, never a traceback."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.helpers import last_json, run_mlops

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


def _keep_rows(folder: Path, file_name: str, rows: int) -> None:
    """Cut a CSV down to its header and its first `rows` records (0: header only)."""
    path = folder / file_name
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + rows]))


def _credit_configs(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the config folder whose credit_risk `data.tables` went through `edit`."""
    folder = tmp_path / "configs"
    shutil.copytree(CONFIGS, folder)
    path = folder / "credit_risk.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config["data"]["tables"])
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_header_only_history_tables_train_with_null_features_and_are_reported(
    home_credit_copy: Path, workspace: Path, tmp_path: Path
) -> None:
    """No card or POS activity this month: the run goes on, says so, and those features are null."""
    empty = ("pos_cash_balance", "credit_card_balance")
    _keep_rows(home_credit_copy, "POS_CASH_balance.csv", 0)
    _keep_rows(home_credit_copy, "credit_card_balance.csv", 0)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLOPS_MLFLOW_DIR": str(tmp_path)}
    result = run_mlops(
        "train",
        "--model",
        "credit_risk",
        "--data",
        str(home_credit_copy),
        "--run-id",
        "empty",
        "--dry-run",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for table in empty:
        assert (
            f"[mlops] {table}: [warn] expect_table_not_empty on {table}: 0 rows (header only)"
            in result.stderr
        )
    assert last_json(result)["metrics"]["candidate"]["roc_auc"] > 0.5

    report_dir = workspace / "reports" / "validation" / "credit_risk" / "empty"
    report = json.loads((report_dir / "validation.json").read_text())
    assert report["status"] == "passed_with_warnings" and report["failures"] == []
    assert {(t, report["tables"][t]["rows_read"]) for t in empty} == {(t, 0) for t in empty}
    warned = {e["table"] for e in report["expectations"] if e["expectation"] == "expect_table_not_empty"}
    assert warned == set(empty)
    # Great Expectations judged the empty tables too: every expectation on them passed.
    judged = [
        e
        for e in report["expectations"]
        if e["table"] in empty and e["expectation"] != "expect_table_not_empty"
    ]
    assert judged and all(e["success"] for e in judged)
    summary = (report_dir / "summary.md").read_text()
    assert "pos_cash_balance: 0 rows (header only)" in summary

    features = pd.read_parquet(workspace / "data" / "features" / "credit_risk" / "empty" / "features.parquet")
    from_empty = [c for c in features.columns if c.startswith(("POS_", "CC_"))]
    assert from_empty and features[from_empty].isna().all().all()
    assert features["INSTAL_COUNT"].notna().any()  # the other history tables still count


def test_a_table_below_its_min_rows_refuses_naming_table_rows_and_floor(
    home_credit_copy: Path, workspace: Path, tmp_path: Path
) -> None:
    configs = _credit_configs(tmp_path, lambda tables: tables["pos_cash_balance"].update(min_rows=10))
    _keep_rows(home_credit_copy, "POS_CASH_balance.csv", 3)
    result = run_mlops(
        "validate",
        "--model",
        "credit_risk",
        "--data",
        str(home_credit_copy),
        "--run-id",
        "short",
        env={"MLOPS_CONFIG_DIR": str(configs)},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    refusal = (
        "[error] expect_table_row_count_to_be_between on pos_cash_balance: at least 10 rows (min_rows); "
        "observed 3"
    )
    assert refusal in result.stderr
    assert last_json(result)["failures"] == [refusal]
    assert not (workspace / "data" / "interim" / "credit_risk" / "short").exists()


def test_min_share_zero_disables_a_foreign_key_check(
    home_credit_copy: Path, workspace: Path, tmp_path: Path
) -> None:
    """Every bureau_balance month points at an unknown credit; with `min_share: 0` nobody asks."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import ingest_raw_tables

    path = home_credit_copy / "bureau_balance.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["SK_ID_BUREAU"] = [str(990_000_000 + i // 50) for i in range(len(frame))]
    frame.drop_duplicates(["SK_ID_BUREAU", "MONTHS_BALANCE"]).to_csv(path, index=False, lineterminator="\n")

    def disable(tables: dict[str, Any]) -> None:
        tables["bureau_balance"]["foreign_keys"][0]["min_share"] = 0

    config = get_model_config("credit_risk", _credit_configs(tmp_path, disable))
    report = ingest_raw_tables(config, source=str(home_credit_copy), run_id="fk_off")
    assert report.failures == [], [e.describe() for e in report.failures]
    (check,) = [
        e
        for e in report.expectations
        if (e.table, e.column) == ("bureau_balance", "SK_ID_BUREAU")
        and e.expectation == "expect_foreign_key_to_resolve"
    ]
    assert check.disabled and check.success and check.unexpected_count is None
    summary = (Path(str(report.report_dir)) / "summary.md").read_text()
    assert "## Disabled by the config" in summary
    assert "expect_foreign_key_to_resolve on bureau_balance.SK_ID_BUREAU: disabled (min_share: 0)" in summary
    saved = json.loads((Path(str(report.report_dir)) / "validation.json").read_text())
    assert any(e["disabled"] and e["column"] == "SK_ID_BUREAU" for e in saved["expectations"])


def test_unreadable_files_exit_1_with_one_error_line(telco_copy: Path, workspace: Path) -> None:
    """A compressed file under a .csv name, or one with no header: a message naming the file, exit 1."""
    path = telco_copy / TELCO_FILE
    original = path.read_bytes()
    cases = {
        gzip.compress(original): "not readable as CSV: Invalid Input Error",
        b"": "the file has no header line",
        b"\n\n": "the file has no header line",
    }
    for content, reason in cases.items():
        path.write_bytes(content)
        result = run_mlops("validate", "--model", "churn", "--data", str(telco_copy), "--run-id", "odd")
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert f"mlops validate: error: {path}: {reason}" in result.stderr
