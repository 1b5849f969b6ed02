"""Predictions partitions for the monitoring tests, scored for real by the production churn version."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


def score_churn(day: str, frame: pd.DataFrame, output: str | None = None) -> str:
    """Publish a churn predictions partition of `day` from raw customer rows; return its location.

    `output` puts it somewhere else than `<lake>/predictions/churn/dt=<day>` (its manifest still
    names the day).
    """
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("churn")
    incoming = Path(partition(config, "incoming", day))
    incoming.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["Churn"], errors="ignore").to_csv(incoming / TELCO_FILE, index=False)
    target = output or partition(config, "predictions", day)
    score_partition(config, str(incoming), target, run_id=f"score_{day}", day=day)
    return target


def customers(telco_raw: Path) -> pd.DataFrame:
    """The generated Telco customers as the raw strings a producer delivers."""
    return pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False)


def drifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Pricier, month-to-month, fibre customers: a shift every monitor should see."""
    out = frame.copy()
    charges = pd.to_numeric(out["MonthlyCharges"]) * 1.6 + 20
    out["MonthlyCharges"] = charges.round(2).astype(str)
    out["Contract"] = "Month-to-month"
    out["InternetService"] = "Fiber optic"
    return out
