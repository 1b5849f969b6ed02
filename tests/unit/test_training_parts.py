"""Training parts on tiny generated data: split by entity hash, gain importances, the registry
name, and the docs' account of early stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _keys(n: int, start: int = 0) -> pd.Series:
    return pd.Series([f"{i:04d}-ABCDE" for i in range(start, start + n)])


def test_an_entity_keeps_its_side_whatever_else_is_in_the_frame() -> None:
    from tabular_mlops.config import SplitSpec
    from tabular_mlops.training import split_positions

    split = SplitSpec()
    alone = split_positions(_keys(1000), split)
    grown = split_positions(pd.concat([_keys(3000, 1000), _keys(1000)]).iloc[::-1], split)
    # The first 1,000 keys sit at the end of the reversed, grown frame: same sides, reversed.
    assert (grown[:1000][::-1] == alone).all()
    shares = np.bincount(split_positions(_keys(20000), split), minlength=3) / 20000
    np.testing.assert_allclose(shares, [0.7, 0.1, 0.2], atol=0.01)
    other_seed = split_positions(_keys(1000), SplitSpec(seed=7))
    assert (other_seed != alone).mean() > 0.3


def test_a_split_that_leaves_no_training_rows_is_a_config_error() -> None:
    from pydantic import ValidationError
    from tabular_mlops.config import SplitSpec

    with pytest.raises(ValidationError, match="at least 10% of the rows to train on"):
        SplitSpec(test_size=0.5, validation_size=0.45)


def _tiny_data(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(600, 5)), columns=[f"f_{i}" for i in range(5)])
    y = (x["f_0"] + 0.5 * x["f_1"] + rng.normal(scale=0.8, size=600) > 0).astype(int).to_numpy()
    return x, y


def test_xgboost_importance_is_the_share_of_total_gain_up_to_the_best_iteration() -> None:
    from tabular_mlops.config import ModelSpec
    from tabular_mlops.modeling import build_estimator, feature_importance, fit_estimator

    x, y = _tiny_data()
    spec = ModelSpec(
        type="xgboost",
        registered_name="t",
        early_stopping_rounds=10,
        params={"n_estimators": 200, "learning_rate": 0.3, "max_depth": 3},
    )
    estimator = build_estimator(spec, 1.0, 0)
    fit_estimator(spec, estimator, x[:400], y[:400], x[400:], y[400:])
    assert estimator.best_iteration + 1 < 200  # early stopping cut trees the importance must not count
    booster = estimator.get_booster()[: estimator.best_iteration + 1]
    gain = pd.Series(booster.get_score(importance_type="total_gain")).reindex(x.columns, fill_value=0.0)
    got = feature_importance(estimator, list(x.columns))
    np.testing.assert_allclose(got.loc[x.columns].to_numpy(), (gain / gain.sum()).to_numpy(), rtol=1e-6)


def test_mlflow_model_name_is_refused_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from tabular_mlops import tracking
    from tabular_mlops.config import ConfigError

    monkeypatch.delenv("MLFLOW_MODEL_NAME", raising=False)
    assert tracking.registered_name("churn-classifier") == "churn-classifier"
    monkeypatch.setenv("MLFLOW_MODEL_NAME", "scratch")
    with pytest.raises(ConfigError, match=r"MLFLOW_MODEL_NAME .*model\.registered_name"):
        tracking.registered_name("churn-classifier")


def test_mlflow_model_name_at_the_cli_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    from tests.helpers import run_mlops

    env = {
        "MLFLOW_MODEL_NAME": "scratch",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLOPS_MLFLOW_DIR": str(tmp_path),
    }
    result = run_mlops("history", "--model", "churn", env=env)
    assert result.returncode == 2
    assert "MLFLOW_MODEL_NAME" in result.stderr and "Traceback" not in result.stderr


def test_the_docs_name_the_metric_early_stopping_watches() -> None:
    from tabular_mlops.config import ModelSpec
    from tabular_mlops.modeling import build_estimator

    spec = ModelSpec(type="xgboost", registered_name="t", early_stopping_rounds=10, params={})
    # XGBoost stops on the last metric of eval_metric; LightGBM on the first (first_metric_only).
    assert build_estimator(spec, 1.0, 0).get_params()["eval_metric"][-1] == "logloss"
    # The account lives on the docs site's training page now (docs/training.md).
    page = (PROJECT_DIR / "docs" / "training.md").read_text()
    assert "early stopping on validation log loss" in page
    assert "validation AUC" not in page


def test_feature_rows_follow_the_entities_as_a_left_join_does(tmp_path: Path) -> None:
    """Rows in the entity table's order, an entity without features all null but keyed, and a
    feature table that repeats a key refused; the same frame pandas' one_to_one merge gives."""
    from tabular_mlops.training import _feature_rows_of

    features = pd.DataFrame({"id": [3, 1, 2], "kind": ["c", "a", None], "x": [0.3, 0.1, 0.2]})
    features.to_parquet(tmp_path / "f.parquet", index=False)
    entities = pd.Series([1, 2, 3, 4], name="id")
    rows = _feature_rows_of(tmp_path / "f.parquet", "id", entities)
    merged = entities.to_frame().merge(features, on="id", how="left", validate="one_to_one")
    assert list(rows.columns) == list(merged.columns)
    assert rows["id"].tolist() == [1, 2, 3, 4]
    assert rows["kind"].iloc[:3].tolist() == ["a", None, "c"] and pd.isna(rows["kind"].iloc[3])
    np.testing.assert_array_equal(rows["x"].to_numpy(), merged["x"].to_numpy())
    pd.concat([features, features.head(1)]).to_parquet(tmp_path / "dup.parquet", index=False)
    with pytest.raises(ValueError, match="repeats id values"):
        _feature_rows_of(tmp_path / "dup.parquet", "id", entities)
