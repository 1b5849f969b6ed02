"""One predict path: the fitted encoder compiled into index arithmetic, then the bare booster.

The logged pyfunc (`modeling.TabularClassifier.predict_proba`) and the service's request path
(`serving.lean`) both score through a `Predictor`. scikit-learn's ColumnTransformer costs about
5 ms per call whatever the row count; compiled once, the encoder is index arrays (one-hot
positions, imputation values, scaling constants) applied to numpy columns, and the booster is
called on the float64 matrix without the scikit-learn wrapper. Each compiled part is checked
against the scikit-learn original when it is built, on a probe of every category, missing and
unseen values and odd numbers; a part that does not compile or does not match is replaced by the
original, with a warning, so a `Predictor` always gives what the fitted parts give.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
MISSING = "__missing__"  # the fill value of the categorical imputer (modeling.build_preprocessor)
# The compiled path and the estimator's predict_proba run the same trees on the same float64
# values, so they agree exactly; the tolerance only absorbs a library's own rounding.
PROBABILITY_TOLERANCE = 1e-9
Columns = Mapping[str, np.ndarray]
Encoder = Callable[[Columns, int], np.ndarray]
Booster = Callable[[np.ndarray], np.ndarray]


def as_float(values: Any) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls (DuckDB's fetchnumpy returns masked arrays)."""
    if isinstance(values, np.ma.MaskedArray):
        return np.ma.filled(values.astype(np.float64), np.nan)
    return np.asarray(values, dtype=np.float64)


def _is_identity(step: Any) -> bool:
    """A "passthrough" step, as given or as fitted (an identity FunctionTransformer)."""
    return step == "passthrough" or (type(step).__name__ == "FunctionTransformer" and step.func is None)


class CompiledEncoder:
    """The fitted one-hot + impute/scale ColumnTransformer as index arithmetic on arrays."""

    def __init__(self, preprocessor: Any, feature_columns: list[str]) -> None:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        self.width = 0
        self.one_hot: list[tuple[str, dict[Any, int]]] = []
        self.numeric: list[tuple[str, int, float, float, float]] = []  # column, slot, fill, mean, scale
        for name, transformer, columns in preprocessor.transformers_:
            if name == "remainder" or transformer == "drop" or not len(columns):
                continue
            steps = transformer.steps if isinstance(transformer, Pipeline) else [(None, transformer)]
            if isinstance(steps[-1][1], OneHotEncoder):
                self._compile_one_hot(list(columns), steps[-1][1])
            else:
                self._compile_numeric(list(columns), [step for _, step in steps])
        self.columns = feature_columns
        self._vectorise_numeric()

    def _compile_numeric(self, columns: list[str], steps: list[Any]) -> None:
        """Slots of numeric columns, with the fitted imputation value, mean and scale of each."""
        from sklearn.preprocessing import StandardScaler

        fill = [np.nan] * len(columns)
        mean = [0.0] * len(columns)
        scale = [1.0] * len(columns)
        for step in steps:
            if _is_identity(step):
                continue
            if isinstance(step, StandardScaler):
                mean = list(step.mean_) if step.with_mean else mean
                scale = list(step.scale_) if step.with_std else scale
            elif type(step).__name__ == "SimpleImputer":
                fill = list(step.statistics_)
            else:
                raise TypeError(f"cannot compile numeric step {type(step).__name__}")
        for i, column in enumerate(columns):
            self.numeric.append((column, self.width, float(fill[i]), float(mean[i]), float(scale[i])))
            self.width += 1

    def _vectorise_numeric(self) -> None:
        """The numeric columns' slots and constants as arrays, so they are encoded in one pass."""
        numeric = self.numeric
        self._numeric_columns = [column for column, *_ in numeric]
        self._numeric_slots = np.asarray([slot for _, slot, *_ in numeric], dtype=np.intp)
        self._fill = np.asarray([fill for _, _, fill, _, _ in numeric], dtype=np.float64)
        self._imputed = self._fill == self._fill  # a NaN fill: no imputer was fitted
        self._mean = np.asarray([mean for *_, mean, _ in numeric], dtype=np.float64)
        self._scale = np.asarray([scale for *_, scale in numeric], dtype=np.float64)

    def _compile_one_hot(self, columns: list[str], encoder: Any) -> None:
        """Slots per category: frequent ones in fitted order, then the shared infrequent slot."""
        if encoder.handle_unknown != "ignore" or encoder.drop is not None:
            raise TypeError("only one-hot encoders with handle_unknown='ignore' and no drop compile")
        infrequent = getattr(encoder, "infrequent_categories_", [None] * len(columns))
        for i, column in enumerate(columns):
            rare = set() if infrequent[i] is None else set(infrequent[i].tolist())
            slots: dict[Any, int] = {}
            for category in encoder.categories_[i].tolist():
                if category not in rare:
                    slots[category] = self.width
                    self.width += 1
            if rare:
                for category in rare:
                    slots[category] = self.width
                self.width += 1
            self.one_hot.append((column, slots))

    def probe(self) -> dict[str, np.ndarray]:
        """Feature rows covering every category, a missing and an unseen value, and odd numbers."""
        rows = max([len(slots) + 3 for _, slots in self.one_hot] + [6])
        probe: dict[str, np.ndarray] = {}
        for column, slots in self.one_hot:
            values: list[Any] = [*slots, None, np.nan, "__never_seen__"]
            probe[column] = np.asarray([values[i % len(values)] for i in range(rows)], dtype=object)
        numbers = [np.nan, 0.0, -1.5, 1e6, 3.25, -0.0]
        for column, *_ in self.numeric:
            probe[column] = np.asarray([numbers[(i + len(probe)) % len(numbers)] for i in range(rows)])
        return probe

    def __call__(self, features: Columns, rows: int) -> np.ndarray:
        """The encoded float64 matrix the booster takes, from feature columns."""
        out = np.zeros((rows, self.width), dtype=np.float64)
        for column, slots in self.one_hot:
            values = features.get(column)
            if values is None:  # an absent column is all missing, as the reference encoder fills it
                slot = slots.get(MISSING)
                if slot is not None:
                    out[:, slot] = 1.0
                continue
            # A list of the column's objects: the cheapest to walk at one row and at thousands.
            for row, value in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
                # Only NaN is imputed: scikit-learn's imputer leaves None alone, so a SQL null
                # (None from DuckDB) is a category of its own, as it was at training.
                if isinstance(value, float) and value != value:
                    value = MISSING
                slot = slots.get(value)
                if slot is not None:
                    out[row, slot] = 1.0
        if self.numeric:
            # Column by column this was 500 small numpy calls for credit_risk; one matrix is
            # the same arithmetic, value for value.
            x = np.empty((rows, len(self._numeric_columns)), dtype=np.float64)
            for j, column in enumerate(self._numeric_columns):
                values = features.get(column)
                x[:, j] = np.nan if values is None else as_float(values)
            x = np.where(np.isnan(x) & self._imputed, self._fill, x)
            out[:, self._numeric_slots] = (x - self._mean) / self._scale
        return out


