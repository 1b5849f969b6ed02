"""Quality gate: decide whether a candidate model may replace the production version.

`judge` compares test-split scores only, so the decision is reproducible and testable without MLflow.
The checks: absolute floors (AUC, optional accuracy), non-inferiority of AUC against production by a
paired bootstrap, a Brier-score guardrail against production, per-slice AUC floors, and a fail-closed
check when production exists but could not be scored. Every check is listed in the verdict with its
value and bound; a check that cannot be judged (a slice too small) says so and never passes or fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

NULL_VALUE = "<null>"
# Resamples are processed in chunks of about this many cells, bounding memory at a few tens of MB.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class GatePolicy:
    """Bounds a candidate must meet; the drop and increase margins are measured against production."""

    min_auc: float
    min_accuracy: float | None = None
    threshold: float = 0.5
    max_auc_drop: float = 0.01
    max_brier_increase: float = 0.01
    slice_min_auc: float | None = None
    slice_min_positives: int = 30
    bootstrap_rounds: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.bootstrap_rounds < 1:
            raise ValueError(f"bootstrap_rounds must be at least 1, got {self.bootstrap_rounds}")
        if self.max_auc_drop < 0 or self.max_brier_increase < 0:
            raise ValueError("max_auc_drop and max_brier_increase must not be negative")
        if self.slice_min_positives < 1:
            raise ValueError(f"slice_min_positives must be at least 1, got {self.slice_min_positives}")


@dataclass
class Check:
    """One judged condition; passed is None when the data were too thin to judge it."""

    name: str
    value: float | None
    bound: float | None
    passed: bool | None
    detail: str


@dataclass
class GateVerdict:
    """The gate's decision and every check behind it."""

    passed: bool
    checks: list[Check]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the run's report and MLflow tags."""
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "reasons": self.reasons()}

    def reasons(self) -> list[str]:
        """One readable line per failed check, e.g. "roc_auc 0.791 < min 0.820"."""
        return [check.detail for check in self.checks if check.passed is False]


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def _brier(y: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean((scores - y) ** 2))


def _floor_check(name: str, metric: str, value: float, bound: float) -> Check:
    passed = value >= bound
    sign = ">=" if passed else "<"
    return Check(name, value, bound, passed, f"{metric} {value:.3f} {sign} min {bound:.3f}")


