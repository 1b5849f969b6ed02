"""One entry point over the data-set generators, used by the CLI, the demo and the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabular_mlops.generators.dirty import inject_dirty_rows

# Per data set: its labelled file and the key, categorical and numeric columns that dirty rows hit.
DATASETS: dict[str, dict[str, str]] = {
    "home_credit": {
        "file": "application_train.csv",
        "key": "SK_ID_CURR",
        "category": "NAME_CONTRACT_TYPE",
        "number": "AMT_CREDIT",
    },
    "telco": {
        "file": "WA_Fn-UseC_-Telco-Customer-Churn.csv",
        "key": "customerID",
        "category": "InternetService",
        "number": "MonthlyCharges",
    },
}
DEFAULT_ROWS = {"home_credit": 5000, "telco": 7043}


def generate_dataset(
    dataset: str,
    out_dir: Path,
    rows: int | None = None,
    seed: int = 0,
    drift: bool = False,
    dirty_rows: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate a data set into out_dir, optionally corrupt a few rows; return counts and defects."""
    rows = DEFAULT_ROWS[dataset] if rows is None else rows
    if rows < 1:
        raise ValueError(f"--rows must be at least 1, got {rows}")
    if dataset == "home_credit":
        from tabular_mlops.generators.home_credit import generate_home_credit

        counts = generate_home_credit(Path(out_dir), rows=rows, seed=seed, drift=drift, progress=progress)
    elif dataset == "telco":
        from tabular_mlops.generators.telco import generate_telco

        counts = generate_telco(Path(out_dir), rows=rows, seed=seed, drift=drift)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    target = DATASETS[dataset]
    defects = inject_dirty_rows(
        Path(out_dir) / target["file"], dirty_rows, seed, target["key"], target["category"], target["number"]
    )
    return {"rows": counts, "dirty_rows": [d.__dict__ for d in defects]}
