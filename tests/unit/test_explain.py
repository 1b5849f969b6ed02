"""Reason codes: per-field TreeSHAP adds up to the margin; reasons, plain words, batch columns, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tabular_mlops.config import ModelSpec, get_model_config
from tabular_mlops.describe import Describer, describer_for, descriptions_path
from tabular_mlops.explain import LOWERS, RAISES, Explainer, explain_rows, reason_text
from tabular_mlops.modeling import (
    TabularClassifier,
    build_estimator,
    build_preprocessor,
    fit_estimator,
    make_classifier,
    split_columns,
)

from tests.helpers import fit_feature_classifier

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"
RARE = ["rare_a", "rare_b"]  # fewer than min_frequency (5) rows each: one shared infrequent slot
DESCRIPTIONS = {"segment": "Customer segment", "income": "Yearly income"}


def _frame(rows: int = 1500, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Mixed features with missing values and two infrequent categories; labels from a known logit."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(["retail", "small_business", "corporate"], size=rows, p=[0.6, 0.3, 0.1]).astype(
        object
    )
    segment[:8] = RARE * 4
    segment[8:20] = np.nan  # imputed as "__missing__", a category of its own
    frame = pd.DataFrame(
        {
            "segment": segment,
            "income": rng.lognormal(10, 0.5, rows),
            "age": rng.integers(18, 80, rows).astype(float),
            "noise": rng.normal(size=rows),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "income"] = np.nan
    logit = (
        -1.0
        + 1.2 * (frame["segment"] == "small_business")
        - 0.8 * (frame["segment"] == "corporate")
        - 0.7 * np.log(frame["income"].fillna(20_000) / 20_000)
        + 0.03 * (50 - frame["age"])
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return frame, y


def _classifier(kind: str, scale: bool) -> tuple[TabularClassifier, pd.DataFrame]:
    """A classifier fitted through tabular_mlops.modeling with early stopping, as training fits one."""
    frame, y = _frame()
    params = {"n_estimators": 400, "learning_rate": 0.1, "n_jobs": 1}
    params.update({"max_depth": 4} if kind == "xgboost" else {"num_leaves": 15, "min_child_samples": 5})
    spec = ModelSpec(type=kind, registered_name="t", early_stopping_rounds=10, params=params)
    classifier, best = fit_feature_classifier(frame, y, spec, scale, train_rows=1000)
    assert best < 400  # early stopping cut trees: contributions must not count the ones after it
    return classifier, frame


@pytest.fixture(scope="module", params=[("xgboost", False), ("lightgbm", True)], ids=["xgboost", "lightgbm"])
def fitted(request: pytest.FixtureRequest) -> tuple[TabularClassifier, pd.DataFrame, Explainer, np.ndarray]:
    classifier, frame = _classifier(*request.param)
    explainer = Explainer(
        classifier.preprocessor, classifier.estimator, classifier.feature_columns, DESCRIPTIONS
    )
    return classifier, frame, explainer, explainer.encode(frame)


def _raw_contributions(estimator: Any, x: np.ndarray) -> np.ndarray:
    """The booster's own per-encoded-column TreeSHAP values (bias column last), best iteration only."""
    if hasattr(estimator, "booster_"):
        return estimator.booster_.predict(x, pred_contrib=True, num_iteration=estimator.best_iteration_)
    import xgboost

    booster = estimator.get_booster()
    rounds = (0, estimator.best_iteration + 1)
    return booster.predict(
        xgboost.DMatrix(x), pred_contribs=True, iteration_range=rounds, validate_features=False
    )


def _all_trees_margin(estimator: Any, x: np.ndarray) -> np.ndarray:
    return estimator.get_booster().inplace_predict(
        x, iteration_range=(0, 0), predict_type="margin", validate_features=False
    )


def test_contributions_add_up_to_the_margin_of_the_probability(fitted) -> None:
    classifier, frame, explainer, x = fitted
    contributions, base = explainer.contributions(x)
    margin = explainer.margin(x)
    assert contributions.shape == (len(frame), len(explainer.fields))
    np.testing.assert_allclose(contributions.sum(axis=1) + base, margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), classifier.predict_proba(frame), rtol=0, atol=1e-6)
    estimator = classifier.estimator
    if hasattr(estimator, "booster_"):  # LightGBM's fit keeps only the trees up to the best iteration
        assert estimator.booster_.current_iteration() == estimator.best_iteration_
    else:  # XGBoost keeps them all: counting the ones after the best would fail the checks above
        assert np.abs(_all_trees_margin(estimator, x) - margin).max() > 1e-3


