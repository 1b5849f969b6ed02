"""The Home Credit generator: real schemas and quirks, integrity across tables, a learnable label."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from tabular_mlops.config import get_model_config
from tabular_mlops.generators import home_credit as hc
from tabular_mlops.generators.home_credit_values import SENTINEL_DAYS, TABLE_COLUMNS

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"
PREVIOUS_SENTINEL_COLUMNS = [
    "DAYS_FIRST_DRAWING",
    "DAYS_FIRST_DUE",
    "DAYS_LAST_DUE_1ST_VERSION",
    "DAYS_LAST_DUE",
    "DAYS_TERMINATION",
]


@pytest.fixture(scope="module")
def tables(home_credit_raw: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(home_credit_raw / name) for name in TABLE_COLUMNS}


def _digest(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in TABLE_COLUMNS}


@pytest.mark.parametrize("file_name", list(TABLE_COLUMNS))
def test_header_matches_the_real_file_column_by_column(
    file_name: str, home_credit_raw: Path, reference_dir: Path
) -> None:
    real = (reference_dir / "home_credit" / file_name).read_text().splitlines()[0].split(",")
    ours = (home_credit_raw / file_name).read_text().splitlines()[0].split(",")
    assert len(ours) == len(real)
    for position, (mine, theirs) in enumerate(zip(ours, real, strict=True)):
        assert mine == theirs, f"{file_name} column {position}: {mine!r} != real {theirs!r}"


@pytest.mark.parametrize("file_name", list(TABLE_COLUMNS))
def test_column_types_match_the_real_rows(
    file_name: str, tables: dict[str, pd.DataFrame], reference_dir: Path
) -> None:
    """Integer columns stay integers, nullable numbers floats, codes text, as pandas reads the real file."""
    real = pd.read_csv(reference_dir / "home_credit" / file_name)
    ours = tables[file_name]
    for column in real.columns:
        if real[column].isna().all():
            continue  # all-empty in the 20 real rows: pandas cannot tell its type
        assert ours[column].dtype.kind == real[column].dtype.kind, (
            f"{file_name}.{column}: {ours[column].dtype} but the real file reads as {real[column].dtype}"
        )


def test_row_counts_follow_the_real_proportions(tables: dict[str, pd.DataFrame]) -> None:
    train, test = tables["application_train.csv"], tables["application_test.csv"]
    assert len(train) == 1500 and len(test) == round(1500 * 48_744 / 307_511)
    per_applicant = {name: len(frame) / (len(train) + len(test)) for name, frame in tables.items()}
    # Real: bureau 4.8, bureau_balance 77, previous 4.7, POS 28, installments 38, cards 11 rows each.
    assert 3.5 < per_applicant["bureau.csv"] < 6.5
    assert 40 < per_applicant["bureau_balance.csv"] < 120
    assert 3.5 < per_applicant["previous_application.csv"] < 6.5
    assert 10 < per_applicant["POS_CASH_balance.csv"] < 70
    assert 15 < per_applicant["installments_payments.csv"] < 70
    assert 3 < per_applicant["credit_card_balance.csv"] < 40


def test_real_quirks_are_present(tables: dict[str, pd.DataFrame]) -> None:
    app = tables["application_train.csv"]
    prev = tables["previous_application.csv"]
    sentinel = app["DAYS_EMPLOYED"] == SENTINEL_DAYS
    assert 0.10 < sentinel.mean() < 0.30
    assert set(app.loc[sentinel, "NAME_INCOME_TYPE"]) <= {"Pensioner", "Unemployed"}
    assert (app.loc[sentinel, "ORGANIZATION_TYPE"] == "XNA").all()
    assert (app.loc[~sentinel, "DAYS_EMPLOYED"] <= 0).all()
    for column in PREVIOUS_SENTINEL_COLUMNS:
        assert (prev[column] == SENTINEL_DAYS).any(), f"{column} never holds the 365243 sentinel"
    assert (app["CODE_GENDER"] == "XNA").sum() >= 1
    assert (prev["NAME_CONTRACT_STATUS"] != "Approved").eq(prev["DAYS_FIRST_DUE"].isna()).all()
    for column in ["NAME_CASH_LOAN_PURPOSE", "CODE_REJECT_REASON"]:
        assert {"XAP"} <= set(prev[column])
    for column in ["NAME_GOODS_CATEGORY", "NAME_PORTFOLIO", "NAME_YIELD_GROUP", "NAME_SELLER_INDUSTRY"]:
        assert "XNA" in set(prev[column])
    building = [c for c in app.columns if c.endswith(("_AVG", "_MODE", "_MEDI"))]
    missing = app[building].isna().mean()
    assert missing.between(0.40, 0.80).all(), missing[~missing.between(0.40, 0.80)]
    assert 0.50 < app["EXT_SOURCE_1"].isna().mean() < 0.62
    assert app["AMT_INCOME_TOTAL"].max() >= 1e8  # the ~117 million outlier
    ids = set(app["SK_ID_CURR"])
    assert len(ids - set(tables["bureau.csv"]["SK_ID_CURR"])) > 0.08 * len(ids)
    assert len(ids - set(prev["SK_ID_CURR"])) > 0.02 * len(ids)
    assert set(tables["bureau_balance.csv"]["STATUS"].astype(str)) == {"C", "X", "0", "1", "2", "3", "4", "5"}


def test_keys_are_unique_and_every_reference_resolves(tables: dict[str, pd.DataFrame]) -> None:
    train, test = tables["application_train.csv"], tables["application_test.csv"]
    bureau, prev = tables["bureau.csv"], tables["previous_application.csv"]
    applicants = pd.concat([train["SK_ID_CURR"], test["SK_ID_CURR"]])
    assert applicants.is_unique and not set(train["SK_ID_CURR"]) & set(test["SK_ID_CURR"])
    assert bureau["SK_ID_BUREAU"].is_unique and prev["SK_ID_PREV"].is_unique
    assert bureau["SK_ID_CURR"].isin(applicants).all()
    assert prev["SK_ID_CURR"].isin(applicants).all()
    assert tables["bureau_balance.csv"]["SK_ID_BUREAU"].isin(bureau["SK_ID_BUREAU"]).all()
    owner = prev.set_index("SK_ID_PREV")["SK_ID_CURR"]
    for name in ["POS_CASH_balance.csv", "installments_payments.csv", "credit_card_balance.csv"]:
        child = tables[name]
        assert child["SK_ID_PREV"].isin(owner.index).all(), name
        assert (owner.loc[child["SK_ID_PREV"]].to_numpy() == child["SK_ID_CURR"].to_numpy()).all(), name
    assert not tables["bureau_balance.csv"].duplicated(["SK_ID_BUREAU", "MONTHS_BALANCE"]).any()


def test_same_seed_same_bytes_other_seed_other_data(home_credit_raw: Path, tmp_path: Path) -> None:
    hc.generate_home_credit(tmp_path / "again", rows=1500, seed=5)
    hc.generate_home_credit(tmp_path / "other", rows=1500, seed=6)
    assert _digest(tmp_path / "again") == _digest(home_credit_raw)
    assert (
        _digest(tmp_path / "other")["application_train.csv"]
        != _digest(home_credit_raw)["application_train.csv"]
    )


def test_streams_in_chunks_with_ids_unique_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hc, "CHUNK_APPLICANTS", 150)
    messages: list[str] = []
    counts = hc.generate_home_credit(tmp_path, rows=600, seed=2, progress=messages.append)
    assert len(messages) == -(-(600 + round(600 * 48_744 / 307_511)) // 150)  # one line per chunk
    bureau = pd.read_csv(tmp_path / "bureau.csv")
    prev = pd.read_csv(tmp_path / "previous_application.csv")
    assert bureau["SK_ID_BUREAU"].is_unique and prev["SK_ID_PREV"].is_unique
    assert counts["bureau.csv"] == len(bureau)
    # Only the finished files are left: the staging folder is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TABLE_COLUMNS)
    # Exactly the planted rare quirks, once, whatever the chunking.
    app = pd.read_csv(tmp_path / "application_train.csv")
    assert (app["AMT_INCOME_TOTAL"] >= 1e8).sum() <= 1


def test_failed_generation_leaves_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hc, "build_credit_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        hc.generate_home_credit(tmp_path, rows=100, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_every_generated_column_is_declared_in_the_config(tables: dict[str, pd.DataFrame]) -> None:
    config = get_model_config("credit_risk", CONFIGS)
    by_file = {spec.file: spec for spec in config.data.tables.values()}
    assert set(by_file) == set(TABLE_COLUMNS)
    for file_name, frame in tables.items():
        spec = by_file[file_name]
        assert set(spec.columns) == set(frame.columns), file_name
        for column, rule in spec.columns.items():
            if rule.type == "category":
                seen = set(frame[column].dropna().astype(str))
                assert seen <= {str(v) for v in rule.values or []}, f"{file_name}.{column}: {seen}"


def _history_features(folder: Path, app: pd.DataFrame) -> pd.DataFrame:
    """A handful of per-applicant aggregates from five history tables (a tiny feature store)."""
    bureau = pd.read_csv(folder / "bureau.csv")
    prev = pd.read_csv(folder / "previous_application.csv")
    inst = pd.read_csv(folder / "installments_payments.csv")
    card = pd.read_csv(folder / "credit_card_balance.csv")
    bureau["overdue"] = bureau["AMT_CREDIT_MAX_OVERDUE"].fillna(0) > 0
    inst["late"] = inst["DAYS_ENTRY_PAYMENT"] > inst["DAYS_INSTALMENT"]
    card["use"] = card["AMT_BALANCE"] / card["AMT_CREDIT_LIMIT_ACTUAL"].replace(0, np.nan)
    prev["refused"] = prev["NAME_CONTRACT_STATUS"] == "Refused"
    parts = [
        bureau.groupby("SK_ID_CURR").agg(
            b_overdue=("overdue", "mean"), b_days=("CREDIT_DAY_OVERDUE", "mean")
        ),
        prev.groupby("SK_ID_CURR").agg(p_refused=("refused", "mean"), p_count=("SK_ID_PREV", "size")),
        inst.groupby("SK_ID_CURR").agg(i_late=("late", "mean")),
        card.groupby("SK_ID_CURR").agg(c_use=("use", "mean"), c_dpd=("SK_DPD", "mean")),
    ]
    frame = app[["SK_ID_CURR"]]
    for part in parts:
        frame = frame.merge(part, left_on="SK_ID_CURR", right_index=True, how="left")
    return frame.drop(columns="SK_ID_CURR")


def _auc(features: pd.DataFrame, label: pd.Series) -> float:
    x_train, x_test, y_train, y_test = train_test_split(
        features, label, test_size=0.3, random_state=0, stratify=label
    )
    model = HistGradientBoostingClassifier(
        max_iter=250, learning_rate=0.05, max_leaf_nodes=15, random_state=0
    )
    model.fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def test_label_is_learnable_and_needs_the_history_tables(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("learnable")
    hc.generate_home_credit(folder, rows=12_000, seed=21)
    app = pd.read_csv(folder / "application_train.csv")
    assert 0.06 < app["TARGET"].mean() < 0.10  # real: 8.1 %
    application_only = app.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"])
    with_history = pd.concat([application_only, _history_features(folder, app)], axis=1)
    auc_application = _auc(application_only, app["TARGET"])
    auc_history = _auc(with_history, app["TARGET"])
    assert auc_application > 0.66
    assert auc_history > 0.73
    assert auc_history > auc_application + 0.02, (auc_application, auc_history)


def test_drift_shifts_inputs_and_the_label(home_credit_raw: Path, tmp_path: Path) -> None:
    hc.generate_home_credit(tmp_path, rows=1500, seed=5, drift=True)
    base = pd.read_csv(home_credit_raw / "application_train.csv")
    drifted = pd.read_csv(tmp_path / "application_train.csv")
    assert drifted["AMT_INCOME_TOTAL"].median() > 1.1 * base["AMT_INCOME_TOTAL"].median()
    assert drifted["EXT_SOURCE_3"].median() < base["EXT_SOURCE_3"].median() - 0.04
    revolving = "Revolving loans"
    assert (drifted["NAME_CONTRACT_TYPE"] == revolving).mean() > (
        base["NAME_CONTRACT_TYPE"] == revolving
    ).mean()
    # The label moves too: more defaults, and the external scores say less about who defaults.
    assert drifted["TARGET"].mean() > base["TARGET"].mean() + 0.01
    base_auc = roc_auc_score(base["TARGET"], -base["EXT_SOURCE_2"].fillna(0.5))
    drifted_auc = roc_auc_score(drifted["TARGET"], -drifted["EXT_SOURCE_2"].fillna(0.5))
    assert drifted_auc < base_auc - 0.03, (base_auc, drifted_auc)
    # Same schema, so the drifted files still pass through the same pipeline.
    assert list(drifted.columns) == list(base.columns)
