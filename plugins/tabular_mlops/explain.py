"""Reason codes: exact TreeSHAP contributions from the model's own trees, per source field.

`Explainer` takes the fitted parts of a `modeling.TabularClassifier` and the encoded float64
matrix its booster scores (the output of `tabular_mlops.predictor`'s compiled encoder, or
`Explainer.encode` of a feature frame). The booster computes the TreeSHAP values itself (XGBoost
`pred_contribs`, LightGBM `pred_contrib`) over the trees `predictor.compile_booster` calls (up to
the best iteration), so a row's contributions plus its base value add up to the margin whose
sigmoid is its probability. One-hot columns are summed back to the field they encode: a reason
names NAME_INCOME_TYPE, never one category's slot, and an infrequent category's shared slot counts
for its field like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from tabular_mlops.config import ModelConfig

RAISES = "raises risk"
LOWERS = "lowers risk"
SAMPLE_ROWS = 2000  # rows the evaluation explains: mean |SHAP| settles well before that
Matrix = Callable[[np.ndarray], np.ndarray]


def _one_hot_widths(encoder: Any, count: int) -> list[int]:
    """Encoded columns per input column: frequent categories, plus one shared infrequent slot."""
    if encoder.drop is not None:
        raise TypeError("one-hot encoders with `drop` are not supported")
    infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * count
    widths = []
    for categories, rare in zip(encoder.categories_, infrequent, strict=True):
        shared = 0 if rare is None else len(rare)
        widths.append(len(categories) - shared + (1 if shared else 0))
    return widths


def encoded_groups(preprocessor: Any) -> list[tuple[str, int]]:
    """(source field, number of encoded columns) in the column order of the fitted ColumnTransformer."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    groups: list[tuple[str, int]] = []
    for name, transformer, columns in preprocessor.transformers_:
        if (
            name == "remainder"
            or (isinstance(transformer, str) and transformer == "drop")
            or not len(columns)
        ):
            continue
        columns = list(columns)
        last = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
        if isinstance(last, OneHotEncoder):
            groups += zip(columns, _one_hot_widths(last, len(columns)), strict=True)
        elif isinstance(transformer, str):  # "passthrough" left as a string by older scikit-learn
            groups += [(column, 1) for column in columns]
        else:  # one column each, but an imputer drops a column that was empty at fit time
            kept = set(transformer.get_feature_names_out(columns))
            groups += [(column, 1) for column in columns if column in kept]
    return groups


