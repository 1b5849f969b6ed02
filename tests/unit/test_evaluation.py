"""Evaluation: metrics agree with sklearn and hand-computed values; plots and metrics.json land on disk."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from tabular_mlops.evaluation import (
    METRICS_FILE,
    _plot_importance,
    compute_metrics,
    evaluate,
    ks_statistic,
    write_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CORE_PLOTS = {"roc", "precision_recall", "calibration", "confusion_matrix"}


def _labels_and_scores(n: int = 3000, noise: float = 0.8, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a logistic model and a model's probabilities from a noisy copy of the true logit."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, size=n) - 0.7
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    proba = 1 / (1 + np.exp(-(logit + rng.normal(0, noise, size=n))))
    return y, proba


def _importance(count: int, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.random(count), index=[f"feature_{i:02d}" for i in range(count)])


def test_metrics_match_sklearn() -> None:
    y, proba = _labels_and_scores()
    threshold = 0.4
    predicted = (proba >= threshold).astype(int)
    metrics = compute_metrics(y, proba, threshold)
    expected = {
        "roc_auc": roc_auc_score(y, proba),
        "pr_auc": average_precision_score(y, proba),
        "accuracy": accuracy_score(y, predicted),
        "precision": precision_score(y, predicted),
        "recall": recall_score(y, predicted),
        "f1": f1_score(y, predicted),
        "log_loss": log_loss(y, proba),
        "brier": brier_score_loss(y, proba),
        "ks": ks_2samp(proba[y == 1], proba[y == 0]).statistic,
        "positive_rate": y.mean(),
        "n": len(y),
        "n_positive": y.sum(),
    }
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name
    # Plain floats: they go to json.dumps and to MLflow without numpy reprs.
    assert all(type(value) is float for value in metrics.values())
    json.dumps(metrics)


def test_metrics_on_a_tiny_hand_computed_example() -> None:
    y = np.array([0, 0, 0, 1, 1])
    proba = np.array([0.1, 0.2, 0.6, 0.3, 0.9])
    metrics = compute_metrics(y, proba, threshold=0.5)
    # Negatives {0.1, 0.2, 0.6}, positives {0.3, 0.9}. Empirical CDFs just after 0.2: F0 = 2/3, F1 = 0,
    # the widest gap (after 0.3 it is 2/3 - 1/2, after 0.6 it is 1 - 1/2).
    assert metrics["ks"] == pytest.approx(2 / 3)
    assert ks_statistic(y, proba) == pytest.approx(2 / 3)
    # Positive-negative pairs ranked right: 0.3 beats 0.1 and 0.2; 0.9 beats all three -> 5 of 6.
    assert metrics["roc_auc"] == pytest.approx(5 / 6)
    # Predictions at 0.5: [0, 0, 1, 0, 1] -> TP 1, FP 1, FN 1, TN 2.
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision"] == pytest.approx(1 / 2)
    assert metrics["recall"] == pytest.approx(1 / 2)
    assert metrics["f1"] == pytest.approx(1 / 2)
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.49 + 0.01) / 5)
    assert metrics["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.3) + math.log(0.9)) / 5
    )
    assert metrics["positive_rate"] == pytest.approx(0.4)
    assert (metrics["n"], metrics["n_positive"]) == (5.0, 2.0)


def test_threshold_with_no_positive_predictions_gives_zeros_not_warnings() -> None:
    y, proba = _labels_and_scores(n=500)
    assert proba.max() < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics(y, proba, threshold=1.0)
    assert metrics["precision"] == 0.0 and metrics["recall"] == 0.0 and metrics["f1"] == 0.0
    assert metrics["accuracy"] == pytest.approx(1 - y.mean())


@pytest.mark.parametrize(
    ("y", "proba", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "both classes"),
        ([0, 1], [0.2, 0.5, 0.9], "rows"),
        ([0, 2], [0.2, 0.5], "only 0 and 1"),
        ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
        ([0, 1], [0.2, float("nan")], "finite"),
    ],
)
def test_metrics_refuse_input_they_are_undefined_on(y: list[int], proba: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(np.array(y), np.array(proba), 0.5)


def test_write_plots_writes_every_png(tmp_path: Path) -> None:
    y, proba = _labels_and_scores(n=800)
    plots = write_plots(y, proba, 0.5, _importance(12), tmp_path / "plots", "churn")
    assert set(plots) == CORE_PLOTS | {"feature_importance"}
    for name, path in plots.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"{n}.png" for n in plots)


@pytest.mark.parametrize("importance", [None, pd.Series(dtype=float)])
def test_feature_importance_plot_skipped_without_importance(
    tmp_path: Path, importance: pd.Series | None
) -> None:
    y, proba = _labels_and_scores(n=300)
    plots = write_plots(y, proba, 0.5, importance, tmp_path, "credit")
    assert set(plots) == CORE_PLOTS
    assert not (tmp_path / "feature_importance.png").exists()


def test_importance_plot_shows_top_30_largest_on_top() -> None:
    importance = _importance(45, seed=4)
    figure = _plot_importance(importance, "churn")
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    top = importance.sort_values(ascending=False)
    assert len(labels) == 30
    # barh draws from the bottom up, so the last label is the one at the top of the chart.
    assert labels[::-1] == list(top.index[:30])


def test_evaluate_writes_metrics_json_and_plots(tmp_path: Path) -> None:
    y, proba = _labels_and_scores(n=1000)
    out_dir = tmp_path / "reports" / "run-1" / "evaluation"
    result = evaluate(y, proba, 0.5, _importance(5), out_dir, "churn test split")
    assert result.metrics_path == out_dir / METRICS_FILE
    text = result.metrics_path.read_text()
    assert json.loads(text) == result.metrics
    keys = list(json.loads(text))
    assert keys == sorted(keys) and text.startswith('{\n  "')
    assert set(result.plots) == CORE_PLOTS | {"feature_importance"}
    assert all(path.parent == out_dir and path.exists() for path in result.plots.values())
    # A re-run of the task replaces the files instead of failing or appending.
    again = evaluate(y, proba, 0.3, None, out_dir, "churn test split")
    assert json.loads(again.metrics_path.read_text())["recall"] == again.metrics["recall"]
    assert again.metrics["recall"] > result.metrics["recall"]
