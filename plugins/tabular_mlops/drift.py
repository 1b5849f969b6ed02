"""Drift effect sizes computed in NumPy, one pass per column, on every row.

On a large window a p-value test flags every column (the sample is big enough to "detect" a
shift nobody cares about), so drift is judged by effect size: the population stability index
(PSI) of each feature between the reference (a sample of the training rows of the version) and
the current window. Numbers are binned at the reference's quantiles and categories by value;
missing values are a bin of their own, because a feature going missing is drift too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabular_mlops.predictor import MISSING

EPSILON = 1e-4  # floor of a bin share, so an empty bin gives a large but finite PSI


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two share vectors over the same bins."""
    e = np.clip(expected, EPSILON, None)
    a = np.clip(actual, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(float)


@dataclass
class Bins:
    """The bins one PSI is computed over: a label and the reference's and the window's share of each."""

    labels: list[str]
    expected: np.ndarray
    actual: np.ndarray

    def psi(self) -> float:
        """PSI over these bins."""
        return psi(self.expected, self.actual)


def numeric_bins(reference: np.ndarray, current: np.ndarray, bins: int) -> Bins:
    """Bins of a numeric column: the reference's quantiles plus one for missing values."""
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref_ok):
        edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, bins + 1)[1:-1]))
    else:
        edges = np.array([])
    # searchsorted puts every value into one of len(edges) + 1 bins; missing values go last.
    ref_counts = np.bincount(np.searchsorted(edges, ref_ok, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur_ok, side="right"), minlength=len(edges) + 1)
    ref_counts = np.append(ref_counts, len(ref) - len(ref_ok))
    cur_counts = np.append(cur_counts, len(cur) - len(cur_ok))
    bounds = [f"{e:.4g}" for e in edges]
    labels = [f"< {bounds[0]}"] if bounds else ["all"]
    labels += [f"{lo} to {hi}" for lo, hi in zip(bounds, bounds[1:], strict=False)]
    labels += [f">= {bounds[-1]}"] if bounds else []
    return Bins([*labels, "missing"], _shares(ref_counts), _shares(cur_counts))


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """PSI of a numeric column: bins at the reference's quantiles plus one for missing values."""
    return numeric_bins(reference, current, bins).psi()


def categorical_bins(reference: pd.Series, current: pd.Series) -> Bins:
    """Bins of a categorical column: the categories of both sides plus missing."""
    ref = reference.astype(object).where(reference.notna(), MISSING)
    cur = current.astype(object).where(current.notna(), MISSING)
    ref_counts = ref.value_counts()
    cur_counts = cur.value_counts()
    categories = ref_counts.index.union(cur_counts.index)
    e = _shares(ref_counts.reindex(categories, fill_value=0).to_numpy(dtype=float))
    a = _shares(cur_counts.reindex(categories, fill_value=0).to_numpy(dtype=float))
    labels = ["missing" if c == MISSING else str(c) for c in categories]
    return Bins(labels, e, a)


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI of a categorical column over the categories of both sides plus missing."""
    return categorical_bins(reference, current).psi()


def column_bins(reference: pd.Series, current: pd.Series, bins: int) -> tuple[str, Bins]:
    """(kind, bins) of one column: numeric when both sides are numbers, categorical otherwise."""
    if reference.dtype.kind in "biuf" and current.dtype.kind in "biuf":
        return "numeric", numeric_bins(reference.to_numpy(), current.to_numpy(), bins)
    return "categorical", categorical_bins(reference, current)


@dataclass
class ColumnDrift:
    """The drift of one feature."""

    column: str
    kind: str  # numeric | categorical
    psi: float
    drifted: bool
    importance: float  # share of the model's importance carried by this feature

    def to_dict(self) -> dict[str, object]:
        """Plain form for the JSON summary."""
        return {
            "column": self.column,
            "kind": self.kind,
            "psi": round(self.psi, 4),
            "drifted": self.drifted,
            "importance": round(self.importance, 4),
        }


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Iterable[str],
    threshold: float,
    bins: int,
    importance: dict[str, float] | None = None,
) -> list[ColumnDrift]:
    """PSI of every column, largest first; a column drifted when its PSI exceeds the threshold."""
    weights = importance or {}
    results = []
    for column in columns:
        kind, shares = column_bins(reference[column], current[column], bins)
        value = shares.psi()
        results.append(ColumnDrift(column, kind, value, value > threshold, float(weights.get(column, 0.0))))
    return sorted(results, key=lambda d: -d.psi)


def weighted_drift_share(drifts: list[ColumnDrift]) -> float:
    """Share of the model's importance carried by drifted features (plain share without weights)."""
    total = sum(d.importance for d in drifts)
    if total <= 0:
        return sum(d.drifted for d in drifts) / len(drifts) if drifts else 0.0
    return sum(d.importance for d in drifts if d.drifted) / total


def column_importance(encoded: pd.Series, categorical: list[str], numeric: list[str]) -> dict[str, float]:
    """Importance per input feature, summing the one-hot columns of a category; shares sum to 1."""
    totals = dict.fromkeys([*categorical, *numeric], 0.0)
    by_length = sorted(categorical, key=len, reverse=True)
    for name, value in encoded.items():
        if name in totals and name in numeric:
            totals[str(name)] += float(value)
            continue
        owner = next((c for c in by_length if str(name).startswith(f"{c}_")), None)
        if owner is not None:
            totals[owner] += float(value)
    total = sum(totals.values())
    return {k: v / total for k, v in totals.items()} if total > 0 else totals
