"""Champion against challenger on the same labelled rows (shadow_compare.compare)."""

from __future__ import annotations

import numpy as np
import pytest
from tabular_mlops import gate
from tabular_mlops.shadow_compare import LOSES, TOO_FEW, UNDECIDED, WINS, compare, describe


def _scores(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores that rank them with the given noise (more noise: lower AUC)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    return y, 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, noise, size=n))))


def test_a_better_challenger_wins_and_a_worse_one_loses() -> None:
    y, sharp = _scores(2000, 1, 0.8)
    rng = np.random.default_rng(2)
    blurred = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 2.5, size=y.size))))
    won = compare(y, champion=blurred, challenger=sharp, minimum=500, rounds=300)
    assert won["verdict"] == WINS and won["interval"][0] > 0
    assert won["challenger_auc"] > won["champion_auc"] and won["labelled_rows"] == 2000
    lost = compare(y, champion=sharp, challenger=blurred, minimum=500, rounds=300)
    assert lost["verdict"] == LOSES and lost["interval"][1] < 0
    assert "loses" in describe({**lost, "version": "3", "champion_version": "2"})


def test_the_same_model_is_undecided() -> None:
    y, p = _scores(1000, 3, 1.0)
    result = compare(y, champion=p, challenger=p, minimum=100, rounds=200)
    assert result["verdict"] == UNDECIDED and result["interval"] == [0.0, 0.0]


def test_too_few_labelled_rows_are_not_judged_however_large_the_gap() -> None:
    y, sharp = _scores(2000, 4, 0.5)
    few = slice(0, 120)
    coin = np.random.default_rng(5).random(y.size)
    result = compare(y[few], champion=coin[few], challenger=sharp[few], minimum=500, rounds=200)
    assert result["verdict"] == TOO_FEW and result["interval"] is None
    assert result["challenger_auc"] > result["champion_auc"]  # measured, just not judged
    nothing = compare(np.empty(0), np.empty(0), np.empty(0), minimum=500, rounds=200)
    assert nothing["verdict"] == TOO_FEW and nothing["champion_auc"] is None


def test_the_interval_is_the_gates_paired_bootstrap() -> None:
    y, sharp = _scores(800, 6, 0.9)
    _, other = _scores(800, 6, 1.4)
    result = compare(y, champion=other, challenger=sharp, minimum=100, rounds=250, seed=7)
    diffs = gate.paired_bootstrap_auc_diff(y, sharp, other, 250, 7)
    assert result["resamples"] == diffs.size
    assert result["interval"] == [round(float(q), 6) for q in np.quantile(diffs, [0.025, 0.975])]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="3 labels, 2 champion"):
        compare(np.array([0, 1, 1]), np.array([0.1, 0.2]), np.array([0.1, 0.2, 0.3]), 1, 100)
