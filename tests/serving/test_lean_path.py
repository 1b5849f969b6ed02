"""The lean request path's parts against the scikit-learn and LightGBM originals they replace."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from tabular_mlops.modeling import build_preprocessor
from tabular_mlops.predictor import CompiledEncoder, compile_booster, compile_encoder

from serving.batching import Batcher
from serving.lean import LeanScorer, ScoringInputError


def _training_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue", "violet"], size=rows, p=[0.5, 0.3, 0.19, 0.01])
    size = rng.choice(["S", "M", None], size=rows).astype(object)  # None: a SQL null, kept as such
    amount = rng.normal(100, 20, size=rows)
    amount[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame({"colour": colour, "size": size, "amount": amount, "count": rng.integers(0, 9, rows)})


@pytest.mark.parametrize("scale", [True, False])
def test_compiled_encoder_equals_the_fitted_column_transformer(scale: bool) -> None:
    frame = _training_frame()
    preprocessor = build_preprocessor(["colour", "size"], ["amount", "count"], scale).fit(frame)
    encoder = compile_encoder(preprocessor, list(frame.columns))
    assert isinstance(encoder, CompiledEncoder)  # 'violet' is infrequent: one shared slot
    scoring = pd.DataFrame(
        {
            "colour": ["red", "violet", "never-seen", None, np.nan, "blue"],
            "size": ["M", None, "XL", "S", np.nan, None],
            "amount": [np.nan, 1e9, -3.5, 100.0, 0.0, np.nan],
            "count": [0, 8, 3, 1, 2, 5],
        }
    )
    columns = {c: scoring[c].to_numpy(dtype=object if c in ("colour", "size") else float) for c in scoring}
    expected = np.asarray(preprocessor.transform(scoring), dtype=float)
    assert np.array_equal(encoder(columns, len(scoring)), expected, equal_nan=True)


def test_an_encoder_that_does_not_compile_falls_back_to_scikit_learn() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler

    frame = _training_frame()
    preprocessor = ColumnTransformer([("numeric", MinMaxScaler(), ["amount", "count"])]).fit(frame)
    encoder = compile_encoder(preprocessor, ["amount", "count"])
    assert not isinstance(encoder, CompiledEncoder)
    columns = {"amount": np.array([1.0, 50.0]), "count": np.array([2.0, 3.0])}
    expected = preprocessor.transform(pd.DataFrame(columns))
    assert np.allclose(encoder(columns, 2), expected)


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_bare_booster_call_gives_the_estimator_probabilities(kind: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    if kind == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=200, verbose=-1)
        stop = lightgbm.early_stopping(5, verbose=False)
        model.fit(x[:400], y[:400], eval_X=(x[400:],), eval_y=(y[400:],), callbacks=[stop])
    else:
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=200, early_stopping_rounds=5)
        model.fit(x[:400], y[:400], eval_set=[(x[400:], y[400:])], verbose=False)
    predict = compile_booster(model)
    assert np.allclose(predict(x), model.predict_proba(x)[:, 1], atol=1e-9)


def test_batcher_scores_queued_requests_together_and_isolates_a_failure() -> None:
    batches: list[int] = []

    def score(records: list[dict]) -> tuple[str, np.ndarray]:
        batches.append(len(records))
        if any(r["x"] < 0 for r in records):
            raise ValueError("negative x")
        return "v1", np.array([r["x"] * 2.0 for r in records])

    async def main() -> list:
        batcher = Batcher("m", score, max_rows=100)
        jobs = [batcher.submit([{"x": float(i)}] * (1 + i % 2)) for i in range(6)]
        jobs.append(batcher.submit([{"x": -1.0}]))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        batcher.close()
        return results

    results = asyncio.run(main())
    for i, result in enumerate(results[:6]):
        version, probabilities = result
        assert version == "v1" and probabilities.tolist() == [2.0 * i] * (1 + i % 2)
    assert isinstance(results[6], ValueError)
    # All seven queued before the scorer ran: one batch of 10 records, which failed and was then
    # scored request by request so only the bad one failed.
    assert batches == [10, 1, 2, 1, 2, 1, 2, 1]


def _churn_scorer(rows: int = 300) -> tuple[LeanScorer, list[dict]]:
    """A LeanScorer over the real churn SQL with a small fitted encoder and booster, and its records."""
    import lightgbm
    from tabular_mlops.config import get_model_config
    from tabular_mlops.features import read_sql_folder
    from tabular_mlops.generators.telco import build_telco_frame
    from tabular_mlops.modeling import make_classifier, split_columns

    config = get_model_config("churn")
    frame = build_telco_frame(rows, seed=4)
    y = (frame.pop("Churn") == "Yes").to_numpy(dtype=int)
    frame["TotalCharges"] = pd.to_numeric(frame["TotalCharges"].str.strip().replace("", None))
    classifier = make_classifier(config, read_sql_folder(config.sql_path), [], None, None)
    rows_out = classifier.feature_rows(frame)
    categorical, numeric = split_columns(rows_out, exclude={config.features.entity_key})
    classifier.feature_columns = categorical + numeric
    classifier.preprocessor = build_preprocessor(categorical, numeric, True)
    x = classifier.preprocessor.fit_transform(rows_out[classifier.feature_columns])
    classifier.estimator = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return LeanScorer(config, classifier), records


def test_the_prepared_feature_query_reads_each_batchs_own_rows() -> None:
    """The query is prepared once per session over table slots: a later batch, a smaller one, the
    same records in another order and a batch after a failing one each score as if alone."""
    lean, records = _churn_scorer()
    first, second = records[:20], records[20:25]
    alone = np.concatenate([lean.score([r]) for r in first + second])
    assert np.array_equal(lean.score(first), alone[:20])
    assert np.array_equal(lean.score(second), alone[20:])
    assert np.array_equal(lean.score(first[::-1]), alone[:20][::-1])
    with pytest.raises(ScoringInputError):  # tenure overflows the SQL's integer arithmetic
        lean.score([{**first[0], "tenure": 2**62, "TotalCharges": 1e308}])
    assert np.array_equal(lean.score(first + second), alone)
    features = lean.features(second)
    assert list(features) == list(lean.features([]))  # the final view's columns, in its order
    assert features["customerID"].tolist() == [str(i) for i in range(5)]  # batch-local keys
    lean.close()