def test_one_hot_columns_are_summed_back_to_their_field(fitted) -> None:
    classifier, _, explainer, x = fitted
    names = list(classifier.preprocessor.get_feature_names_out())
    assert "segment_infrequent_sklearn" in names and "segment_rare_a" not in names
    assert explainer.fields == ["segment", "income", "age", "noise"] and explainer.width == len(names)
    raw = _raw_contributions(classifier.estimator, x)
    contributions, base = explainer.contributions(x)
    one_hot = [i for i, name in enumerate(names) if name.startswith("segment_")]
    assert len(one_hot) == 5  # retail, small_business, corporate, __missing__, the infrequent slot
    np.testing.assert_allclose(contributions[:, 0], raw[:, one_hot].sum(axis=1), atol=1e-9)
    for field in ("income", "age", "noise"):
        column = names.index(field)
        np.testing.assert_allclose(contributions[:, explainer.fields.index(field)], raw[:, column], atol=1e-9)
    np.testing.assert_allclose(base, raw[:, -1], atol=1e-9)
    assert np.abs(contributions[:, 0]).max() > 0.1  # the segment matters, so the sum is tested


def test_reasons_are_the_largest_contributions_with_signs_values_and_words(fitted) -> None:
    _, frame, explainer, x = fitted
    values = {column: frame[column].to_numpy() for column in frame.columns}
    contributions, _ = explainer.contributions(x)
    reasons = explainer.reasons(x, values, 3)
    assert len(reasons) == len(frame)
    for row, found in enumerate(reasons[:300]):
        assert len(found) == 3
        sizes = [abs(r["contribution"]) for r in found]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == pytest.approx(np.abs(contributions[row]).max())
        for reason in found:
            field = reason["field"]
            assert reason["contribution"] == pytest.approx(contributions[row, explainer.fields.index(field)])
            assert reason["direction"] == (RAISES if reason["contribution"] > 0 else LOWERS)
            assert reason["description"] == DESCRIPTIONS.get(field, field)
            expected = frame.at[row, field]
            assert reason["value"] == (None if pd.isna(expected) else expected)
    directions = {r["direction"] for found in reasons for r in found}
    assert directions == {RAISES, LOWERS}
    json.dumps(reasons, allow_nan=False)  # NaN values became None
    assert any(r["value"] is None for found in reasons for r in found)


def test_reasons_of_chosen_rows_match_the_full_run(fitted) -> None:
    _, frame, explainer, x = fitted
    values = {column: frame[column].to_numpy() for column in frame.columns}
    everything = explainer.reasons(x, values, 2)
    chosen = [5, 0, 11]
    assert explainer.reasons(x, values, 2, rows=chosen) == [everything[i] for i in chosen]
    assert explainer.reasons(x, None, 0) == [[] for _ in range(len(x))]
    assert all(r["value"] is None for r in explainer.reasons(x[:3], None, 2)[0])
    assert len(explainer.reasons(x[:1], values, 50)[0]) <= len(explainer.fields)
    assert explainer.reasons(x, values, 2, rows=[]) == []
    contributions, base = explainer.contributions(x[:0])
    assert contributions.shape == (0, len(explainer.fields)) and base.shape == (0,)


def test_a_matrix_of_another_width_is_refused(fitted) -> None:
    _, _, explainer, x = fitted
    with pytest.raises(ValueError, match="encoded matrix"):
        explainer.contributions(x[:, :-1])


def test_reason_text_reads_as_a_sentence() -> None:
    reason = {
        "field": "EXT_SOURCE_3",
        "description": "Normalized score from external data source",
        "value": 0.1234,
        "contribution": -0.4,
        "direction": LOWERS,
    }
    assert (
        reason_text(reason) == "EXT_SOURCE_3 = 0.123 lowers risk (Normalized score from external data source)"
    )
    bare = {**reason, "field": "AMT_CREDIT", "description": "AMT_CREDIT", "value": 450000.0}
    assert reason_text(bare) == "AMT_CREDIT = 450,000 lowers risk"
    assert reason_text({**reason, "value": None}).startswith("EXT_SOURCE_3 = missing lowers risk")


def test_drivers_rank_fields_by_mean_absolute_shap(fitted) -> None:
    classifier, frame, _, _ = fitted
    config = get_model_config("churn", CONFIGS)
    explanation = explain_rows(classifier, config, frame, limit=500)
    assert explanation.contributions.shape == (500, 4) and explanation.values.shape == (500, 4)
    assert np.isnan(explanation.values[:, 0]).all()  # a category colours nothing
    drivers = explanation.drivers(top=3)
    means = [d["mean_abs_shap"] for d in drivers]
    assert means == sorted(means, reverse=True) and len(drivers) == 3
    assert drivers[0]["mean_abs_shap"] == pytest.approx(np.abs(explanation.contributions).mean(axis=0).max())
    assert "noise" not in [d["field"] for d in drivers[:2]]


