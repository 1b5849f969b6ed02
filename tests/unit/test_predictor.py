"""The one predict path: compiled encoder + bare booster against scikit-learn, and the pyfunc using it."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tabular_mlops import drift
from tabular_mlops.config import ModelSpec
from tabular_mlops.modeling import (
    TabularClassifier,
    build_estimator,
    build_preprocessor,
)
from tabular_mlops.predictor import MISSING, PROBABILITY_TOLERANCE, CompiledEncoder, Predictor

from tests.helpers import fit_feature_classifier

# The attributes a TabularClassifier had before the predictor existed: what registered pickles hold.
OLD_ATTRIBUTES = [
    "model_name",
    "input_kind",
    "entity_table",
    "entity_key",
    "sql",
    "feature_columns",
    "preprocessor",
    "estimator",
]


def _frame(rows: int = 800, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """Categories with a SQL null (None), NaN and a rare value; numbers with gaps."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro", None], size=rows, p=[0.5, 0.3, 0.17, 0.03]).astype(object)
    plan[:3] = "legacy"  # fewer than min_frequency rows: the shared infrequent slot
    plan[3:30] = np.nan
    region = rng.choice(["north", "south"], size=rows).astype(object)
    frame = pd.DataFrame(
        {
            "plan": plan,
            "region": region,
            "spend": rng.lognormal(3, 1, rows),
            "tenure": rng.integers(0, 72, rows).astype(float),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "spend"] = np.nan
    logit = 0.8 * (frame["plan"] == "pro") - 0.02 * frame["tenure"] + 0.3 * (frame["region"] == "south")
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return frame, y


def _classifier(kind: str, scale: bool, n_jobs: int = 1) -> tuple[TabularClassifier, pd.DataFrame]:
    """A feature-row classifier fitted as training fits one (early stopping on a validation split)."""
    frame, y = _frame()
    params: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.1, "n_jobs": n_jobs}
    params.update({"max_depth": 3} if kind == "xgboost" else {"num_leaves": 7})
    spec = ModelSpec(type=kind, registered_name="t", early_stopping_rounds=5, params=params)
    classifier, _ = fit_feature_classifier(frame, y, spec, scale, train_rows=600)
    return classifier, frame


def _reference(classifier: TabularClassifier, frame: pd.DataFrame) -> np.ndarray:
    """What the pyfunc gave before the predictor: scikit-learn's transform, then predict_proba."""
    encoded = classifier.preprocessor.transform(frame[classifier.feature_columns])
    return np.asarray(classifier.estimator.predict_proba(encoded)[:, 1], dtype=float)


@pytest.fixture(scope="module", params=[("lightgbm", True), ("xgboost", False)], ids=["lightgbm", "xgboost"])
def fitted(request: pytest.FixtureRequest) -> tuple[TabularClassifier, pd.DataFrame]:
    return _classifier(*request.param)


def test_the_pyfunc_scores_through_the_compiled_predictor(
    fitted: tuple[TabularClassifier, pd.DataFrame],
) -> None:
    classifier, frame = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning, no feature-name warning
        proba = classifier.predict_proba(frame)
    predictor = classifier.predictor()
    assert predictor.compiled and predictor.bare_booster
    assert isinstance(predictor.encode, CompiledEncoder)
    np.testing.assert_allclose(proba, _reference(classifier, frame), rtol=0, atol=PROBABILITY_TOLERANCE)
    assert classifier.predictor() is predictor  # built once
    out = classifier.predict(None, frame.head(7))
    np.testing.assert_array_equal(out["probability"].to_numpy(), proba[:7])


def test_proba_takes_a_frame_or_columns_alike(fitted: tuple[TabularClassifier, pd.DataFrame]) -> None:
    classifier, frame = fitted
    predictor = classifier.predictor()
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    np.testing.assert_array_equal(predictor.proba(columns), predictor.proba(frame))
    np.testing.assert_array_equal(predictor.proba(columns, rows=len(frame)), predictor.proba(frame))


def test_a_pickled_classifier_leaves_its_predictor_behind_and_still_predicts(
    fitted: tuple[TabularClassifier, pd.DataFrame],
) -> None:
    classifier, frame = fitted
    expected = classifier.predict_proba(frame)  # the predictor is built now
    assert classifier._predictor is not None
    restored = pickle.loads(pickle.dumps(classifier))  # noqa: S301 - the bytes this test just wrote
    assert sorted(vars(restored)) == sorted([*OLD_ATTRIBUTES, "_predictor"])
    assert restored._predictor is None  # rebuilt on first use, from the unpickled parts
    np.testing.assert_array_equal(restored.predict_proba(frame), expected)
    assert restored._predictor is not None and restored._predictor.estimator is restored.estimator