def _dense_levels(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Each score's rank among the distinct scores, so tied scores share a level."""
    unique, levels = np.unique(scores, return_inverse=True)
    return levels.ravel(), unique.size


def _resample_aucs(
    levels: np.ndarray, n_levels: int, labels: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray
) -> np.ndarray:
    """AUC of each resample (one per row of `levels` and `labels`), ties counted as half a win.

    Counting positives and negatives per score level and summing, for each positive, the negatives
    below it is the Mann-Whitney statistic in O(rows) per resample, with no sort inside the loop.
    """
    rounds = levels.shape[0]
    flat = (levels + np.arange(rounds)[:, None] * n_levels).ravel()
    size = rounds * n_levels
    total = np.bincount(flat, minlength=size).reshape(rounds, n_levels)
    pos = np.bincount(flat, weights=labels.ravel(), minlength=size).reshape(rounds, n_levels)
    neg = total - pos
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return wins / (n_pos * n_neg)


def paired_bootstrap_aucs(y_true: np.ndarray, models: list[np.ndarray], rounds: int, seed: int) -> np.ndarray:
    """AUC of each model (rows) on `rounds` shared row resamples (columns); single-class resamples dropped."""
    y = np.asarray(y_true, dtype=np.int64).ravel()
    dense = [_dense_levels(np.asarray(scores, dtype=float)) for scores in models]
    rng = np.random.default_rng(seed)
    n = y.size
    chunk = max(1, _CHUNK_CELLS // max(n, *(size for _, size in dense)))
    aucs = []
    for start in range(0, rounds, chunk):
        # The same row indices for every model: pairing removes the test-set noise they share.
        idx = rng.integers(0, n, size=(min(chunk, rounds - start), n))
        labels = y[idx]
        n_pos = labels.sum(axis=1)
        n_neg = n - n_pos
        keep = (n_pos > 0) & (n_neg > 0)
        if not keep.any():
            continue
        idx, labels, n_pos, n_neg = idx[keep], labels[keep], n_pos[keep], n_neg[keep]
        aucs.append(np.stack([_resample_aucs(lv[idx], size, labels, n_pos, n_neg) for lv, size in dense]))
    return np.concatenate(aucs, axis=1) if aucs else np.empty((len(models), 0))


def paired_bootstrap_auc_diff(
    y_true: np.ndarray, candidate: np.ndarray, production: np.ndarray, rounds: int, seed: int
) -> np.ndarray:
    """AUC(candidate) - AUC(production) on `rounds` shared row resamples; single-class resamples dropped."""
    aucs = paired_bootstrap_aucs(y_true, [candidate, production], rounds, seed)
    return aucs[0] - aucs[1]


def auc_intervals(
    y_true: np.ndarray, models: dict[str, np.ndarray], rounds: int, seed: int, confidence: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile bootstrap interval of each model's AUC, from shared resamples (None: cannot judge)."""
    aucs = paired_bootstrap_aucs(y_true, list(models.values()), rounds, seed)
    if aucs.shape[1] == 0:
        return {name: None for name in models}
    alpha = 1 - confidence
    return {
        name: [float(q) for q in np.quantile(row, [alpha / 2, 1 - alpha / 2])]
        for name, row in zip(models, aucs, strict=True)
    }


def _non_inferiority_check(
    y: np.ndarray, candidate: np.ndarray, production: np.ndarray, policy: GatePolicy, seed: int
) -> Check:
    point = _auc(y, candidate) - _auc(y, production)
    diffs = paired_bootstrap_auc_diff(y, candidate, production, policy.bootstrap_rounds, seed)
    bound = -policy.max_auc_drop
    if diffs.size == 0:
        detail = f"AUC difference {point:+.3f}: every bootstrap resample held one class; cannot judge"
        # Fail closed: a replacement that cannot be shown non-inferior is not promoted.
        return Check("non_inferior_auc", None, bound, False, detail)
    alpha = 1 - policy.confidence
    low, high = (float(q) for q in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    passed = low > bound
    sign = ">" if passed else "<="
    detail = (
        f"auc_diff lower bound {low:+.3f} {sign} {bound:+.3f} (max drop {policy.max_auc_drop:.3f}; "
        f"point {point:+.3f}, {policy.confidence:.0%} CI [{low:+.3f}, {high:+.3f}], {diffs.size} resamples)"
    )
    return Check("non_inferior_auc", low, bound, passed, detail)


def _brier_check(y: np.ndarray, candidate: np.ndarray, production: np.ndarray, policy: GatePolicy) -> Check:
    cand, prod = _brier(y, candidate), _brier(y, production)
    bound = prod + policy.max_brier_increase
    passed = cand <= bound
    sign = "<=" if passed else ">"
    detail = (
        f"brier {cand:.4f} {sign} max {bound:.4f} (production {prod:.4f} + {policy.max_brier_increase:.4f})"
    )
    return Check("brier_guardrail", cand, bound, passed, detail)


def _production_checks(
    y: np.ndarray,
    candidate: np.ndarray,
    production: np.ndarray | None,
    production_error: str | None,
    policy: GatePolicy,
    seed: int,
) -> list[Check]:
    if production_error is not None:
        # Production exists but its scores are unknown: promoting blind could replace a better model.
        detail = f"production model could not be scored: {production_error}"
        return [Check("production_scored", None, None, False, detail)]
    if production is None:
        return []
    if not np.isfinite(production).all():
        detail = f"production scores hold {int((~np.isfinite(production)).sum())} non-finite value(s)"
        return [Check("production_scored", None, None, False, detail)]
    return [
        _non_inferiority_check(y, candidate, production, policy, seed),
        _brier_check(y, candidate, production, policy),
    ]


def _slice_check(
    name: str, mask: np.ndarray, y: np.ndarray, candidate: np.ndarray, floor: float, minimum: int
) -> Check:
    check_name = f"slice_auc[{name}]"
    positives = int(y[mask].sum())
    negatives = int(mask.sum()) - positives
    short = [
        f"{count} {kind} < {minimum}"
        for kind, count in (("positives", positives), ("negatives", negatives))
        if count < minimum
    ]
    if short:
        # An AUC from a handful of rows is mostly noise; judging it would block or pass models at random.
        value = _auc(y[mask], candidate[mask]) if positives and negatives else None
        return Check(check_name, value, floor, None, f"{check_name} not judged: {', '.join(short)}")
    return _floor_check(check_name, check_name, _auc(y[mask], candidate[mask]), floor)


def _validated(
    y_true: Any, candidate: Any, production: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = np.asarray(y_true).ravel()
    cand = np.asarray(candidate, dtype=float).ravel()
    prod = None if production is None else np.asarray(production, dtype=float).ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if y.size == 0 or y.min() == y.max():
        raise ValueError("y_true must hold both classes; AUC is undefined otherwise")
    for label, scores in (("candidate", cand), ("production", prod)):
        if scores is not None and scores.shape != y.shape:
            raise ValueError(f"{label} has {scores.size} scores for {y.size} labels")
    if not np.isfinite(cand).all():
        raise ValueError("candidate scores must all be finite")
    return y.astype(np.int64), cand, prod


def judge(
    candidate: np.ndarray,
    y_true: np.ndarray,
    policy: GatePolicy,
    production: np.ndarray | None = None,
    production_error: str | None = None,
    slices: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> GateVerdict:
    """Judge candidate test-split probabilities against the policy and, if given, production's scores."""
    if production is not None and production_error is not None:
        raise ValueError("pass production scores or production_error, not both")
    y, cand, prod = _validated(y_true, candidate, production)
    checks = [_floor_check("min_auc", "roc_auc", _auc(y, cand), policy.min_auc)]
    if policy.min_accuracy is not None:
        accuracy = float(np.mean((cand >= policy.threshold) == y))
        checks.append(_floor_check("min_accuracy", "accuracy", accuracy, policy.min_accuracy))
    checks += _production_checks(y, cand, prod, production_error, policy, seed)
    if slices and policy.slice_min_auc is not None:
        for name, mask in slices.items():
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != y.shape:
                raise ValueError(f"slice {name!r} must be a boolean mask over the {y.size} rows")
            checks.append(_slice_check(name, mask, y, cand, policy.slice_min_auc, policy.slice_min_positives))
    return GateVerdict(passed=all(check.passed is not False for check in checks), checks=checks)


def slice_masks(frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Boolean row masks named "col=value" for every value of each column; nulls become "col=<null>"."""
    masks: dict[str, np.ndarray] = {}
    for column in columns:
        values = frame[column]
        # Sorted by text so the checks appear in the same order on every run.
        for value in sorted(values.dropna().unique(), key=str):
            masks[f"{column}={value}"] = values.eq(value).to_numpy(dtype=bool, na_value=False)
        nulls = values.isna().to_numpy(dtype=bool)
        if nulls.any():
            masks[f"{column}={NULL_VALUE}"] = nulls
    return masks