# --- plain words ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit_feature_names(home_credit_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every feature column the credit_risk SQL builds from the generated tables."""
    from tabular_mlops.features import build_feature_table
    from tabular_mlops.ingest import ingest_raw_tables

    root = tmp_path_factory.mktemp("explain_features")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        config = get_model_config("credit_risk", CONFIGS)
        report = ingest_raw_tables(config, source=str(home_credit_raw), run_id="explain")
        result = build_feature_table(config, Path(str(report.interim_dir)), root / "features")
    columns = list(pd.read_parquet(result.path).columns)
    return [c for c in columns if c != config.features.entity_key]


def test_every_credit_risk_feature_gets_a_sentence(credit_feature_names: list[str]) -> None:
    describer = describer_for(get_model_config("credit_risk", CONFIGS))
    assert len(credit_feature_names) > 400
    bare = [name for name in credit_feature_names if describer.describe(name) is None]
    assert bare == []
    texts = {name: describer.plain(name) for name in credit_feature_names}
    assert texts["BUREAU_ACTIVE_AMT_CREDIT_SUM_DEBT_MEAN"] == (
        "Mean over the applicant's active Credit Bureau credits of: current debt on Credit Bureau credit"
    )
    assert texts["EXT_SOURCE_3"] == "Normalized score from external data source"
    assert texts["CREDIT_INCOME_RATIO"] == "Credit amount of the loan divided by the client's income"
    assert texts["BUREAU_COUNT"] == "Number of the applicant's Credit Bureau credits"
    assert texts["PREV_REFUSED_APP_CREDIT_RATIO_VAR"].startswith(
        "Variance over the applicant's refused previous Home Credit applications of: amount asked for"
    )
    assert texts["BUREAU_BB_STATUS_5_SHARE_MEAN"].endswith(
        "(more than 120 days past due, sold or written off)"
    )
    assert texts["PREV_CONTRACT_STATUS_REFUSED_SHARE"].startswith(
        "Share of the applicant's previous Home Credit applications with 'refused' as: contract status"
    )
    assert (
        texts["APARTMENTS_AVG"]
        == "Average apartment size of the building where the client lives (normalized)"
    )
    # A feature is never described as another one: the building columns no longer share one text.
    building = [texts[n] for n in credit_feature_names if n.endswith(("_AVG", "_MEDI", "_MODE"))]
    assert len(set(building)) == len(building)


def test_an_unknown_name_falls_back_to_itself() -> None:
    describer = Describer([("bureau.csv", "AMT_CREDIT_SUM", "Current credit amount")])
    assert (
        describer.describe("BUREAU_AMT_CREDIT_SUM_MAX")
        == "Maximum over the applicant's Credit Bureau credits of: current credit amount"
    )
    assert describer.describe("BUREAU_AMT_NOT_THERE_MAX") is None
    assert describer.plain("SOMETHING_NEW") == "SOMETHING_NEW"
    # Without the source table the naming scheme does not apply: a Telco-like file stays literal.
    assert Describer([("customers", "tenure", "Months")]).describe("BUREAU_tenure_MAX") is None


def test_shipped_description_files_are_utf8_and_cover_churn(telco_raw: Path) -> None:
    from tabular_mlops.features import features_from_frames, read_sql_folder

    credit = descriptions_path(get_model_config("credit_risk", CONFIGS))
    assert credit is not None and "…" in credit.read_text(encoding="utf-8")  # cp1252's 0x85, decoded
    config = get_model_config("churn", CONFIGS)
    customers = pd.read_csv(telco_raw / config.data.tables["customers"].file, dtype=str)
    built = features_from_frames(read_sql_folder(config.sql_path), {"customers": customers.head(50)})
    describer = describer_for(config)
    names = [c for c in built.columns if c != config.features.entity_key]
    assert [n for n in names if describer.describe(n) is None] == []


# --- batch reason columns ------------------------------------------------------------------------


class _Pyfunc:
    """What mlflow.pyfunc.load_model returns, for a classifier in memory."""

    def __init__(self, classifier: TabularClassifier) -> None:
        self.classifier = classifier

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.classifier.predict(None, frame)

    def unwrap_python_model(self) -> TabularClassifier:
        return self.classifier