def test_a_classifier_pickled_before_the_predictor_existed_still_predicts(
    fitted: tuple[TabularClassifier, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier, frame = fitted
    old = TabularClassifier.__new__(TabularClassifier)
    old.__dict__.update({name: getattr(classifier, name) for name in OLD_ATTRIBUTES})
    with monkeypatch.context() as patched:
        # Without __getstate__ the class pickles as it did before the predictor existed: its
        # name and its __dict__, so these bytes are what a registered version holds.
        patched.delattr(TabularClassifier, "__getstate__")
        data = pickle.dumps(old)
    restored = pickle.loads(data)  # noqa: S301 - the bytes this test just wrote
    assert type(restored) is TabularClassifier
    np.testing.assert_allclose(
        restored.predict_proba(frame), _reference(classifier, frame), rtol=0, atol=PROBABILITY_TOLERANCE
    )
    # An instance whose state was set without __setstate__ (no attribute at all) predicts too.
    assert "_predictor" not in vars(old)
    np.testing.assert_array_equal(old.predict_proba(frame), restored.predict_proba(frame))


def test_the_predictor_is_rebuilt_when_a_fitted_part_changes() -> None:
    classifier, frame = _classifier("lightgbm", True)
    first = classifier.predictor()
    other, _ = _classifier("xgboost", True)
    classifier.estimator = other.estimator
    assert classifier.predictor() is not first
    np.testing.assert_allclose(
        classifier.predict_proba(frame), _reference(classifier, frame), rtol=0, atol=PROBABILITY_TOLERANCE
    )


def test_an_absent_column_is_a_missing_value_as_in_scikit_learn(
    fitted: tuple[TabularClassifier, pd.DataFrame],
) -> None:
    classifier, frame = fitted
    predictor = classifier.predictor()
    columns = {c: frame[c].to_numpy() for c in frame.columns if c not in ("plan", "spend")}
    full = frame.assign(plan=np.nan, spend=np.nan)
    np.testing.assert_array_equal(
        predictor.encode(columns, len(frame)),
        predictor.encode({c: full[c].to_numpy() for c in full.columns}, len(full)),
    )
    np.testing.assert_allclose(
        predictor.proba(columns, len(frame)), _reference(classifier, full), rtol=0, atol=1e-12
    )


def test_extension_dtypes_take_scikit_learns_transform() -> None:
    classifier, frame = _classifier("lightgbm", True)
    nullable = frame.assign(tenure=frame["tenure"].astype("Int64"))  # scaled: scikit-learn takes it
    predictor = classifier.predictor()
    assert predictor.columns(nullable) is None and predictor.columns(frame) is not None
    np.testing.assert_allclose(
        predictor.proba(nullable), _reference(classifier, frame), rtol=0, atol=PROBABILITY_TOLERANCE
    )


def test_an_encoder_that_does_not_compile_still_predicts_through_the_predictor() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler

    frame, y = _frame()
    preprocessor = ColumnTransformer([("numeric", MinMaxScaler(), ["spend", "tenure"])])
    preprocessor.set_output(transform="pandas")
    x = preprocessor.fit_transform(frame).fillna(0.0)
    spec = ModelSpec(type="lightgbm", registered_name="t", params={"n_estimators": 20, "n_jobs": 1})
    estimator = build_estimator(spec, 1.0, 0).fit(x, y)
    predictor = Predictor(preprocessor, estimator, ["spend", "tenure"])
    assert not predictor.compiled and predictor.bare_booster and predictor.width == 2
    rows = frame.fillna(0.0)
    expected = estimator.predict_proba(preprocessor.transform(rows))[:, 1]
    np.testing.assert_allclose(predictor.proba(rows), expected, rtol=0, atol=PROBABILITY_TOLERANCE)


class _Disagreeing:
    """An estimator whose booster gives other probabilities than its predict_proba."""

    def __init__(self, estimator: Any, booster: Any) -> None:
        self.estimator, self.booster_, self.n_jobs = estimator, booster, 1
        self.feature_names_in_ = estimator.feature_names_in_

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.estimator.predict_proba(x)


class _ShiftedBooster:
    def predict(self, x: np.ndarray, **_: Any) -> np.ndarray:
        return np.full(len(x), 0.5)


class _BrokenBooster:
    def predict(self, x: np.ndarray, **_: Any) -> np.ndarray:
        raise ValueError("cannot take this matrix")


@pytest.mark.parametrize("booster", [_ShiftedBooster(), _BrokenBooster()], ids=["differs", "raises"])
def test_a_booster_that_disagrees_falls_back_to_predict_proba_with_a_warning(
    booster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    classifier, frame = _classifier("lightgbm", True)
    estimator = _Disagreeing(classifier.estimator, booster)
    with caplog.at_level(logging.WARNING, logger="tabular_mlops.predictor"):
        predictor = Predictor(classifier.preprocessor, estimator, classifier.feature_columns)
    assert predictor.compiled and not predictor.bare_booster
    assert "booster not called bare" in caplog.text
    np.testing.assert_allclose(
        predictor.proba(frame), _reference(classifier, frame), rtol=0, atol=PROBABILITY_TOLERANCE
    )


def _nthread(booster: Any) -> int:
    return int(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"])


def test_another_thread_count_leaves_the_xgboost_estimators_booster_alone() -> None:
    classifier, frame = _classifier("xgboost", False, n_jobs=2)
    booster = classifier.estimator.get_booster()
    assert _nthread(booster) == 2
    serving = Predictor(classifier.preprocessor, classifier.estimator, classifier.feature_columns, threads=1)
    assert _nthread(booster) == 2  # the service's one thread is set on a copy
    np.testing.assert_array_equal(serving.proba(frame), classifier.predict_proba(frame))
    assert _nthread(booster) == 2  # the pyfunc uses the estimator's own n_jobs


def test_one_missing_category_constant() -> None:
    preprocessor = build_preprocessor(["plan"], ["spend"], False)
    imputer = preprocessor.transformers[0][1].steps[0][1]
    assert imputer.fill_value is MISSING and drift.MISSING is MISSING
