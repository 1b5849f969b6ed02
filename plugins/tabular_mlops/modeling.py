"""The model that gets logged: preprocessing and booster in one MLflow pyfunc.

`TabularClassifier` takes what the outside world has (the raw entity record for churn, the feature
store row for credit_risk), runs the model's own SQL when its input is raw, encodes categories with
the encoder fitted at training time (unseen or missing categories become all-zero one-hot columns,
so columns never shift) and returns the probability of the positive class. It scores through a
`predictor.Predictor` (the compiled encoder and the bare booster the service calls too), built on
first use and never pickled.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from tabular_mlops.config import ModelConfig, ModelSpec
from tabular_mlops.predictor import MISSING, Predictor, estimator_threads

PROBABILITY = "probability"


def split_columns(frame: pd.DataFrame, exclude: set[str]) -> tuple[list[str], list[str]]:
    """Categorical (text) and numeric feature columns of a frame, minus the excluded ones."""
    categorical: list[str] = []
    numeric: list[str] = []
    for column in frame.columns:
        if column in exclude:
            continue
        kind = frame[column].dtype.kind
        (numeric if kind in "biuf" else categorical).append(column)
    return categorical, numeric


def build_preprocessor(categorical: list[str], numeric: list[str], scale_numeric: bool) -> Any:
    """One-hot for categories (unknown -> all zeros), numbers passed through or standardised."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encoder = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING),
        OneHotEncoder(handle_unknown="ignore", min_frequency=5, sparse_output=False, dtype=np.float32),
    )
    numbers: Any = "passthrough"
    if scale_numeric:
        numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    transformer = ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", numbers, numeric)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return transformer.set_output(transform="pandas")


def positive_weight(spec: ModelSpec, y: np.ndarray) -> float:
    """Weight of the positive class from the configured imbalance handling."""
    positives = max(int(y.sum()), 1)
    ratio = (len(y) - positives) / positives
    return {"none": 1.0, "balanced": ratio, "sqrt": float(np.sqrt(ratio))}[spec.imbalance]


def train_threads() -> int:
    """Threads per training task (MLOPS_TRAIN_THREADS, default 1).

    Celery runs several tasks per worker and OpenMP threads spin while they wait: measured here,
    LightGBM on 5,000 rows took 0.66 s with one thread and 19.5 s with two while another process
    held one of the two cores. Raise it on a worker that runs one task at a time.
    """
    return max(1, int(os.environ.get("MLOPS_TRAIN_THREADS", "1")))


def build_estimator(spec: ModelSpec, pos_weight: float, seed: int) -> Any:
    """XGBoost or LightGBM classifier with the YAML's parameters and early stopping on log loss."""
    params = dict(spec.params)
    params.setdefault("n_jobs", train_threads())
    if spec.type == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            **params,
            scale_pos_weight=pos_weight,
            # Early stopping watches the last metric: log loss. AUC flattens early while the
            # probabilities are still far from calibrated (stopping on it left churn at 30 trees).
            eval_metric=["auc", "logloss"],
            early_stopping_rounds=spec.early_stopping_rounds,
            random_state=seed,
        )
    from lightgbm import LGBMClassifier

    params.setdefault("verbose", -1)
    return LGBMClassifier(**params, scale_pos_weight=pos_weight, random_state=seed)


def fit_estimator(
    spec: ModelSpec, estimator: Any, x_train: Any, y_train: Any, x_valid: Any, y_valid: Any
) -> int:
    """Fit with early stopping on the validation split; return the best iteration count."""
    if spec.type == "xgboost":
        estimator.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], verbose=False)
        return int(estimator.best_iteration) + 1
    import lightgbm

    estimator.fit(
        x_train,
        y_train,
        # eval_X/eval_y: LightGBM 4.7 deprecates eval_set for the scikit-learn API.
        eval_X=(x_valid,),
        eval_y=(y_valid,),
        eval_metric=["binary_logloss", "auc"],
        # first_metric_only: stop on the objective's log loss, not on the AUC reported beside it.
        callbacks=[
            lightgbm.early_stopping(spec.early_stopping_rounds, first_metric_only=True, verbose=False)
        ],
    )
    return int(estimator.best_iteration_ or estimator.n_estimators)


