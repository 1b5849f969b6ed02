"""Quality gate: floors, paired-bootstrap non-inferiority, Brier guardrail, slice floors, failing closed."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from tabular_mlops.gate import GatePolicy, GateVerdict, judge, paired_bootstrap_auc_diff, slice_masks

POLICY = GatePolicy(min_auc=0.7, max_auc_drop=0.01, max_brier_increase=0.01, bootstrap_rounds=400)


class World:
    """Labels from a logistic model; a model scores the true logit plus noise (more noise, worse model)."""

    def __init__(self, n: int = 5000, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.logit = rng.normal(0, 1.5, size=n) - 0.5
        self.y = (rng.random(n) < _sigmoid(self.logit)).astype(int)

    def model(self, noise: float, seed: int) -> np.ndarray:
        """Positive-class probabilities of a model whose logit error has standard deviation `noise`."""
        rng = np.random.default_rng(seed)
        return _sigmoid(self.logit + rng.normal(0, noise, size=self.y.size))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _check(verdict: GateVerdict, name: str) -> dict:
    return next(c for c in verdict.to_dict()["checks"] if c["name"] == name)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_good_candidate_without_production_passes(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1)
    verdict = judge(candidate, world.y, replace(POLICY, min_accuracy=0.6))
    assert verdict.passed and verdict.reasons() == []
    assert [c.name for c in verdict.checks] == ["min_auc", "min_accuracy"]
    auc = _check(verdict, "min_auc")
    assert auc["value"] == pytest.approx(roc_auc_score(world.y, candidate))
    assert auc["bound"] == 0.7 and auc["passed"] is True
    json.dumps(verdict.to_dict())


def test_candidate_below_min_auc_is_refused_with_a_readable_reason(world: World) -> None:
    candidate = world.model(noise=2.0, seed=1)
    verdict = judge(candidate, world.y, replace(POLICY, min_auc=0.8))
    assert not verdict.passed
    auc = roc_auc_score(world.y, candidate)
    assert verdict.reasons() == [f"roc_auc {auc:.3f} < min 0.800"]
    assert re.fullmatch(r"roc_auc 0\.\d{3} < min 0\.800", verdict.reasons()[0])


def test_min_accuracy_is_checked_at_the_policy_threshold(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1)
    # At threshold 0.99 almost everything is predicted negative: accuracy falls to about 1 - positive rate.
    policy = replace(POLICY, min_accuracy=0.7, threshold=0.99)
    verdict = judge(candidate, world.y, policy)
    accuracy = np.mean((candidate >= 0.99) == world.y)
    assert accuracy < 0.7
    assert verdict.reasons() == [f"accuracy {accuracy:.3f} < min 0.700"]


def test_candidate_identical_to_production_is_non_inferior(world: World) -> None:
    production = world.model(noise=0.8, seed=2)
    verdict = judge(production.copy(), world.y, POLICY, production=production)
    assert verdict.passed
    check = _check(verdict, "non_inferior_auc")
    assert check["value"] == 0.0 and check["bound"] == -0.01
    assert "point +0.000" in check["detail"] and "CI [+0.000, +0.000]" in check["detail"]
    assert _check(verdict, "brier_guardrail")["passed"] is True


def test_clearly_worse_candidate_fails_non_inferiority(world: World) -> None:
    production = world.model(noise=0.5, seed=2)
    candidate = world.model(noise=1.2, seed=3)
    drop = roc_auc_score(world.y, production) - roc_auc_score(world.y, candidate)
    assert 0.03 < drop < 0.08  # the scenario the test means: a ~0.05 AUC drop on 5,000 rows
    verdict = judge(candidate, world.y, POLICY, production=production)
    check = _check(verdict, "non_inferior_auc")
    assert not verdict.passed and check["passed"] is False
    assert check["value"] <= -0.01
    assert f"point {-drop:+.3f}" in check["detail"]
    assert any(reason.startswith("auc_diff lower bound") for reason in verdict.reasons())


def test_slightly_better_candidate_passes(world: World) -> None:
    production = world.model(noise=0.7, seed=2)
    candidate = world.model(noise=0.55, seed=3)
    gain = roc_auc_score(world.y, candidate) - roc_auc_score(world.y, production)
    assert 0 < gain < 0.02
    verdict = judge(candidate, world.y, POLICY, production=production)
    assert verdict.passed, verdict.reasons()
    assert _check(verdict, "non_inferior_auc")["value"] > -0.01


def test_same_seed_gives_the_same_verdict(world: World) -> None:
    production = world.model(noise=0.8, seed=2)
    candidate = world.model(noise=0.9, seed=3)
    first = judge(candidate, world.y, POLICY, production=production, seed=11)
    second = judge(candidate, world.y, POLICY, production=production, seed=11)
    other = judge(candidate, world.y, POLICY, production=production, seed=12)
    assert first.to_dict() == second.to_dict()
    # The seed really drives the resampling: another seed moves the interval.
    assert _check(first, "non_inferior_auc")["value"] != _check(other, "non_inferior_auc")["value"]


def test_bootstrap_matches_sklearn_on_the_same_resamples() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    # Rounded scores create ties, which AUC counts as half a win.
    candidate = np.round(rng.random(200) * 0.5 + y * 0.3, 2)
    production = np.round(rng.random(200), 1)
    diffs = paired_bootstrap_auc_diff(y, candidate, production, rounds=50, seed=5)
    # With 200 rows all 50 resamples are drawn in one block from the seeded Generator.
    idx = np.random.default_rng(5).integers(0, 200, size=(50, 200))
    expected = [roc_auc_score(y[i], candidate[i]) - roc_auc_score(y[i], production[i]) for i in idx]
    np.testing.assert_allclose(diffs, expected, atol=1e-12)


def test_single_class_resamples_are_skipped() -> None:
    y = np.array([1] + [0] * 9)
    scores = np.linspace(0, 1, 10)
    diffs = paired_bootstrap_auc_diff(y, scores, scores[::-1], rounds=200, seed=0)
    # A resample misses the one positive with probability 0.9 ** 10 (about 35%).
    assert 60 < diffs.size < 200
    assert np.isfinite(diffs).all()


def test_brier_guardrail_catches_same_ranking_with_squashed_probabilities(world: World) -> None:
    production = world.model(noise=0.5, seed=2)
    candidate = 0.5 + (production - 0.5) * 0.05  # same order, every probability within 0.5 +- 0.025
    verdict = judge(candidate, world.y, POLICY, production=production)
    assert _check(verdict, "non_inferior_auc")["passed"] is True
    brier = _check(verdict, "brier_guardrail")
    assert not verdict.passed and brier["passed"] is False
    assert brier["value"] > brier["bound"]
    assert brier["bound"] == pytest.approx(np.mean((production - world.y) ** 2) + 0.01)
    assert [r.split()[0] for r in verdict.reasons()] == ["brier"]


def test_slices_small_ones_not_judged_weak_ones_fail(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1).copy()
    positives = np.flatnonzero(world.y == 1)
    negatives = np.flatnonzero(world.y == 0)
    small = np.zeros_like(world.y, dtype=bool)
    small[positives[:12]] = small[negatives[:200]] = True
    weak = np.zeros_like(world.y, dtype=bool)
    weak[positives[100:400]] = weak[negatives[300:900]] = True
    # On the weak slice the candidate is a coin flip.
    candidate[weak] = np.random.default_rng(9).random(weak.sum())
    strong = ~(small | weak)
    slices = {"region=small": small, "region=weak": weak, "region=rest": strong}
    policy = replace(POLICY, slice_min_auc=0.7, slice_min_positives=30)
    verdict = judge(candidate, world.y, policy, slices=slices)
    small_check = _check(verdict, "slice_auc[region=small]")
    assert small_check["passed"] is None
    assert small_check["detail"] == "slice_auc[region=small] not judged: 12 positives < 30"
    assert _check(verdict, "slice_auc[region=rest]")["passed"] is True
    weak_auc = roc_auc_score(world.y[weak], candidate[weak])
    assert not verdict.passed
    assert verdict.reasons() == [f"slice_auc[region=weak] {weak_auc:.3f} < min 0.700"]


def test_slice_with_too_few_negatives_is_not_judged_and_does_not_block(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1)
    mask = np.zeros_like(world.y, dtype=bool)
    mask[np.flatnonzero(world.y == 1)[:100]] = True
    mask[np.flatnonzero(world.y == 0)[:5]] = True
    verdict = judge(candidate, world.y, replace(POLICY, slice_min_auc=0.99), slices={"tiny": mask})
    assert verdict.passed
    assert _check(verdict, "slice_auc[tiny]")["detail"].endswith("not judged: 5 negatives < 30")


def test_slices_ignored_without_a_slice_floor(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1)
    verdict = judge(candidate, world.y, POLICY, slices={"all": np.ones_like(world.y, dtype=bool)})
    assert [c.name for c in verdict.checks] == ["min_auc"]


def test_production_error_fails_closed(world: World) -> None:
    candidate = world.model(noise=0.3, seed=1)
    verdict = judge(candidate, world.y, POLICY, production_error="model artifact missing")
    assert not verdict.passed
    assert [c.name for c in verdict.checks] == ["min_auc", "production_scored"]
    assert verdict.reasons() == ["production model could not be scored: model artifact missing"]


def test_non_finite_production_scores_fail_closed(world: World) -> None:
    production = world.model(noise=0.5, seed=2)
    production[:3] = np.nan
    verdict = judge(world.model(noise=0.5, seed=1), world.y, POLICY, production=production)
    assert not verdict.passed
    assert _check(verdict, "production_scored")["detail"] == "production scores hold 3 non-finite value(s)"


def test_inconsistent_inputs_are_refused(world: World) -> None:
    candidate = world.model(noise=0.5, seed=1)
    with pytest.raises(ValueError, match="not both"):
        judge(candidate, world.y, POLICY, production=candidate, production_error="boom")
    with pytest.raises(ValueError, match="scores for"):
        judge(candidate[:-1], world.y, POLICY)
    with pytest.raises(ValueError, match="boolean mask"):
        judge(candidate, world.y, replace(POLICY, slice_min_auc=0.7), slices={"bad": world.y})
    with pytest.raises(ValueError, match="confidence"):
        GatePolicy(min_auc=0.7, confidence=1.5)


def test_slice_masks_cover_every_value_and_nulls() -> None:
    frame = pd.DataFrame(
        {
            "Contract": ["Month-to-month", "Two year", None, "Month-to-month"],
            "SeniorCitizen": [0, 1, 1, 0],
        }
    )
    masks = slice_masks(frame, ["Contract", "SeniorCitizen"])
    assert list(masks) == [
        "Contract=Month-to-month",
        "Contract=Two year",
        "Contract=<null>",
        "SeniorCitizen=0",
        "SeniorCitizen=1",
    ]
    assert masks["Contract=Month-to-month"].tolist() == [True, False, False, True]
    assert masks["Contract=<null>"].tolist() == [False, False, True, False]
    assert masks["SeniorCitizen=1"].tolist() == [False, True, True, False]
    assert all(mask.dtype == bool for mask in masks.values())


def test_bootstrap_of_1000_rounds_on_20000_rows_is_fast() -> None:
    world = World(n=20_000, seed=3)
    candidate, production = world.model(noise=0.6, seed=1), world.model(noise=0.7, seed=2)
    started = time.perf_counter()
    diffs = paired_bootstrap_auc_diff(world.y, candidate, production, rounds=1000, seed=0)
    elapsed = time.perf_counter() - started
    assert diffs.size == 1000
    # Loose on purpose: the target is well under 10 s, but shared CI machines vary.
    assert elapsed < 30, f"1000 bootstrap rounds took {elapsed:.1f} s"
