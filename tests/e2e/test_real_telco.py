"""The public IBM Telco file against the playbook gate, when the file is on this machine.

The file cannot be downloaded here (no network), so the test runs only when MLOPS_TELCO_CSV names
a local copy of WA_Fn-UseC_-Telco-Customer-Churn.csv (7,043 rows, 11 blank TotalCharges).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import last_json, run_mlops

TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
REAL_TELCO = os.environ.get("MLOPS_TELCO_CSV")


@pytest.mark.skipif(
    not REAL_TELCO or not Path(REAL_TELCO).is_file(),
    reason="the real IBM Telco CSV is not on this machine (set MLOPS_TELCO_CSV to its path)",
)
def test_real_telco_passes_the_playbook_gate(workspace: Path, tmp_path: Path) -> None:
    folder = tmp_path / "telco"
    folder.mkdir()
    shutil.copy(str(REAL_TELCO), folder / TELCO_FILE)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLOPS_MLFLOW_DIR": str(tmp_path)}
    validated = last_json(run_mlops("validate", "--model", "churn", "--data", str(folder)))
    customers = validated["tables"]["customers"]
    assert (customers["read"], customers["quarantined"]) == (7043, 0)
    assert customers["blank_to_null"] == {"TotalCharges": 11}
    # The default config: LightGBM, 20 % test split by entity hash, floors AUC 0.82 and accuracy 0.78.
    result = run_mlops("train", "--model", "churn", "--data", str(folder), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = last_json(result)
    candidate = summary["metrics"]["candidate"]
    assert candidate["roc_auc"] >= 0.82 and candidate["accuracy"] >= 0.78, candidate
    assert summary["gate"]["passed"] is True