def reference_encoder(preprocessor: Any, feature_columns: list[str]) -> Encoder:
    """scikit-learn's own transform of feature columns (absent ones are missing values)."""

    def reference(features: Columns, rows: int) -> np.ndarray:
        frame = pd.DataFrame({c: features.get(c, np.full(rows, np.nan)) for c in feature_columns})
        return np.asarray(preprocessor.transform(frame), dtype=np.float64)

    return reference


def compile_encoder(preprocessor: Any, feature_columns: list[str]) -> Encoder:
    """The compiled encoder, or scikit-learn's own transform when the pipeline does not compile."""
    reference = reference_encoder(preprocessor, feature_columns)
    try:
        compiled = CompiledEncoder(preprocessor, feature_columns)
        probe = compiled.probe()
        rows = len(next(iter(probe.values())))
        ours, theirs = compiled(probe, rows), reference(probe, rows)
        worst = float(np.nanmax(np.abs(ours - theirs), initial=0.0))
        if worst > 0 or not np.array_equal(np.isnan(ours), np.isnan(theirs)):
            raise TypeError(f"compiled encoder differs from scikit-learn's by {worst:.3g}")
    except (TypeError, AttributeError, ValueError, LookupError) as exc:
        log.warning("encoder not compiled (%s); using scikit-learn's transform", exc)
        return reference
    return compiled


def estimator_threads(estimator: Any) -> int:
    """The threads the estimator's own predict_proba uses (its n_jobs; 0: the library's default)."""
    n_jobs = getattr(estimator, "n_jobs", None)
    if n_jobs is None:
        return 0
    n_jobs = int(n_jobs)
    return n_jobs if n_jobs >= 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def reference_booster(estimator: Any) -> Booster:
    """Positive-class probabilities from the estimator's own predict_proba."""
    names = getattr(estimator, "feature_names_in_", None)

    def reference(x: np.ndarray) -> np.ndarray:
        # Fitted on a frame, the estimator is given one with the fitted column names (a bare
        # array would make scikit-learn warn on every call).
        data: Any = x if names is None or len(names) != x.shape[1] else pd.DataFrame(x, columns=names)
        return np.asarray(estimator.predict_proba(data)[:, 1], dtype=float)

    return reference