def _xgboost_calls(estimator: Any, threads: int) -> tuple[Matrix, Matrix]:
    """(contributions, margin) of an XGBClassifier over its best iteration's trees."""
    import xgboost

    # A copy, so the thread setting stays ours and the pyfunc's own booster is left untouched.
    booster = estimator.get_booster().copy()
    booster.set_param({"nthread": threads})
    best = getattr(estimator, "best_iteration", None)
    rounds = (0, int(best) + 1) if best is not None else (0, 0)  # as predictor.compile_booster

    def contributions(x: np.ndarray) -> np.ndarray:
        matrix = xgboost.DMatrix(x, nthread=threads)
        # The encoded matrix has no column names; its order is the encoder's, checked by width.
        return booster.predict(matrix, pred_contribs=True, iteration_range=rounds, validate_features=False)

    def margin(x: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(
            x, iteration_range=rounds, predict_type="margin", validate_features=False
        )

    return contributions, margin


def _lightgbm_calls(estimator: Any, threads: int) -> tuple[Matrix, Matrix]:
    """(contributions, margin) of an LGBMClassifier over its best iteration's trees."""
    booster = estimator.booster_
    iterations = getattr(estimator, "best_iteration_", None) or None  # as predictor.compile_booster

    def contributions(x: np.ndarray) -> np.ndarray:
        return booster.predict(x, num_iteration=iterations, pred_contrib=True, num_threads=threads)

    def margin(x: np.ndarray) -> np.ndarray:
        return booster.predict(x, num_iteration=iterations, raw_score=True, num_threads=threads)

    return contributions, margin


def _json_value(value: Any) -> Any:
    """A feature value as JSON takes it: None for missing (NaN, None, pd.NA) or infinite."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value if isinstance(value, str) else str(value)


class Explainer:
    """TreeSHAP reason codes of one fitted model, per source field.

    `threads` is 1 for serving (it runs on the request's scoring thread); batch jobs may pass more.
    """

    def __init__(
        self,
        preprocessor: Any,
        estimator: Any,
        feature_columns: list[str],
        descriptions: Mapping[str, str] | None = None,
        threads: int = 1,
    ) -> None:
        groups = encoded_groups(preprocessor)
        self.fields: list[str] = [field for field, _ in groups]
        unknown = sorted(set(self.fields) - set(feature_columns))
        if unknown:
            raise ValueError(f"the encoder reads columns that are not feature columns: {unknown[:5]}")
        widths = np.asarray([width for _, width in groups], dtype=np.intp)
        self.width = int(widths.sum())
        expected = len(preprocessor.get_feature_names_out())
        if self.width != expected:
            raise TypeError(f"{self.width} encoded columns mapped to fields, the encoder makes {expected}")
        self._starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.intp)
        self.descriptions = {field: (descriptions or {}).get(field, field) for field in self.fields}
        self.preprocessor = preprocessor
        self.feature_columns = list(feature_columns)
        if hasattr(estimator, "booster_"):
            self._contributions, self._margin = _lightgbm_calls(estimator, threads)
        elif hasattr(estimator, "get_booster"):
            self._contributions, self._margin = _xgboost_calls(estimator, threads)
        else:
            raise TypeError(f"no TreeSHAP for {type(estimator).__name__}: XGBoost or LightGBM only")

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"expected an encoded matrix of {self.width} columns, got shape {x.shape}")
        return x

    def encode(self, features: pd.DataFrame) -> np.ndarray:
        """The encoded float64 matrix of a feature frame, as the pyfunc's preprocessor makes it."""
        return np.asarray(self.preprocessor.transform(features[self.feature_columns]), dtype=np.float64)

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x fields TreeSHAP values in log-odds, base value per row) for an encoded matrix."""
        x = self._checked(x)
        if not len(x):
            return np.zeros((0, len(self.fields))), np.zeros(0)
        raw = np.asarray(self._contributions(x), dtype=np.float64).reshape(len(x), -1)
        if raw.shape[1] != self.width + 1:
            raise ValueError(f"the booster gave {raw.shape[1] - 1} contributions for {self.width} columns")
        if not self.fields:
            return np.zeros((len(x), 0)), raw[:, -1].copy()
        # Each field's encoded columns are adjacent, so one reduceat sums them back.
        return np.add.reduceat(raw[:, :-1], self._starts, axis=1), raw[:, -1].copy()

    def margin(self, x: np.ndarray) -> np.ndarray:
        """The model's raw margin (log-odds) per row, from the same trees as the contributions."""
        x = self._checked(x)
        return np.asarray(self._margin(x), dtype=np.float64).reshape(-1) if len(x) else np.zeros(0)

    def reasons(
        self,
        x: np.ndarray,
        values: Mapping[str, np.ndarray] | None,
        k: int,
        rows: list[int] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Per row (all, or `rows` of x and values), its k largest contributions by size.

        Each reason is {field, description, value, contribution, direction}; `value` is the row's
        value of the field in `values` (JSON-safe, None when missing or not given). A field that
        moved nothing is no reason, so a row may get fewer than k.
        """
        chosen = list(range(len(x))) if rows is None else list(rows)
        k = min(max(int(k), 0), len(self.fields))
        if not chosen or k == 0:
            return [[] for _ in chosen]
        contributions, _ = self.contributions(np.asarray(x)[chosen])
        size = np.abs(contributions)
        if k < size.shape[1]:
            top = np.argpartition(-size, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(size.shape[1]), size.shape)
        order = np.argsort(-np.take_along_axis(size, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out = []
        for i, row in enumerate(chosen):
            reasons = []
            for j in top[i]:
                contribution = float(contributions[i, j])
                if contribution == 0.0:
                    continue
                field = self.fields[j]
                column = None if values is None else values.get(field)
                reasons.append(
                    {
                        "field": field,
                        "description": self.descriptions[field],
                        "value": None if column is None else _json_value(column[row]),
                        "contribution": contribution,
                        "direction": RAISES if contribution > 0 else LOWERS,
                    }
                )
            out.append(reasons)
        return out


def explainer_for(classifier: Any, config: ModelConfig, threads: int = 1) -> Explainer:
    """The Explainer of a TabularClassifier, with its model's plain-word field descriptions."""
    from tabular_mlops.describe import describe_fields

    return Explainer(
        classifier.preprocessor,
        classifier.estimator,
        classifier.feature_columns,
        describe_fields(config, classifier.feature_columns),
        threads,
    )


def _value_text(value: Any) -> str:
    """A feature value short enough for a sentence."""
    if value is None:
        return "missing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def reason_text(reason: Mapping[str, Any]) -> str:
    """One reason as a sentence: `EXT_SOURCE_3 = 0.12 lowers risk (Normalized score from ...)`."""
    text = f"{reason['field']} = {_value_text(reason['value'])} {reason['direction']}"
    description = reason.get("description")
    return f"{text} ({description})" if description and description != reason["field"] else text


def reason_columns(
    classifier: Any, explainer: Explainer, model_input: pd.DataFrame, k: int
) -> dict[str, list[str | None]]:
    """reason_1..reason_k for each input row as sentences (None past a row's last reason).

    The rows go through the classifier's own feature step and encoder, as its predict does.
    """
    features = classifier.features(model_input)
    values = {field: features[field].to_numpy() for field in explainer.fields}
    reasons = explainer.reasons(explainer.encode(features), values, k)
    return {
        f"reason_{i + 1}": [reason_text(row[i]) if i < len(row) else None for row in reasons]
        for i in range(k)
    }


@dataclass(frozen=True)
class Explanation:
    """TreeSHAP values of a sample of rows per field, with the values that colour a summary plot."""

    fields: list[str]
    descriptions: dict[str, str]
    contributions: np.ndarray  # rows x fields, log-odds
    values: np.ndarray  # rows x fields as numbers; NaN for a missing value or a category

    def drivers(self, top: int = 20) -> list[dict[str, Any]]:
        """The `top` fields by mean |SHAP| over the rows, largest first."""
        size = np.abs(self.contributions)
        mean = size.mean(axis=0) if len(size) else np.zeros(len(self.fields))
        order = np.argsort(-mean, kind="stable")[:top]
        return [
            {
                "field": self.fields[j],
                "description": self.descriptions.get(self.fields[j], self.fields[j]),
                "mean_abs_shap": float(mean[j]),
            }
            for j in order
        ]


def explain_rows(
    classifier: Any, config: ModelConfig, rows: pd.DataFrame, limit: int = SAMPLE_ROWS, threads: int = 1
) -> Explanation:
    """TreeSHAP values of the rows (model input), or of a seeded sample of `limit` of them."""
    import pandas as pd

    from tabular_mlops.training import signature_frame

    if len(rows) > limit:
        rows = rows.sample(n=limit, random_state=config.split.seed)
    features = classifier.features(signature_frame(rows))
    explainer = explainer_for(classifier, config, threads)
    contributions, _ = explainer.contributions(explainer.encode(features))
    numbers = [
        pd.to_numeric(features[f], errors="coerce").to_numpy(dtype=np.float64)
        if features[f].dtype.kind in "biuf"
        else np.full(len(features), np.nan)
        for f in explainer.fields
    ]
    values = np.column_stack(numbers) if numbers else np.empty((len(features), 0))
    return Explanation(explainer.fields, explainer.descriptions, contributions, values)
