"""Test-split evaluation of a binary classifier: a metrics dict, metrics.json and diagnostic plots.

Everything here works on plain arrays (labels in {0, 1}, positive-class probabilities in [0, 1]), so
the training task, the gate and monitoring share one definition of every metric. Plots are drawn on
`matplotlib.figure.Figure` objects, which need no GUI backend and no pyplot state in a worker.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tabular_mlops.explain import Explanation

METRICS_FILE = "metrics.json"
CALIBRATION_BINS = 10
TOP_FEATURES = 30
TOP_SHAP_FIELDS = 20
_DPI = 110


@dataclass
class EvaluationResult:
    """Metrics of one evaluation and where its files were written."""

    metrics: dict[str, float]
    plots: dict[str, Path]
    metrics_path: Path


def _checked(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int and probabilities as float arrays, refusing input no metric is defined on."""
    y = np.asarray(y_true).ravel()
    p = np.asarray(proba, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} rows but proba has {p.size}")
    if y.size == 0:
        raise ValueError("cannot evaluate zero rows")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("proba must be finite and within [0, 1]")
    y = y.astype(int)
    # AUC, average precision and KS are undefined with one class; a silent NaN would reach the gate.
    if y.min() == y.max():
        raise ValueError(f"y_true holds only class {y[0]}; both classes are needed to evaluate")
    return y, p


def ks_statistic(y_true: Any, proba: Any) -> float:
    """Kolmogorov-Smirnov distance between the score distributions of the two classes (max |TPR - FPR|)."""
    from sklearn.metrics import roc_curve

    y, p = _checked(y_true, proba)
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(np.abs(tpr - fpr)))


def compute_metrics(y_true: Any, proba: Any, threshold: float) -> dict[str, float]:
    """Ranking, threshold and calibration metrics of positive-class probabilities, as plain floats."""
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

    y, p = _checked(y_true, proba)
    predicted = (p >= threshold).astype(int)
    metrics = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "accuracy": accuracy_score(y, predicted),
        # A threshold above every score predicts no positives; precision is then 0, not a warning.
        "precision": precision_score(y, predicted, zero_division=0),
        "recall": recall_score(y, predicted, zero_division=0),
        "f1": f1_score(y, predicted, zero_division=0),
        "log_loss": log_loss(y, p, labels=[0, 1]),
        "brier": brier_score_loss(y, p),
        "ks": ks_statistic(y, p),
        "positive_rate": y.mean(),
        "n": y.size,
        "n_positive": y.sum(),
    }
    # numpy scalars are not JSON-serialisable and leak into MLflow params as "np.float64(...)".
    return {name: float(value) for name, value in metrics.items()}


# What a metrics dict says about the rows rather than the model: equal for two models on one set.
ROW_FACTS = ("positive_rate", "n", "n_positive")


def compare_metrics(y_true: Any, proba: Any, baseline: Any, threshold: float) -> dict[str, dict[str, float]]:
    """Metrics of two models' probabilities on the same rows and their difference (proba - baseline)."""
    first = compute_metrics(y_true, proba, threshold)
    second = compute_metrics(y_true, baseline, threshold)
    difference = {name: first[name] - second[name] for name in first if name not in ROW_FACTS}
    return {"version": first, "baseline": second, "difference": difference}


def comparison_table(comparison: dict[str, dict[str, float]], version: str, baseline: str) -> list[str]:
    """`compare_metrics` as aligned text lines: metric, version, baseline, difference."""
    width = max(10, len(version), len(baseline))
    lines = [f"{'metric':<10} {version:>{width}} {baseline:>{width}} {'difference':>11}"]
    for name, value in comparison["version"].items():
        if name in ROW_FACTS:
            continue
        other, change = comparison["baseline"][name], comparison["difference"][name]
        lines.append(f"{name:<10} {value:>{width}.4f} {other:>{width}.4f} {change:>+11.4f}")
    return lines


def _save(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG through a temporary file so a reader never sees half an image."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format="png", dpi=_DPI, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _new_figure(size: tuple[float, float] = (5.5, 5.0)) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def _plot_roc(y: np.ndarray, p: np.ndarray, title: str) -> Figure:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=f"{title}: ROC")
    ax.legend(loc="lower right")
    return figure


def _plot_precision_recall(y: np.ndarray, p: np.ndarray, title: str) -> Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.step(recall, precision, where="post", label=f"AP = {average_precision_score(y, p):.3f}")
    # The precision of a random ranking is the positive rate; the curve is read against that line.
    ax.axhline(y.mean(), linestyle="--", color="grey", label=f"base rate = {y.mean():.3f}")
    ax.set(xlabel="Recall", ylabel="Precision", title=f"{title}: precision-recall", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return figure


def _plot_calibration(y: np.ndarray, p: np.ndarray, title: str) -> Figure:
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="uniform")
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Observed positive rate",
        title=f"{title}: calibration ({CALIBRATION_BINS} bins)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    return figure


def _plot_confusion(y: np.ndarray, p: np.ndarray, threshold: float, title: str) -> Figure:
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    figure = _new_figure((5.0, 4.5))
    ax = figure.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax)
    # Dark cells get white text so every count stays legible.
    cutoff = counts.max() / 2
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if count > cutoff else "black"
        ax.text(col, row, f"{count:,}", ha="center", va="center", color=colour, fontsize=12)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["0", "1"],
        yticklabels=["0", "1"],
        xlabel="Predicted",
        ylabel="Actual",
        title=f"{title}: confusion at threshold {threshold:g}",
    )
    return figure


