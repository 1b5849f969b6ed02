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

from tests.e2e.monitoring_data import customers, drifted, score_churn


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
    location = score_churn("2026-11-20", drifted(customers(telco_raw)))
    before = _retrain_events("churn")
    run = dagbag.get_dag("churn_monitoring").test(run_conf={"current": location})
    assert run.state == "success", _states(run)
    assert _states(run)["request_retrain"] == "success"
    assert len(smtp_server.messages) == 1 and _retrain_events("churn") == before + 1
    envelope = smtp_server.messages[0]
    assert envelope.rcpt_tos == ["churn-oncall@example.com"]
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"].startswith("churn: ") and "features drifted (2026-11-20)" in message["Subject"]
    assert [part.get_filename() for part in message.walk() if part.get_filename()] == [
        "report.html",
        "trend.png",
    ]
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
    location = score_churn("2026-11-21", customers(telco_raw).sample(frac=1.0, random_state=1))
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
    location = score_churn("2026-11-22", drifted(customers(telco_raw)))
    dag = dagbag.get_dag("churn_monitoring")
    for task in dag.tasks:
        task.retries = 0  # the DAG retries with back-off; the test needs the final verdict only
    run = dag.test(run_conf={"current": location})
    assert run.state == "failed"
    states = _states(run)
    assert states["measure"] == "success" and states["alert"] == "failed"
    assert states["request_retrain"] == "upstream_failed"
    assert (lake.parent / "reports" / "monitoring" / "churn" / "dt=2026-11-22" / "report.html").exists()
    # Still due: the intent was recorded, the delivery never confirmed; a retry resends the same id.
    due, why = alert_decision(get_model_config("churn"), "2026-11-22")
    assert due and why.startswith("resend")


def test_quality_drop_with_labels_breaches_without_feature_drift(
    lake: Path, telco_raw: Path, fresh_windows, tmp_path: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import monitor

    rows = customers(telco_raw)
    location = score_churn("2026-11-23", rows)
    labels = rows[["customerID", "Churn"]].copy()
    # Labels that arrived later and no longer follow the features: the relation has weakened.
    labels["Churn"] = np.random.default_rng(0).permutation(labels["Churn"].to_numpy())
    labels.to_csv(tmp_path / "labels.csv", index=False)
    summary = monitor(get_model_config("churn"), location, labels=str(tmp_path / "labels.csv"), send=False)
    assert summary["drifted_features"] == [] and summary["breach"] is True
    assert any(reason.startswith("AUC") for reason in summary["reasons"])
    quality = summary["quality"][summary["model_version"]]
    assert quality["labelled_rows"] == len(rows) and quality["roc_auc"] < 0.6
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
    score_partition(config, str(incoming), partition(config, "predictions", "2026-11-20"), day="2026-11-20")
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