def feature_importance(estimator: Any, names: list[str]) -> pd.Series:
    """Share of the total split gain per encoded feature, trees up to the best iteration, largest first.

    Total gain for both boosters: LightGBM's default `feature_importances_` counts splits and
    XGBoost's averages the gain per split, so a feature split often for little, or once for a lot,
    would weigh the drift headline far from what it does for the model's predictions.
    """
    if hasattr(estimator, "booster_"):  # LightGBM: its best iteration is used when there is one
        values = np.asarray(estimator.booster_.feature_importance(importance_type="gain"), dtype=float)
    else:
        booster = estimator.get_booster()
        try:
            booster = booster[: estimator.best_iteration + 1]
        except AttributeError:  # trained without early stopping: every tree counts
            pass
        score = booster.get_score(importance_type="total_gain")
        keys = booster.feature_names or [f"f{i}" for i in range(len(names))]
        values = np.asarray([score.get(k, 0.0) for k in keys], dtype=float)
    total = values.sum()
    return pd.Series(values / total if total > 0 else values, index=names).sort_values(ascending=False)


class TabularClassifier(PythonModel):
    """MLflow pyfunc: input record(s) -> probability of the positive class."""

    def __init__(
        self,
        model_name: str,
        input_kind: str,
        entity_table: str,
        entity_key: str,
        sql: dict[str, str] | None,
        feature_columns: list[str],
        preprocessor: Any,
        estimator: Any,
    ) -> None:
        self.model_name = model_name
        self.input_kind = input_kind
        self.entity_table = entity_table
        self.entity_key = entity_key
        self.sql = sql
        self.feature_columns = feature_columns
        self.preprocessor = preprocessor
        self.estimator = estimator
        self._predictor: Predictor | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What pickling keeps: the fitted parts, not the compiled predictor (closures over boosters,
        rebuilt from the parts on first use)."""
        state = self.__dict__.copy()
        state.pop("_predictor", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle, also one logged before the predictor existed (registered versions)."""
        self.__dict__.update(state)
        self._predictor = None

    def predictor(self) -> Predictor:
        """The compiled predictor of the fitted parts: built on first use, again if a part changes."""
        built = getattr(self, "_predictor", None)
        if (
            built is None
            or built.preprocessor is not self.preprocessor
            or built.estimator is not self.estimator
            or built.feature_columns != list(self.feature_columns)
        ):
            # The estimator's own thread count, as its predict_proba used: batch scoring keeps
            # the parallelism it was configured with (the service builds its own, one thread).
            threads = estimator_threads(self.estimator)
            built = Predictor(self.preprocessor, self.estimator, self.feature_columns, threads)
            self._predictor = built
        return built

    def feature_rows(self, model_input: pd.DataFrame, session: Any = None) -> pd.DataFrame:
        """All feature-table columns for the input: the model's SQL for raw records, else the input.

        `session` (a features.FeatureSession over this model's SQL) reuses prepared views.
        """
        frame = pd.DataFrame(model_input)
        if not frame.index.equals(pd.RangeIndex(len(frame))):  # reset_index copies every column
            frame = frame.reset_index(drop=True)
        if self.input_kind == "raw":
            from tabular_mlops.features import features_from_frames

            frames = {self.entity_table: frame}
            built = (
                session.run(frames) if session is not None else features_from_frames(self.sql or {}, frames)
            )
            keys = frame[self.entity_key] if self.entity_key in frame else None
            if keys is not None and keys.notna().all() and keys.is_unique and len(built) == len(frame):
                # SQL keeps the entity key, not necessarily row order: restore the caller's order.
                built = built.set_index(self.entity_key).loc[keys.to_numpy()].reset_index()
            frame = built
        return frame

    def features(self, model_input: pd.DataFrame, session: Any = None) -> pd.DataFrame:
        """The model's feature columns for the input; absent ones are missing values, not errors."""
        frame = self.feature_rows(model_input, session)
        missing = [c for c in self.feature_columns if c not in frame.columns]
        for column in missing:
            frame[column] = np.nan
        return frame[self.feature_columns]

    def predict_proba(self, model_input: pd.DataFrame, session: Any = None) -> np.ndarray:
        """Probability of the positive class per input row."""
        return self.predictor().proba(self.features(model_input, session))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """pyfunc entry point: a frame with one `probability` column."""
        return pd.DataFrame({PROBABILITY: self.predict_proba(model_input)})


def make_classifier(
    config: ModelConfig,
    sql: dict[str, str] | None,
    feature_columns: list[str],
    preprocessor: Any,
    estimator: Any,
) -> TabularClassifier:
    """The pyfunc for a model config and its fitted parts."""
    return TabularClassifier(
        model_name=config.name,
        input_kind=config.features.model_input,
        entity_table=config.data.label_table,
        entity_key=config.features.entity_key,
        # Feature-row models carry their SQL too: batch scoring builds features with the very SQL
        # the version was trained with, not whatever include/sql holds on the day it scores.
        sql=sql,
        feature_columns=feature_columns,
        preprocessor=preprocessor,
        estimator=estimator,
    )