def _plot_importance(importance: pd.Series, title: str) -> Figure:
    top = importance.dropna().sort_values(ascending=False).head(TOP_FEATURES)
    # barh draws the first bar at the bottom; reversing puts the largest value on top.
    top = top.iloc[::-1]
    figure = _new_figure((7.0, max(3.0, 0.28 * len(top) + 1.2)))
    ax = figure.add_subplot()
    ax.barh([str(name) for name in top.index], top.to_numpy(dtype=float))
    ax.set(xlabel="Importance", title=f"{title}: top {len(top)} features")
    return figure


def _swarm_offsets(values: np.ndarray, half_width: float = 0.4, bins: int = 60) -> np.ndarray:
    """Vertical offsets that stack points of similar value side by side, as a beeswarm does."""
    if values.size == 0 or values.max() == values.min():
        return np.zeros(values.size)
    edges = np.linspace(values.min(), values.max(), bins + 1)
    slot = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    counts = np.bincount(slot, minlength=bins)
    order = np.argsort(slot, kind="stable")
    rank = np.empty(values.size, dtype=int)
    rank[order] = np.arange(values.size) - (np.cumsum(counts) - counts)[slot[order]]
    # 0, +1, -1, +2, -2, ...: a bin's points fan out from the centre line, the fullest bin widest.
    side = np.where(rank % 2 == 0, 1, -1) * ((rank + 1) // 2)
    return side * half_width / max(counts.max() / 2, 1)


def _colour_scale(values: np.ndarray) -> np.ndarray:
    """Feature values mapped to 0..1 between their 5th and 95th percentile (NaN stays NaN)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    low, high = np.percentile(finite, [5, 95])
    if high <= low:
        low, high = finite.min(), finite.max()
    if high <= low:
        return np.where(np.isfinite(values), 0.5, np.nan)
    return np.clip((values - low) / (high - low), 0, 1)


def _plot_shap_summary(explanation: Explanation, title: str) -> Figure:
    """Beeswarm of the top fields by mean |SHAP|: one dot per row, coloured by the row's value."""
    contributions = explanation.contributions
    mean = np.abs(contributions).mean(axis=0)
    top = np.argsort(-mean, kind="stable")[:TOP_SHAP_FIELDS][::-1]  # largest drawn last, at the top
    figure = _new_figure((8.0, max(3.0, 0.38 * len(top) + 1.5)))
    ax = figure.add_subplot()
    image = None
    for position, j in enumerate(top):
        x = contributions[:, j]
        y = position + _swarm_offsets(x)
        colour = _colour_scale(explanation.values[:, j])
        known = np.isfinite(colour)
        ax.scatter(x[~known], y[~known], s=5, color="#9a9a9a", alpha=0.6, linewidths=0, rasterized=True)
        image = ax.scatter(
            x[known],
            y[known],
            s=5,
            c=colour[known],
            cmap="coolwarm",
            vmin=0,
            vmax=1,
            alpha=0.8,
            linewidths=0,
            rasterized=True,
        )
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(top)), [explanation.fields[j] for j in top])
    ax.set(
        xlabel="SHAP value (contribution to the log-odds; > 0 raises the score)",
        title=f"{title}: SHAP summary, {len(contributions):,} rows",
        ylim=(-0.7, len(top) - 0.3),
    )
    if image is not None:
        bar = figure.colorbar(image, ax=ax, ticks=[0, 1], aspect=40)
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("Feature value (grey: missing or a category)")
    return figure


def write_plots(
    y_true: Any,
    proba: Any,
    threshold: float,
    importance: pd.Series | None,
    out_dir: Path,
    title: str,
    explanation: Explanation | None = None,
) -> dict[str, Path]:
    """Write roc, precision_recall, calibration, confusion_matrix, feature_importance and shap_summary
    PNGs to out_dir (the last two when there is an importance, an explanation)."""
    y, p = _checked(y_true, proba)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builders: dict[str, Callable[[], Figure]] = {
        "roc": lambda: _plot_roc(y, p, title),
        "precision_recall": lambda: _plot_precision_recall(y, p, title),
        "calibration": lambda: _plot_calibration(y, p, title),
        "confusion_matrix": lambda: _plot_confusion(y, p, threshold, title),
    }
    if importance is not None and not importance.dropna().empty:
        builders["feature_importance"] = lambda: _plot_importance(importance, title)
    if explanation is not None and explanation.contributions.size:
        builders["shap_summary"] = lambda: _plot_shap_summary(explanation, title)
    return {name: _save(build(), out_dir / f"{name}.png") for name, build in builders.items()}


def _write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write indented, key-sorted JSON atomically (a re-run replaces the file, never half-writes it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def evaluate(
    y_true: Any,
    proba: Any,
    threshold: float,
    importance: pd.Series | None,
    out_dir: Path,
    title: str,
    explanation: Explanation | None = None,
) -> EvaluationResult:
    """Compute the metrics and write metrics.json plus the plots into out_dir (created if missing).

    `explanation` (TreeSHAP values of test rows, explain.explain_rows) adds the SHAP summary plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(y_true, proba, threshold)
    plots = write_plots(y_true, proba, threshold, importance, out_dir, title, explanation)
    metrics_path = _write_json(metrics, out_dir / METRICS_FILE)
    return EvaluationResult(metrics=metrics, plots=plots, metrics_path=metrics_path)
