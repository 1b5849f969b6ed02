"""Confidence-based performance estimation (CBPE): ROC AUC and accuracy of a window without labels.

Labels arrive weeks after the scores. Until then a version's calibrated probability c_i is read as
the chance that row i is positive, and the metrics are taken in expectation over those chances: the
expected confusion matrix at the decision threshold gives accuracy, the expected ROC curve gives
ROC AUC. This follows under covariate shift (the inputs move, P(y | x) stays) as long as the
calibration holds; it cannot see concept drift, where P(y | x) itself changes.

The calibration map is an isotonic regression fitted on held-out rows at training time and logged
with the version as plain JSON (`CALIBRATOR_FILE`): its breakpoints are applied with `np.interp`,
so monitoring never unpickles anything to use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tabular_mlops import faults

CALIBRATOR_FILE = "monitoring/calibrator.json"
_METHOD = "isotonic"


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from the model's probability to a calibrated one, with where it came from."""

    # Breakpoints of the piecewise-linear map: x non-decreasing, y non-decreasing within [0, 1].
    x: tuple[float, ...]
    y: tuple[float, ...]
    rows: int
    positives: int
    method: str = _METHOD
    fitted_on: str = "held-out rows"

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        if x.ndim != 1 or x.size == 0 or x.shape != y.shape:
            raise ValueError(f"calibrator needs matching, non-empty breakpoints (x {x.shape}, y {y.shape})")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("calibrator breakpoints must be finite numbers")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("calibrator breakpoints must be non-decreasing (the map is monotone)")
        if y[0] < 0 or y[-1] > 1:
            raise ValueError("calibrated probabilities must lie within [0, 1]")

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of `p`; beyond the fitted range the end values hold."""
        # np.interp holds the end values outside the breakpoints, as IsotonicRegression's
        # out_of_bounds="clip" does, and interpolates linearly between them as its predict does.
        mapped = np.interp(np.asarray(p, dtype=float), np.asarray(self.x), np.asarray(self.y))
        return np.clip(mapped, 0.0, 1.0)

    def to_json(self) -> str:
        """Plain-JSON form: breakpoints and provenance."""
        return json.dumps({**asdict(self), "x": list(self.x), "y": list(self.y)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        """The calibrator `to_json` wrote; ValueError naming what is missing or malformed."""
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                x=tuple(float(v) for v in data["x"]),
                y=tuple(float(v) for v in data["y"]),
                rows=int(data["rows"]),
                positives=int(data["positives"]),
                method=str(data.get("method", _METHOD)),
                fitted_on=str(data.get("fitted_on", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a calibrator: {faults.describe(exc)}") from None


def _checked_probabilities(p: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(p, dtype=float).ravel()
    if values.size == 0:
        raise ValueError(f"{what}: no rows")
    if not np.isfinite(values).all():
        raise ValueError(f"{what}: {int((~np.isfinite(values)).sum())} probabilities are NaN or infinite")
    if values.min() < 0 or values.max() > 1:
        raise ValueError(f"{what}: probabilities must lie within [0, 1]")
    return values


def fit_calibrator(y: np.ndarray, p: np.ndarray, fitted_on: str = "held-out rows") -> Calibrator:
    """Isotonic calibration of probabilities `p` against 0/1 labels `y` of rows the model did not fit."""
    from sklearn.isotonic import IsotonicRegression

    probabilities = _checked_probabilities(p, "calibration")
    labels = np.asarray(y).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(f"calibration: {labels.size} labels for {probabilities.size} probabilities")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("calibration: labels must be 0 or 1")
    positives = int(labels.sum())
    if positives in (0, labels.size):
        raise ValueError(f"calibration: the {labels.size} rows hold one class only")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probabilities, labels)
    return Calibrator(
        x=tuple(float(v) for v in iso.X_thresholds_),
        y=tuple(float(v) for v in iso.y_thresholds_),
        rows=int(labels.size),
        positives=positives,
        method=_METHOD,
        fitted_on=fitted_on,
    )


@dataclass(frozen=True)
class Estimate:
    """Expected ROC AUC and accuracy of a window of scores."""

    roc_auc: float
    accuracy: float
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def expected_roc_auc(p: np.ndarray, c: np.ndarray) -> float:
    """Area under the expected ROC curve of scores `p` when row i is positive with chance `c[i]`."""
    scores, chance = _checked_probabilities(p, "estimate"), _checked_probabilities(c, "estimate")
    if chance.shape != scores.shape:
        raise ValueError(f"estimate: {chance.size} chances for {scores.size} scores")
    expected_positives = float(chance.sum())
    if expected_positives <= 0 or expected_positives >= chance.size:
        side = "negative" if expected_positives <= 0 else "positive"
        raise ValueError(
            f"estimate: every one of the {chance.size} rows is expected {side}; ROC AUC is undefined"
        )
    order = np.argsort(-scores, kind="stable")
    scores, chance = scores[order], chance[order]
    positives, negatives = np.cumsum(chance), np.cumsum(1.0 - chance)
    # One ROC point per distinct score: rows that tie move TPR and FPR together (a diagonal
    # segment), as roc_auc_score counts a tied positive-negative pair as half a win.
    last_of_group = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tpr = np.concatenate(([0.0], positives[last_of_group] / positives[-1]))
    fpr = np.concatenate(([0.0], negatives[last_of_group] / negatives[-1]))
    return float(np.clip(np.trapezoid(tpr, fpr), 0.0, 1.0))


def estimate(p: np.ndarray, calibrator: Calibrator | None, threshold: float) -> Estimate:
    """CBPE of a window: expected ROC AUC and accuracy at `threshold` from the model's probabilities `p`.

    Without a calibrator the model's own probabilities are taken as the chances, which only holds
    for a calibrated model (not for one trained with class weights). ValueError for an empty window,
    NaN scores, or chances that expect one class only (ROC AUC is then undefined).
    """
    probabilities = _checked_probabilities(p, "estimate")
    if not 0 <= threshold <= 1:
        raise ValueError(f"estimate: threshold must be between 0 and 1, got {threshold}")
    chance = calibrator.apply(probabilities) if calibrator is not None else probabilities
    roc_auc = expected_roc_auc(probabilities, chance)
    # The scoring rule (scoring.py): positive when the raw probability reaches the threshold.
    predicted = probabilities >= threshold
    correct = chance[predicted].sum() + (1.0 - chance[~predicted]).sum()
    return Estimate(
        roc_auc=roc_auc,
        accuracy=float(correct / chance.size),
        rows=int(chance.size),
    )


def load_calibrator(run_id: str) -> tuple[Calibrator | None, str]:
    """(calibrator, where it came from) of a training run; (None, why) when the run has none.

    A registry that is down raises (a retry reads it); a run trained before calibrators were
    logged, or whose artifact is gone or unreadable, gives None and says why, so the caller can
    fall back to the raw probabilities or skip the estimate and report the reason.
    """
    import mlflow

    from tabular_mlops import tracking

    tracking.configure()
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{CALIBRATOR_FILE}")
    except Exception as exc:  # MLflow raises several types for a missing artifact
        if faults.is_transient(exc):
            raise
        return None, f"no calibrator: run {run_id} has no readable {CALIBRATOR_FILE} ({faults.describe(exc)})"
    try:
        calibrator = Calibrator.from_json(text)
    except ValueError as exc:
        return None, f"no calibrator: {CALIBRATOR_FILE} of run {run_id} is malformed ({exc})"
    return calibrator, f"{CALIBRATOR_FILE} of run {run_id} ({calibrator.method}, {calibrator.rows} rows)"
