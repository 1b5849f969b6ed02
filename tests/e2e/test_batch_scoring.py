"""`<model>_batch_scoring` run for real with dag.test() against a real MLflow registry and lake.

The module trains one churn and one credit_risk version into its own SQLite registry and points
production at them; the configs are a copy with small chunks so a partition maps to several tasks.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import asset_events

PROJECT_DIR = Path(__file__).resolve().parents[2]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
SCORING = ["locate", "pin_model", "prepare", "score_chunk", "publish"]


@pytest.fixture(scope="module")
def scoring_world(production_models: dict) -> dict:
    return production_models


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local lake for one test."""
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    return tmp_path / "lake"


def _day(day: int) -> datetime:
    return datetime(2026, 11, day, 2, 0, tzinfo=UTC)


def _states(run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(ti.state)
    return states


def _telco_partition(telco_raw: Path, folder: Path, rows: int = 1000) -> pd.DataFrame:
    """The first `rows` generated customers as an incoming partition, without the label."""
    frame = pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False).head(rows)
    frame = frame.drop(columns=["Churn"])
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / TELCO_FILE, index=False)
    (folder / "_SUCCESS").touch()  # the producer's completion marker, written last
    return frame


def _read_partition(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return (
        pd.read_parquet(folder / "predictions.parquet"),
        pd.read_csv(folder / "rejects.csv", keep_default_na=False),
        json.loads((folder / "_manifest.json").read_text()),
    )


def test_churn_partition_scored_with_rejects_unseen_categories_and_mapped_chunks(
    dagbag, scoring_world: dict, lake: Path, telco_raw: Path
) -> None:
    incoming = lake / "incoming" / "churn" / "dt=2026-11-20"
    frame = _telco_partition(telco_raw, incoming)
    frame.loc[3, "PaymentMethod"] = "Crypto wallet"  # never seen in training: scored, not rejected
    frame.loc[5, "tenure"] = "about a year"  # unparseable: rejected with its reason
    frame.loc[8, "customerID"] = ""  # no id: rejected
    frame.to_csv(incoming / TELCO_FILE, index=False)

    run = dagbag.get_dag("churn_batch_scoring").test(logical_date=_day(20))
    assert run.state == "success", _states(run)
    assert len(_states(run)["score_chunk"]) == 4  # 998 rows in chunks of 300
    predictions, rejects, manifest = _read_partition(lake / "predictions" / "churn" / "dt=2026-11-20")
    assert len(predictions) == 998 and predictions["customerID"].is_unique
    assert list(predictions.columns) == [
        "customerID", "probability", "prediction", "threshold",
        "model_name", "model_version", "scored_at", "run_id",
    ]  # fmt: skip
    assert predictions["probability"].between(0, 1).all()
    assert (predictions["prediction"] == (predictions["probability"] >= 0.5)).all()
    assert set(predictions["model_version"]) == {scoring_world["versions"]["churn"]}
    assert set(predictions["run_id"]) == {run.run_id}
    assert frame.loc[3, "customerID"] in set(predictions["customerID"])
    assert rejects["line"].tolist() == [7, 10]
    assert rejects["reasons"].tolist() == [
        "tenure: not an integer ('about a year')",
        "customerID: missing required value",
    ]
    counts = manifest["counts"]
    assert (counts["input"], counts["scored"], counts["rejected"]) == (1000, 998, 2)
    assert counts["positives"] == int(predictions["prediction"].sum())
    assert manifest["model_version"] == scoring_world["versions"]["churn"]
    assert manifest["input"]["tables"][0]["warnings"] == {"PaymentMethod: not in the allowed set": 1}
    assert not list((lake / "predictions" / "churn" / "_staging").iterdir())
    [event] = asset_events("predictions/churn", run.run_id)
    assert event.extra["scored"] == 998 and event.extra["rejected"] == 2
    assert event.extra["duration_seconds"] > 0
    assert event.extra["model_version"] == scoring_world["versions"]["churn"]


def test_missing_partition_is_waited_for_then_fails_visibly_and_scores_nothing(
    dagbag, scoring_world: dict, lake: Path, capfd
) -> None:
    run = dagbag.get_dag("churn_batch_scoring").test(logical_date=_day(21))
    assert run.state == "failed"
    states = _states(run)
    assert states["wait_for_partition"] == ["failed"] and states["prepare"] == ["upstream_failed"]
    assert not (lake / "predictions" / "churn" / "dt=2026-11-21").exists()
    marker = lake / "incoming" / "churn" / "dt=2026-11-21" / "_SUCCESS"
    out = capfd.readouterr()
    assert f"{marker}: the completion marker did not appear within 0.002 h" in out.out + out.err
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(run_id=run.run_id, task_id="wait_for_partition").one()
        assert ti.try_number == 1  # the wait is not repeated by a retry


def test_rerun_of_a_date_replaces_the_partition_identically(
    scoring_world: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("churn")
    _telco_partition(telco_raw, Path(partition(config, "incoming", "2026-11-22")), rows=700)
    output = partition(config, "predictions", "2026-11-22")
    first = score_partition(config, partition(config, "incoming", "2026-11-22"), output, run_id="a")
    before = pd.read_parquet(Path(output) / "predictions.parquet")
    second = score_partition(config, partition(config, "incoming", "2026-11-22"), output, run_id="b")
    after = pd.read_parquet(Path(output) / "predictions.parquet")
    first["counts"].pop("duration_seconds"), second["counts"].pop("duration_seconds")
    assert first["counts"] == second["counts"] and len(after) == 700
    stable = ["customerID", "probability", "prediction", "model_version"]
    pd.testing.assert_frame_equal(before[stable], after[stable])
    assert set(after["run_id"]) == {"b"}
    assert sorted(p.name for p in Path(output).iterdir()) == [
        "_manifest.json",
        "inputs.parquet",
        "predictions.parquet",
        "rejects.csv",
    ]
    assert [p.name for p in Path(output).parent.iterdir() if p.name.startswith(".")] == []


def test_too_many_rejects_fail_and_keep_the_previous_partition(
    scoring_world: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import ScoringError, partition, score_partition

    config = get_model_config("churn")
    incoming = Path(partition(config, "incoming", "2026-11-23"))
    output = partition(config, "predictions", "2026-11-23")
    frame = _telco_partition(telco_raw, incoming, rows=500)
    score_partition(config, str(incoming), output, run_id="good")
    frame.loc[:20, "MonthlyCharges"] = "n/a"  # 21 of 500 rows, over the 1 % allowed
    frame.to_csv(incoming / TELCO_FILE, index=False)
    with pytest.raises(ScoringError, match=r"customers: 21 of 500 rows rejected"):
        score_partition(config, str(incoming), output, run_id="bad")
    manifest = json.loads((Path(output) / "_manifest.json").read_text())
    assert manifest["run_id"] == "good" and manifest["counts"]["scored"] == 500


def test_promotion_between_runs_each_partition_keeps_its_version(
    scoring_world: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("churn")
    for day in ("2026-11-24", "2026-11-25"):
        _telco_partition(telco_raw, Path(partition(config, "incoming", day)), rows=300)
    first = score_partition(
        config, partition(config, "incoming", "2026-11-24"), partition(config, "predictions", "2026-11-24")
    )
    newer = run_training_chain(config, str(telco_raw), run_id="retrain", promote=False)
    before = registry.alias_version(newer["registered_name"], registry.PRODUCTION)
    registry.promote(newer["registered_name"], newer["version"], "test", reason="promotion between runs")
    try:
        second = score_partition(
            config,
            partition(config, "incoming", "2026-11-25"),
            partition(config, "predictions", "2026-11-25"),
        )
    finally:
        registry.rollback(newer["registered_name"], "test", reason="restore the module's production")
    assert first["model_version"] == before and second["model_version"] == newer["version"] != before
    day1 = pd.read_parquet(Path(partition(config, "predictions", "2026-11-24")) / "predictions.parquet")
    day2 = pd.read_parquet(Path(partition(config, "predictions", "2026-11-25")) / "predictions.parquet")
    assert set(day1["model_version"]) == {before} and set(day2["model_version"]) == {newer["version"]}


def test_credit_risk_scores_applicants_with_their_history_and_a_threshold_override(
    dagbag, scoring_world: dict, lake: Path, home_credit_raw: Path
) -> None:
    incoming = lake / "incoming" / "credit_risk" / "dt=2026-11-20"
    incoming.mkdir(parents=True)
    for path in home_credit_raw.glob("*.csv"):
        if path.name != "application_train.csv":
            shutil.copy(path, incoming / path.name)
    (incoming / "_SUCCESS").touch()
    applicants = pd.read_csv(incoming / "application_test.csv", usecols=["SK_ID_CURR"])
    run = dagbag.get_dag("credit_risk_batch_scoring").test(logical_date=_day(20), run_conf={"threshold": 0.2})
    assert run.state == "success", _states(run)
    predictions, rejects, manifest = _read_partition(lake / "predictions" / "credit_risk" / "dt=2026-11-20")
    assert sorted(predictions["SK_ID_CURR"]) == sorted(applicants["SK_ID_CURR"]) and rejects.empty
    assert set(predictions["threshold"]) == {0.2}
    assert (predictions["prediction"] == (predictions["probability"] >= 0.2)).all()
    assert {t["table"] for t in manifest["input"]["tables"]} == {
        "application_test", "bureau", "bureau_balance", "previous_application",
        "pos_cash_balance", "installments_payments", "credit_card_balance",
    }  # fmt: skip
    assert all(len(t["sha256"]) == 64 for t in manifest["input"]["tables"])


def test_scoring_through_s3_with_the_airflow_connection(
    dagbag, scoring_world: dict, s3_client, bucket: str, telco_raw: Path, tmp_path: Path, monkeypatch
) -> None:
    s3 = s3_client
    monkeypatch.setenv("MLOPS_LAKE", "s3://lake/prod")
    _telco_partition(telco_raw, tmp_path / "in", rows=400)
    s3.upload_file(
        str(tmp_path / "in" / TELCO_FILE), "lake", f"prod/incoming/churn/dt=2026-11-20/{TELCO_FILE}"
    )
    s3.put_object(Bucket="lake", Key="prod/incoming/churn/dt=2026-11-20/_SUCCESS", Body=b"")
    run = dagbag.get_dag("churn_batch_scoring").test(logical_date=_day(20))
    assert run.state == "success", _states(run)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="prod/predictions/")["Contents"])
    prefix = "prod/predictions/churn/dt=2026-11-20/"
    assert keys == [
        f"{prefix}{name}"
        for name in ("_manifest.json", "inputs.parquet", "predictions.parquet", "rejects.csv")
    ]
    s3.download_file("lake", f"{prefix}predictions.parquet", str(tmp_path / "p.parquet"))
    assert len(pd.read_parquet(tmp_path / "p.parquet")) == 400
    manifest = json.loads(s3.get_object(Bucket="lake", Key=f"{prefix}_manifest.json")["Body"].read())
    assert manifest["counts"]["scored"] == 400 and manifest["output"]["location"].startswith("s3://lake/")


def test_cli_reports_a_missing_partition_with_exit_1(scoring_world: dict, lake: Path) -> None:
    from tests.helpers import last_json, run_mlops

    result = run_mlops("score", "--model", "churn", "--date", "2026-11-29")
    assert result.returncode == 1
    summary = last_json(result)
    assert summary["status"] == "failed" and "dt=2026-11-29" in summary["error"]
    assert "partition missing or empty" in result.stderr


def test_parquet_partition_is_checked_like_csv(scoring_world: dict, lake: Path, telco_raw: Path) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("churn")
    incoming = Path(partition(config, "incoming", "2026-11-26"))
    incoming.mkdir(parents=True)
    frame = pd.read_csv(telco_raw / TELCO_FILE, keep_default_na=False).head(400).drop(columns=["Churn"])
    frame["tenure"] = frame["tenure"].astype("float64")  # a typed file: 12.0 is the integer 12
    frame.loc[9, "tenure"] = 12.5
    frame.to_parquet(incoming / "customers.parquet", index=False)
    output = partition(config, "predictions", "2026-11-26")
    summary = score_partition(config, str(incoming), output)
    assert summary["counts"] == {**summary["counts"], "input": 400, "scored": 399, "rejected": 1}
    rejects = pd.read_csv(Path(output) / "rejects.csv")
    assert rejects.loc[0, "line"] == 10 and rejects.loc[0, "reasons"] == "tenure: not an integer ('12.5')"
    manifest = json.loads((Path(output) / "_manifest.json").read_text())
    assert manifest["input"]["tables"][0]["file"] == "customers.parquet"