def compile_booster(estimator: Any, threads: int = 1) -> Booster:
    """Positive-class probabilities from the bare booster on `threads` threads per call."""
    if hasattr(estimator, "booster_"):  # LightGBM
        booster = estimator.booster_
        iterations = getattr(estimator, "best_iteration_", None) or None

        def lightgbm(x: np.ndarray) -> np.ndarray:
            return np.asarray(booster.predict(x, num_iteration=iterations, num_threads=threads), dtype=float)

        return lightgbm
    if hasattr(estimator, "get_booster"):  # XGBoost
        xgb_booster = estimator.get_booster()
        if threads != estimator_threads(estimator):
            # The thread count is a setting of the booster: another count gets a copy, so the
            # estimator's own predict_proba keeps the one it was fitted with.
            xgb_booster = xgb_booster.copy()
        xgb_booster.set_param({"nthread": threads})
        best = getattr(estimator, "best_iteration", None)
        rounds = (0, int(best) + 1) if best is not None else (0, 0)

        def xgboost(x: np.ndarray) -> np.ndarray:
            return np.asarray(xgb_booster.inplace_predict(x, iteration_range=rounds), dtype=float)

        return xgboost
    return reference_booster(estimator)


def _matrix_probe(width: int, rows: int = 12) -> np.ndarray:
    """Encoded rows of zeros, ones, missing and odd numbers in every column."""
    numbers = np.asarray([np.nan, 0.0, 1.0, -1.5, 1e6, 3.25, -0.0])
    at = (np.arange(rows)[:, None] + np.arange(width)[None, :]) % len(numbers)
    return numbers[at]


class Predictor:
    """A fitted preprocessor and estimator as one call: compiled encoder, then the bare booster.

    `encode` and `predict` are the two halves (the request path keeps the encoded matrix for
    reason codes); `proba` is both. `threads` is per call: 1 for the service's scorer thread.
    """

    def __init__(
        self, preprocessor: Any, estimator: Any, feature_columns: list[str], threads: int = 1
    ) -> None:
        self.preprocessor = preprocessor
        self.estimator = estimator
        self.feature_columns = list(feature_columns)
        self.encode: Encoder = compile_encoder(preprocessor, self.feature_columns)
        self.compiled = isinstance(self.encode, CompiledEncoder)
        # Columns of the encoded matrix, once: the reference encoder would ask scikit-learn per call.
        self.width = (
            self.encode.width
            if isinstance(self.encode, CompiledEncoder)
            else len(preprocessor.get_feature_names_out())
        )
        self.predict: Booster = compile_booster(estimator, threads)
        self.bare_booster = self._check_booster()

    def _check_booster(self) -> bool:
        """Whether the bare booster gives the estimator's probabilities on the probe; if not, the
        estimator's predict_proba replaces it (with a warning)."""
        if not (hasattr(self.estimator, "booster_") or hasattr(self.estimator, "get_booster")):
            return False  # compile_booster gave the estimator's own predict_proba
        reference = reference_booster(self.estimator)
        # End to end on the encoder's probe, so a difference anywhere on the compiled path shows;
        # the rows of odd encoded values cover an encoder that did not compile too.
        ours, theirs = [_matrix_probe(self.width)], [_matrix_probe(self.width)]
        if isinstance(self.encode, CompiledEncoder):
            probe = self.encode.probe()
            rows = len(next(iter(probe.values())))
            ours.insert(0, self.encode(probe, rows))
            theirs.insert(0, reference_encoder(self.preprocessor, self.feature_columns)(probe, rows))
        try:
            got, expected = self.predict(np.vstack(ours)), reference(np.vstack(theirs))
            worst = float(np.max(np.abs(got - expected), initial=0.0))
            if not worst <= PROBABILITY_TOLERANCE:  # also when either holds a NaN
                raise ValueError(f"the bare booster differs from predict_proba by {worst:.3g}")
        except (TypeError, AttributeError, ValueError, LookupError) as exc:
            log.warning("booster not called bare (%s); using the estimator's predict_proba", exc)
            self.predict = reference
            return False
        return True

    def columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray] | None:
        """The frame's feature columns for the compiled encoder, or None when a column's dtype is
        not one the encoder was checked on (a pandas extension dtype: nullable, string, category)."""
        out: dict[str, np.ndarray] = {}
        for column in self.feature_columns:
            if column not in frame:
                continue
            series = frame[column]
            if not isinstance(series.dtype, np.dtype):
                return None
            out[column] = series.to_numpy()
        return out

    def proba(self, features: pd.DataFrame | Columns, rows: int | None = None) -> np.ndarray:
        """Probability of the positive class per row of feature columns (a frame or arrays)."""
        if isinstance(features, pd.DataFrame):
            rows = len(features)
            columns = self.columns(features) if self.compiled else None
            if columns is None:  # scikit-learn's own transform, with its own handling of the dtypes
                frame = features.reindex(columns=self.feature_columns)
                return self.predict(np.asarray(self.preprocessor.transform(frame), dtype=np.float64))
            features = columns
        if rows is None:
            rows = len(next(iter(features.values()))) if features else 0
        return self.predict(self.encode(features, rows))
