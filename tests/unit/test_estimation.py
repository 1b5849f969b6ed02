"""CBPE on data of known shift: right under covariate drift, blind to concept drift by design."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from tabular_mlops import estimation
from tabular_mlops.estimation import Calibrator, estimate, expected_roc_auc, fit_calibrator

# The label relation y ~ Bernoulli(sigmoid(W.x + B)); x0 carries the most signal.
W = np.array([1.5, -1.0, 0.5, 0.0, 0.0])
B = -1.0
THRESHOLD = 0.5


def _draw(rng: np.random.Generator, rows: int, x0_mean: float = 0.0, x0_scale: float = 1.0) -> tuple:
    """Features with x0 ~ N(x0_mean, x0_scale), the rest N(0, 1), and labels by the one relation."""
    x = rng.normal(size=(rows, W.size))
    x[:, 0] = x0_mean + x0_scale * x[:, 0]
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(x @ W + B)))).astype(int)
    return x, y


@pytest.fixture(scope="module")
def trained() -> dict:
    """A class-weighted logistic model (miscalibrated on purpose, as `imbalance: balanced` leaves a
    booster) and its calibrator fitted on held-out rows of the training distribution."""
    rng = np.random.default_rng(7)
    x_train, y_train = _draw(rng, 20_000)
    x_held, y_held = _draw(rng, 10_000)
    model = LogisticRegression(class_weight="balanced").fit(x_train, y_train)
    p_held = model.predict_proba(x_held)[:, 1]
    return {
        "model": model,
        "calibrator": fit_calibrator(y_held, p_held),
        "reference_auc": roc_auc_score(y_held, p_held),
        "reference_accuracy": accuracy_score(y_held, p_held >= THRESHOLD),
    }


def test_with_known_labels_as_chances_the_expected_auc_is_sklearns_auc() -> None:
    rng = np.random.default_rng(0)
    # Rounded scores: many ties, which the expected curve must count as half wins, as sklearn does.
    p = np.round(rng.random(5_000), 2)
    y = (rng.random(5_000) < p).astype(int)
    assert expected_roc_auc(p, y.astype(float)) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    first = estimate(p, None, THRESHOLD)
    assert estimate(p, None, THRESHOLD) == first


def test_the_expected_auc_is_the_weighted_auc_of_each_row_as_half_positive_half_negative() -> None:
    rng = np.random.default_rng(1)
    p = np.round(rng.random(3_000), 1)
    c = rng.random(3_000)
    weighted = roc_auc_score(
        np.r_[np.ones(p.size), np.zeros(p.size)], np.r_[p, p], sample_weight=np.r_[c, 1.0 - c]
    )
    assert expected_roc_auc(p, c) == pytest.approx(weighted, abs=1e-12)


def test_the_expected_accuracy_counts_each_row_by_its_chance_of_being_right() -> None:
    p = np.array([0.9, 0.6, 0.5, 0.2, 0.1])
    calibrator = Calibrator(x=(0.0, 1.0), y=(0.0, 1.0), rows=2, positives=1)
    # Predicted positive at p >= 0.5 (the scoring rule): right with chance c; else with 1 - c.
    expected = (0.9 + 0.6 + 0.5 + 0.8 + 0.9) / 5
    assert estimate(p, calibrator, 0.5).accuracy == pytest.approx(expected)
    y = np.array([1, 1, 0, 0, 0])
    assert estimate(p, None, 0.5).rows == 5
    assert expected_roc_auc(p, y.astype(float)) == pytest.approx(roc_auc_score(y, p))


def test_the_calibrator_round_trips_through_json_and_maps_monotonically_into_0_1() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(4_000)
    y = (rng.random(4_000) < p**2).astype(int)
    calibrator = fit_calibrator(y, p, fitted_on="validation rows")
    again = Calibrator.from_json(calibrator.to_json())
    assert again == calibrator and (again.rows, again.positives) == (4_000, int(y.sum()))
    assert again.method == "isotonic" and again.fitted_on == "validation rows"
    grid = np.linspace(-0.5, 1.5, 2_001)  # beyond [0, 1] too: the end values hold
    mapped = again.apply(grid)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    # The same map scikit-learn would apply, without pickling scikit-learn.
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    np.testing.assert_allclose(again.apply(p), iso.predict(p), atol=1e-12)


def test_covariate_drift_with_the_label_relation_kept_is_estimated_within_three_points(
    trained: dict,
) -> None:
    model, calibrator = trained["model"], trained["calibrator"]
    for seed in (100, 101, 102):
        # x0 moves and narrows: more positives, and less spread along the strongest feature.
        x, y = _draw(np.random.default_rng(seed), 5_000, x0_mean=1.0, x0_scale=0.5)
        p = model.predict_proba(x)[:, 1]
        realised_auc, realised_accuracy = roc_auc_score(y, p), accuracy_score(y, p >= THRESHOLD)
        # The drift matters: an estimator that echoed the reference would miss by more than 0.03.
        assert trained["reference_auc"] - realised_auc > 0.04
        assert trained["reference_accuracy"] - realised_accuracy > 0.04
        estimated = estimate(p, calibrator, THRESHOLD)
        assert abs(estimated.roc_auc - realised_auc) <= 0.03
        assert abs(estimated.accuracy - realised_accuracy) <= 0.03
        # The calibrator is what makes accuracy right: the class-weighted model's own probabilities
        # overstate the positives.
        assert abs(estimate(p, None, THRESHOLD).accuracy - realised_accuracy) > 0.04


def test_concept_drift_is_invisible_to_the_estimate(trained: dict) -> None:
    model, calibrator = trained["model"], trained["calibrator"]
    rng = np.random.default_rng(200)
    x, y = _draw(rng, 5_000, x0_mean=1.0, x0_scale=0.5)
    p = model.predict_proba(x)[:, 1]
    before = estimate(p, calibrator, THRESHOLD)
    # Same inputs, labels no longer related to them: the model is now useless.
    y_broken = rng.permutation(y)
    realised = roc_auc_score(y_broken, p)
    assert abs(realised - 0.5) < 0.03
    # The estimate sees only the scores, so it does not move and misses by a lot. Labels, when
    # they arrive, are what catch this.
    assert estimate(p, calibrator, THRESHOLD) == before
    assert before.roc_auc - realised > 0.25


def test_bad_input_is_refused_with_the_reason() -> None:
    calibrator = Calibrator(x=(0.0, 1.0), y=(0.0, 1.0), rows=2, positives=1)
    with pytest.raises(ValueError, match="no rows"):
        estimate(np.array([]), calibrator, THRESHOLD)
    with pytest.raises(ValueError, match="NaN"):
        estimate(np.array([0.2, np.nan]), calibrator, THRESHOLD)
    with pytest.raises(ValueError, match="within"):
        estimate(np.array([0.2, 1.5]), calibrator, THRESHOLD)
    always_negative = Calibrator(x=(0.0, 1.0), y=(0.0, 0.0), rows=2, positives=0)
    with pytest.raises(ValueError, match="expected negative; ROC AUC is undefined"):
        estimate(np.array([0.2, 0.7]), always_negative, THRESHOLD)
    with pytest.raises(ValueError, match="one class"):
        fit_calibrator(np.zeros(10), np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator(x=(0.0, 1.0), y=(0.9, 0.1), rows=2, positives=1)
    with pytest.raises(ValueError, match="not a calibrator"):
        Calibrator.from_json('{"x": [0, 1]}')


def test_a_full_credit_window_is_estimated_well_under_a_second() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(307_511)
    calibrator = fit_calibrator((rng.random(30_000) < 0.08).astype(int), rng.random(30_000))
    started = time.perf_counter()
    estimate(p, calibrator, THRESHOLD)
    assert time.perf_counter() - started < 1.0


def test_a_run_without_a_calibrator_gives_none_and_why_and_a_transient_fault_raises(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import requests

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLOPS_MLFLOW_DIR", str(tmp_path / "mlflow"))
    from tabular_mlops import tracking

    tracking.configure()
    experiment = mlflow.create_experiment("cbpe", artifact_location=(tmp_path / "artifacts").as_uri())
    calibrator = Calibrator(x=(0.1, 0.9), y=(0.05, 0.8), rows=200, positives=40, fitted_on="validation")
    with mlflow.start_run(experiment_id=experiment) as with_one:
        mlflow.log_text(calibrator.to_json(), estimation.CALIBRATOR_FILE)
    with mlflow.start_run(experiment_id=experiment) as without:
        pass
    loaded, source = estimation.load_calibrator(with_one.info.run_id)
    assert loaded == calibrator and estimation.CALIBRATOR_FILE in source
    missing, why = estimation.load_calibrator(without.info.run_id)
    assert missing is None and why.startswith("no calibrator") and without.info.run_id in why

    def down(uri: str) -> str:
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(mlflow.artifacts, "load_text", down)
    with pytest.raises(requests.ConnectionError):
        estimation.load_calibrator(with_one.info.run_id)
