"""The parts behind `mlops train`'s overrides, `--data` files and `mlops evaluate`, without training:
flag parsing, the validated config copy, single-file sources and the side-by-side metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from tabular_mlops.cli import _flag, parse_param
from tabular_mlops.config import ConfigError, get_model_config
from tabular_mlops.training import RunOverrides, apply_overrides, estimator_overrides

CREDIT_FILES = [
    "application_train.csv",
    "application_test.csv",
    "bureau.csv",
    "bureau_balance.csv",
    "previous_application.csv",
    "POS_CASH_balance.csv",
    "installments_payments.csv",
    "credit_card_balance.csv",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_depth=6", ("max_depth", 6)),
        ("subsample = 0.8", ("subsample", 0.8)),
        ("reg_alpha=1e-3", ("reg_alpha", 0.001)),
        ("enable_categorical=True", ("enable_categorical", True)),
        ("boosting_type=dart", ("boosting_type", "dart")),
    ],
)
def test_param_values_are_read_as_bool_int_float_or_text(text: str, expected: tuple) -> None:
    assert parse_param(text) == expected
    assert type(parse_param(text)[1]) is type(expected[1])


@pytest.mark.parametrize("text", ["=3", "max_depth", "max depth=3", "x=nan", "x=inf"])
def test_malformed_params_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_param(text)


def test_overrides_make_a_validated_copy_and_leave_the_config_alone() -> None:
    config = get_model_config("churn")
    changes = RunOverrides(
        test_split=0.3, learning_rate=0.05, num_leaves=64, params={"max_depth": 6}, register_name="churn-x"
    )
    effective = apply_overrides(config, changes)
    assert effective.split.test_size == 0.3 and effective.split.seed == config.split.seed
    assert effective.model.params["num_leaves"] == 64 and effective.model.params["learning_rate"] == 0.05
    assert effective.model.params["max_depth"] == 6
    assert effective.model.params["n_estimators"] == config.model.params["n_estimators"]
    assert effective.model.registered_name == "churn-x"
    assert config.split.test_size == 0.2 and config.model.params["num_leaves"] == 15  # untouched
    assert changes.renames(config) and not RunOverrides(register_name="churn-classifier").renames(config)
    assert changes.given() == {
        "test_split": 0.3,
        "learning_rate": 0.05,
        "num_leaves": 64,
        "register_name": "churn-x",
        "param.max_depth": 6,
    }
    assert apply_overrides(config, RunOverrides()) is config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (RunOverrides(test_split=1.5), "--test-split 1.5 refused: Input should be less than 1"),
        (RunOverrides(test_split=0.0), "--test-split 0.0 refused: Input should be greater than 0"),
        (RunOverrides(test_split=0.85), "must leave at least 10% of the rows to train on"),
        (RunOverrides(learning_rate=0.0), "--learning-rate 0.0 refused: must be above 0"),
        (RunOverrides(num_leaves=1), "--num-leaves 1 refused: a whole number from 2"),
        (
            RunOverrides(params={"nonsense": 1}),
            "LGBMClassifier (lightgbm, churn) has no parameter 'nonsense'",
        ),
        (RunOverrides(params={"random_state": 1}), "random_state is set by split.seed"),
        (RunOverrides(params={"num_leaves": "many"}), "num_leaves takes a number"),
        (RunOverrides(num_leaves=64, params={"num_leaves": 12}), "disagree: give num_leaves once"),
        (RunOverrides(register_name="Churn_Model"), "String should match pattern"),
        (RunOverrides(register_name="credit-risk-classifier"), "is the registered model of credit_risk"),
        (RunOverrides(register_name="x" * 300), "at most 256 characters"),
        (RunOverrides(experiment_name=" tuning"), "starts or ends with a space"),
        (RunOverrides(experiment_name="a\tb"), "control character"),
    ],
)
def test_bad_overrides_name_the_flag_and_the_reason(changes: RunOverrides, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(get_model_config("churn"), changes, naming=_flag)
    assert message in str(caught.value)


def test_num_leaves_is_refused_for_xgboost_with_what_to_use_instead() -> None:
    config = get_model_config("credit_risk")
    with pytest.raises(ConfigError, match="applies to LightGBM, but credit_risk trains xgboost") as caught:
        apply_overrides(config, RunOverrides(num_leaves=64), naming=_flag)
    assert "--param max_depth=N" in str(caught.value)
    # What XGBoost has instead goes through --param, checked against XGBClassifier.get_params().
    assert estimator_overrides(config, RunOverrides(learning_rate=0.1, params={"max_leaves": 64})) == {
        "max_leaves": 64,
        "learning_rate": 0.1,
    }
    with pytest.raises(ConfigError, match="XGBClassifier .* has no parameter 'num_leaves'"):
        apply_overrides(config, RunOverrides(params={"num_leaves": 64}))


def test_dag_params_become_the_same_overrides() -> None:
    params = {"data": None, "dry_run": False, "test_split": 0.25, "num_leaves": None, "register_name": None}
    assert RunOverrides.from_params(params) == RunOverrides(test_split=0.25)
    assert RunOverrides.from_params(None).given() == {}


def test_a_single_csv_is_a_source_of_one_table_only(tmp_path: Path) -> None:
    from tabular_mlops.ingest import SourceMismatch, is_single_file, single_file_source, split_file

    local = tmp_path / "telco.csv"
    local.write_text("customerID\n")
    assert is_single_file(str(local)) and not is_single_file(str(tmp_path))
    assert is_single_file("s3://lake/exports/Telco.CSV") and not is_single_file("s3://lake/raw/telco")
    assert split_file("s3://lake/exports/telco.csv") == ("s3://lake/exports", "telco.csv")
    assert single_file_source("churn", str(local), ["WA.csv"]) == (str(tmp_path), "telco.csv")
    with pytest.raises(SourceMismatch) as caught:
        single_file_source("credit_risk", str(local), CREDIT_FILES)
    assert f"{local} is a single file, but credit_risk reads 8 tables" in str(caught.value)
    assert all(name in str(caught.value) for name in CREDIT_FILES)


def test_scoring_takes_a_single_csv_for_a_one_table_model_only(tmp_path: Path) -> None:
    from tabular_mlops.ingest import SourceMismatch
    from tabular_mlops.scoring import _input_tables

    local = tmp_path / "customers_today.csv"
    local.write_text("customerID\n")
    assert _input_tables(get_model_config("churn"), str(local)) == (str(tmp_path), {"customers": local.name})
    with pytest.raises(SourceMismatch, match="credit_risk reads 7 tables"):
        _input_tables(get_model_config("credit_risk"), str(local))


def test_compared_metrics_share_the_rows_and_subtract() -> None:
    from tabular_mlops.evaluation import ROW_FACTS, compare_metrics, comparison_table

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    better = np.clip(y * 0.6 + rng.uniform(0, 0.4, 400), 0, 1)
    worse = rng.uniform(0, 1, 400)
    compared = compare_metrics(y, better, worse, 0.5)
    assert compared["version"]["n"] == compared["baseline"]["n"] == 400
    assert not set(ROW_FACTS) & set(compared["difference"])
    for name, change in compared["difference"].items():
        assert change == pytest.approx(compared["version"][name] - compared["baseline"][name])
    assert compared["difference"]["roc_auc"] > 0.3
    lines = comparison_table(compared, "v2", "v1 (production)")
    assert lines[0].split() == ["metric", "v2", "v1", "(production)", "difference"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert lines[1].startswith("roc_auc")
