"""The credit_risk feature SQL over generated interim tables: shape, sentinels, missing history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tabular_mlops.config import get_model_config
from tabular_mlops.features import build_feature_table, features_from_frames, read_sql_folder
from tabular_mlops.ingest import ingest_raw_tables

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"


@pytest.fixture(scope="module")
def built(home_credit_raw: Path, tmp_path_factory: pytest.TempPathFactory):
    """Interim tables of the shared 1,500-applicant data set and the feature table built from them."""
    root = tmp_path_factory.mktemp("credit_features")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        config = get_model_config("credit_risk", CONFIGS)
        report = ingest_raw_tables(config, source=str(home_credit_raw), run_id="features")
        interim = Path(str(report.interim_dir))
        result = build_feature_table(config, interim, root / "features")
    return config, interim, result, pd.read_parquet(result.path)


def test_one_row_per_applicant_without_the_label(built) -> None:
    _, interim, result, frame = built
    applicants = pd.read_parquet(interim / "application_train.parquet")
    assert len(frame) == len(applicants) == result.rows
    assert frame["SK_ID_CURR"].is_unique and set(frame["SK_ID_CURR"]) == set(applicants["SK_ID_CURR"])
    assert "TARGET" not in frame.columns and frame.columns.is_unique
    assert 300 < len(result.columns) < 800
    for prefix in ("BUREAU_", "PREV_", "POS_", "INSTAL_", "CC_"):
        assert any(c.startswith(prefix) for c in frame.columns), prefix


def test_sentinels_become_nulls_and_ratios_never_divide_by_zero(built) -> None:
    _, interim, _, frame = built
    numbers = frame.select_dtypes("number")
    assert np.isfinite(numbers.to_numpy(dtype=float)[~numbers.isna().to_numpy()]).all()
    raw = pd.read_parquet(interim / "application_train.parquet").set_index("SK_ID_CURR")
    pensioners = raw.index[raw["DAYS_EMPLOYED"] == 365243]
    assert len(pensioners) > 0
    assert frame.set_index("SK_ID_CURR").loc[pensioners, "DAYS_EMPLOYED"].isna().all()
    assert (frame["DAYS_EMPLOYED"].dropna() < 0).all()


def test_applicants_without_history_get_nulls_not_zeros(built) -> None:
    _, interim, _, frame = built
    bureau = pd.read_parquet(interim / "bureau.parquet")
    no_bureau = ~frame["SK_ID_CURR"].isin(bureau["SK_ID_CURR"])
    assert no_bureau.sum() > 0
    bureau_columns = [c for c in frame.columns if c.startswith("BUREAU_")]
    assert frame.loc[no_bureau, bureau_columns].isna().all().all()
    assert frame.loc[~no_bureau, bureau_columns].notna().any(axis=1).all()


def test_scoring_input_without_target_gives_the_same_features(built) -> None:
    """At scoring time the application view has no TARGET; the SQL must not need it."""
    config, interim, _, frame = built
    frames = {name: pd.read_parquet(interim / f"{name}.parquet") for name in config.data.tables}
    frames["application_train"] = frames["application_train"].drop(columns=["TARGET"]).head(200)
    scored = features_from_frames(read_sql_folder(config.sql_path), frames)
    expected = frame.set_index("SK_ID_CURR").loc[scored["SK_ID_CURR"]].reset_index()
    assert list(scored.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(scored, expected, check_dtype=False, atol=1e-9)
