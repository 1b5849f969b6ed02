"""`<model>_monitoring` run for real: dag.test(), a real registry, a real SMTP server on loopback.

Partitions are scored for real with the production versions first, so monitoring reads exactly
what batch scoring publishes.
"""

from __future__ import annotations

import email
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "lake"


@pytest.fixture
def fresh_windows(production_models: dict) -> None:
    """Forget earlier windows' verdicts so persistence and cool-down start from nothing."""
    from tabular_mlops import tracking
    from tabular_mlops.monitoring import TAG_PREFIX

    client = tracking.configure()
    for name in ("churn-classifier", "credit-risk-classifier"):
        for key in list(client.get_registered_model(name).tags):
            if key.startswith(TAG_PREFIX):
                client.delete_registered_model_tag(name, key)


def _score_churn(day: str, frame: pd.DataFrame) -> str:
    """Publish a churn predictions partition for `day` from raw customer rows; return its location."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("churn")
    incoming = Path(partition(config, "incoming", day))
    incoming.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["Churn"], errors="ignore").to_csv(incoming / TELCO_FILE, index=False)
    output = partition(config, "predictions", day)
    score_partition(config, str(incoming), output, run_id=f"score_{day}")
    return output


def _customers(telco_raw: Path) -> pd.DataFrame:
    return pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False)


def _drifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Pricier, month-to-month, fibre customers: a shift every monitor should see."""
    out = frame.copy()
    charges = pd.to_numeric(out["MonthlyCharges"]) * 1.6 + 20
    out["MonthlyCharges"] = charges.round(2).astype(str)
    out["Contract"] = "Month-to-month"
    out["InternetService"] = "Fiber optic"
    return out


def _retrain_events(model: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == f"retrain/{model}")
            .count()
        )


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_drift_sends_one_email_and_requests_one_retrain(
    dagbag, lake: Path, telco_raw: Path, smtp_server, fresh_windows, tmp_path: Path
) -> None:
    location = _score_churn("2026-11-20", _drifted(_customers(telco_raw)))
    before = _retrain_events("churn")
    run = dagbag.get_dag("churn_monitoring").test(run_conf={"current": location})
    assert run.state == "success", _states(run)
    assert _states(run)["request_retrain"] == "success"
    assert len(smtp_server.messages) == 1 and _retrain_events("churn") == before + 1
    envelope = smtp_server.messages[0]
    assert envelope.rcpt_tos == ["churn-oncall@example.com"]
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"].startswith("churn: ") and "features drifted (2026-11-20)" in message["Subject"]
    assert [part.get_filename() for part in message.walk() if part.get_filename()] == ["report.html"]
    body = (
        next(p for p in message.walk() if p.get_content_type() == "text/html")
        .get_payload(decode=True)
        .decode()
    )
    assert "MonthlyCharges" in body and "model version" in body
    summary = json.loads(
        (lake.parent / "reports" / "monitoring" / "churn" / "dt=2026-11-20" / "summary.json").read_text()
    )
    assert summary["breach"] and {d["column"] for d in summary["drifted_features"]} >= {
        "MonthlyCharges",
        "Contract",
    }

    # The same window again (a re-run): measured again, no second email, no second retrain.
    again = dagbag.get_dag("churn_monitoring").test(run_conf={"current": location})
    assert again.state == "success" and _states(again)["request_retrain"] == "skipped"
    assert len(smtp_server.messages) == 1 and _retrain_events("churn") == before + 1


def test_undrifted_window_sends_nothing_but_saves_the_report(
    dagbag, lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    location = _score_churn("2026-11-21", _customers(telco_raw).sample(frac=1.0, random_state=1))
    before = _retrain_events("churn")
    run = dagbag.get_dag("churn_monitoring").test(run_conf={"current": location})
    assert run.state == "success", _states(run)
    assert _states(run)["request_retrain"] == "skipped"
    assert smtp_server.messages == [] and _retrain_events("churn") == before
    out = lake.parent / "reports" / "monitoring" / "churn" / "dt=2026-11-21"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["breach"] is False and summary["drifted_features"] == []
    assert (out / "report.html").stat().st_size > 10_000


def test_mail_server_down_fails_visibly_keeps_the_report_and_does_not_mark_sent(
    dagbag, lake: Path, telco_raw: Path, fresh_windows, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import alert_decision

    from tests.e2e.conftest import smtp_connection
    from tests.helpers import free_port

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(free_port()))  # nothing listens
    location = _score_churn("2026-11-22", _drifted(_customers(telco_raw)))
    dag = dagbag.get_dag("churn_monitoring")
    for task in dag.tasks:
        task.retries = 0  # the DAG retries with back-off; the test needs the final verdict only
    run = dag.test(run_conf={"current": location})
    assert run.state == "failed"
    states = _states(run)
    assert states["measure"] == "success" and states["alert"] == "failed"
    assert states["request_retrain"] == "upstream_failed"
    assert (lake.parent / "reports" / "monitoring" / "churn" / "dt=2026-11-22" / "report.html").exists()
    assert alert_decision(get_model_config("churn"), "2026-11-22") == (True, "breach")  # still due


def test_quality_drop_with_labels_breaches_without_feature_drift(
    lake: Path, telco_raw: Path, fresh_windows, tmp_path: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import monitor

    customers = _customers(telco_raw)
    location = _score_churn("2026-11-23", customers)
    labels = customers[["customerID", "Churn"]].copy()
    # Labels that arrived later and no longer follow the features: the relation has weakened.
    labels["Churn"] = np.random.default_rng(0).permutation(labels["Churn"].to_numpy())
    labels.to_csv(tmp_path / "labels.csv", index=False)
    summary = monitor(get_model_config("churn"), location, labels=str(tmp_path / "labels.csv"), send=False)
    assert summary["drifted_features"] == [] and summary["breach"] is True
    assert any(reason.startswith("AUC") for reason in summary["reasons"])
    quality = summary["quality"][summary["model_version"]]
    assert quality["labelled_rows"] == len(customers) and quality["roc_auc"] < 0.6
    assert Path(summary["quality_report"]).stat().st_size > 10_000


def test_credit_risk_monitoring_runs_on_every_feature(
    dagbag, lake: Path, home_credit_raw: Path, fresh_windows, smtp_server
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition, score_partition

    config = get_model_config("credit_risk")
    incoming = Path(partition(config, "incoming", "2026-11-20"))
    incoming.mkdir(parents=True)
    for path in home_credit_raw.glob("*.csv"):
        if path.name != "application_train.csv":
            shutil.copy(path, incoming / path.name)
    score_partition(config, str(incoming), partition(config, "predictions", "2026-11-20"))
    run = dagbag.get_dag("credit_risk_monitoring").test()  # no Param: the newest partition
    assert run.state == "success", _states(run)
    summary = json.loads(
        (
            lake.parent / "reports" / "monitoring" / "credit_risk" / "dt=2026-11-20" / "summary.json"
        ).read_text()
    )
    assert summary["features"] > 300 and summary["rows"] == len(
        pd.read_csv(incoming / "application_test.csv")
    )
