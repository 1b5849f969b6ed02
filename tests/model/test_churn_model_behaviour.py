"""Behaviour of a logged churn model, loaded back from a real MLflow registry as serving loads it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A churn version trained on 3,000 generated customers; yields (pyfunc, test rows, labels)."""
    import mlflow
    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.telco import generate_telco
    from tabular_mlops.ingest import ingest_raw_tables
    from tabular_mlops.training import LABEL, TEST_ROWS, train_candidate

    root = tmp_path_factory.mktemp("churn_model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLOPS_MLFLOW_DIR", str(root))
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        config = get_model_config("churn")
        generate_telco(root / "raw", rows=3000, seed=9)
        report = ingest_raw_tables(config, source=str(root / "raw"), run_id="behaviour")
        result = train_candidate(config, Path(str(report.interim_dir)), None)
        model = mlflow.pyfunc.load_model(result.model_uri)
        rows = pd.read_parquet(Path(result.work_dir) / TEST_ROWS)
        labels = rows.pop(LABEL).to_numpy()
        yield model, rows, labels


def _predict(model, rows: pd.DataFrame) -> np.ndarray:
    from tabular_mlops.training import signature_frame

    return model.predict(signature_frame(rows))["probability"].to_numpy()


def test_signature_declares_every_raw_column_and_accepts_missing_numbers(churn_model) -> None:
    model, rows, _ = churn_model
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == list(rows.columns)
    types = {
        name: getattr(t, "name", str(t))
        for name, t in zip(schema.input_names(), schema.input_types(), strict=True)
    }
    assert types["tenure"] == "double" and types["SeniorCitizen"] == "double"  # integers that may be missing
    blank = rows.head(3).copy()
    blank["tenure"] = [np.nan, 5.0, np.nan]
    assert np.isfinite(_predict(model, blank)).all()


def test_unseen_or_missing_categories_do_not_shift_columns(churn_model) -> None:
    model, rows, _ = churn_model
    base = rows.head(50).copy()
    odd = base.copy()
    odd["InternetService"] = "Satellite"  # never seen in training
    odd["PaymentMethod"] = None
    a, b = _predict(model, base), _predict(model, odd)
    assert np.isfinite(b).all() and a.shape == b.shape
    # Only the two changed fields move the scores; all other columns keep their meaning.
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_row_order_and_batch_size_do_not_change_a_customers_score(churn_model) -> None:
    model, rows, _ = churn_model
    batch = rows.head(200)
    scores = _predict(model, batch)
    reversed_scores = _predict(model, batch.iloc[::-1])[::-1]
    single = _predict(model, batch.iloc[[17]])
    assert np.allclose(scores, reversed_scores) and np.isclose(single[0], scores[17])


def test_known_effects_point_the_right_way(churn_model) -> None:
    """Month-to-month contracts churn more than two-year ones, all else equal (the playbook's top driver)."""
    model, rows, _ = churn_model
    monthly = rows.head(300).assign(Contract="Month-to-month")
    two_year = rows.head(300).assign(Contract="Two year")
    assert _predict(model, monthly).mean() > _predict(model, two_year).mean() + 0.05


def test_the_model_separates_churners_on_held_out_rows(churn_model) -> None:
    from sklearn.metrics import roc_auc_score

    model, rows, labels = churn_model
    assert roc_auc_score(labels, _predict(model, rows)) > 0.8
