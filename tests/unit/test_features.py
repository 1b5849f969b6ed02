"""The feature SQL runner and the churn SQL: order, errors that name the file, cleaning rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tabular_mlops.features import FeatureBuildError, features_from_frames, read_sql_folder
from tabular_mlops.generators.telco import build_telco_frame

SQL = Path(__file__).resolve().parents[2] / "include" / "sql"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.sql").write_text(text)
    return folder


def test_files_run_after_the_views_they_mention(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        {
            "features": "select k, total from agg_b",
            "agg_b": "select k, sum(v) as total from stg_b group by k",
            "stg_b": "select k, v * 2 as v from raw",
        },
    )
    sql = read_sql_folder(folder)
    assert list(sql) == ["stg_b", "agg_b", "features"]
    frame = features_from_frames(sql, {"raw": pd.DataFrame({"k": [1, 1, 2], "v": [1.0, 2.0, 5.0]})})
    assert frame.sort_values("k")["total"].tolist() == [6.0, 10.0]


def test_cycles_missing_final_query_and_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatureBuildError, match="cycle"):
        read_sql_folder(
            _write(tmp_path / "a", {"features": "select * from x", "x": "select * from features"})
        )
    with pytest.raises(FeatureBuildError, match="features.sql"):
        read_sql_folder(_write(tmp_path / "b", {"stg": "select 1"}))
    with pytest.raises(FeatureBuildError, match="plain identifier"):
        read_sql_folder(_write(tmp_path / "c", {"features": "select 1", "drop-table": "select 1"}))


def test_a_failing_file_is_named_with_duckdbs_reason(tmp_path: Path) -> None:
    folder = _write(tmp_path, {"features": "select * from stg", "stg": "select no_such_column from raw"})
    with pytest.raises(FeatureBuildError, match=r"stg\.sql: .*no_such_column"):
        features_from_frames(read_sql_folder(folder), {"raw": pd.DataFrame({"k": [1]})})


def _telco_input(rows: int = 300) -> pd.DataFrame:
    frame = build_telco_frame(rows, seed=4).drop(columns=["Churn"])
    frame["TotalCharges"] = pd.to_numeric(frame["TotalCharges"].str.strip().replace("", None))
    return frame


def test_churn_sql_cleans_and_derives() -> None:
    raw = _telco_input()
    raw.loc[0, ["tenure", "TotalCharges"]] = [0, None]  # brand-new customer: nothing billed yet
    out = features_from_frames(read_sql_folder(SQL / "churn"), {"customers": raw}).set_index("customerID")
    first = out.loc[raw.loc[0, "customerID"]]
    assert first["TotalCharges"] == 0.0 and first["tenure_bucket"] == "0-11"
    assert pd.isna(first["avg_monthly_charges"])  # no division by a zero tenure
    services = ["PhoneService", "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport"]
    services += ["StreamingTV", "StreamingMovies", "MultipleLines"]
    expected = (raw[services] == "Yes").sum(axis=1) + (raw["InternetService"] != "No")
    assert (out.loc[raw["customerID"], "services_count"].to_numpy() == expected.to_numpy()).all()
    assert "Churn" not in out.columns and len(out) == len(raw)