def _churn_classifier(telco_raw: Path) -> tuple[Any, pd.DataFrame]:
    """A small churn LightGBM fitted through modeling on generated customers, and rows to score."""
    from tabular_mlops.features import read_sql_folder

    config = get_model_config("churn", CONFIGS)
    customers = pd.read_csv(telco_raw / config.data.tables["customers"].file, dtype=str)
    customers["tenure"] = customers["tenure"].astype(int)
    customers["SeniorCitizen"] = customers["SeniorCitizen"].astype(int)
    for column in ("MonthlyCharges", "TotalCharges"):
        customers[column] = pd.to_numeric(customers[column], errors="coerce")
    y = (customers.pop("Churn") == "Yes").astype(int).to_numpy()
    classifier = make_classifier(config, read_sql_folder(config.sql_path), [], None, None)
    rows = classifier.feature_rows(customers)
    categorical, numeric = split_columns(rows, exclude={config.features.entity_key})
    classifier.feature_columns = categorical + numeric
    preprocessor = build_preprocessor(categorical, numeric, True)
    x = preprocessor.fit_transform(rows[classifier.feature_columns])
    spec = config.model.model_copy(update={"params": {"n_estimators": 60, "num_leaves": 7, "n_jobs": 1}})
    estimator = build_estimator(spec, 1.0, 0)
    fit_estimator(spec, estimator, x.iloc[:1500], y[:1500], x.iloc[1500:], y[1500:])
    classifier.preprocessor, classifier.estimator = preprocessor, estimator
    return classifier, customers.iloc[1500:1800].reset_index(drop=True)


def _score(config: Any, classifier: Any, rows: pd.DataFrame, folder: Path) -> pd.DataFrame:
    from tabular_mlops.scoring import PinnedModel, score_chunk

    rows.to_parquet(folder / "chunk.parquet", index=False)
    chunk = {"index": 0, "uri": str(folder / "chunk.parquet"), "rows": len(rows)}
    staging = folder / "staging"
    pinned = PinnedModel("churn-classifier", "1")
    stamp = "2026-11-20T02:00:00+00:00"
    score_chunk(config, pinned, chunk, str(staging), 0.5, "run", stamp, model=_Pyfunc(classifier))
    return pd.read_parquet(staging / "scored" / "part-00000.parquet")


def test_batch_scoring_writes_the_top_reasons_in_plain_words(telco_raw: Path, tmp_path: Path) -> None:
    from tabular_mlops.explain import explainer_for
    from tabular_mlops.training import signature_frame

    base = get_model_config("churn", CONFIGS)
    classifier, rows = _churn_classifier(telco_raw)
    plain = _score(base, classifier, rows, tmp_path)
    assert not any(c.startswith("reason_") for c in plain.columns)

    config = base.model_copy(update={"scoring": base.scoring.model_copy(update={"explain_top_k": 3})})
    (tmp_path / "k3").mkdir()
    scored = _score(config, classifier, rows, tmp_path / "k3")
    assert list(scored.columns[-3:]) == ["reason_1", "reason_2", "reason_3"]
    pd.testing.assert_series_equal(scored["probability"], plain["probability"])
    explainer = explainer_for(classifier, config)
    features = classifier.features(signature_frame(rows))
    values = {f: features[f].to_numpy() for f in explainer.fields}
    expected = explainer.reasons(explainer.encode(features), values, 3)
    for i, found in enumerate(expected):
        texts = [reason_text(r) for r in found] + [None] * (3 - len(found))
        assert scored.loc[i, ["reason_1", "reason_2", "reason_3"]].tolist() == texts
    first = scored["reason_1"].iloc[0]
    field = expected[0][0]["field"]
    assert first.startswith(f"{field} = ") and f"({describer_for(config).plain(field)})" in first
    assert (
        scored["reason_1"].str.contains("raises risk").any()
        and scored["reason_1"].str.contains("lowers risk").any()
    )


# --- evaluation report ---------------------------------------------------------------------------


def test_evaluation_draws_the_shap_summary_and_the_card_lists_the_drivers(fitted, tmp_path: Path) -> None:
    from tabular_mlops.evaluation import evaluate
    from tabular_mlops.promotion import model_card

    classifier, frame, _, _ = fitted
    config = get_model_config("churn", CONFIGS)
    explanation = explain_rows(classifier, config, frame, limit=400)
    y = (np.arange(len(frame)) % 3 == 0).astype(int)
    proba = classifier.predict_proba(frame)
    result = evaluate(y, proba, 0.5, None, tmp_path, "test", explanation)
    assert result.plots["shap_summary"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shap_summary" not in evaluate(y, proba, 0.5, None, tmp_path / "plain", "test").plots

    drivers = explanation.drivers()
    summary = {
        "version": "3",
        "run_id": "r",
        "metrics": result.metrics,
        "drivers": drivers,
        "drivers_rows": 400,
    }
    card = model_card(config, summary, {"passed": True, "checks": []})
    assert "## Top drivers (mean |SHAP| in log-odds over 400 test rows)" in card
    first = drivers[0]
    row = f"| 1 | `{first['field']}` | {first['description']} | {first['mean_abs_shap']:.4f} |"
    assert row in card
    assert "Top drivers" not in model_card(config, {**summary, "drivers": []}, {"passed": True, "checks": []})
