"""The lean request path's parts against the scikit-learn and LightGBM originals they replace."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from tabular_mlops.modeling import build_preprocessor

from serving.batching import Batcher
from serving.lean import CompiledEncoder, compile_booster, compile_encoder


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
        model.fit(x[:400], y[:400], eval_set=[(x[400:], y[400:])], callbacks=[stop])
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
