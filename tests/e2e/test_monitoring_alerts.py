"""What the on-call engineer receives, against a real SMTP server and a real registry.

Issue 17's acceptance: the email's figures are the report's (read from Evidently's result object
and from the rendered HTML) and a trend chart is attached; an unlabelled window whose estimated
AUC dropped alerts; a small window is not judged; the daily alert budget is honoured.
"""

from __future__ import annotations

import email
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.monitoring_data import customers, drifted, score_churn


def _config(**monitoring: Any) -> Any:
    from tabular_mlops.config import get_model_config

    config = get_model_config("churn")
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update=monitoring)})


def _parts(envelope: Any) -> tuple[email.message.Message, str, dict[str, bytes]]:
    message = email.message_from_bytes(envelope.content)
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    files = {p.get_filename(): p.get_payload(decode=True) for p in message.walk() if p.get_filename()}
    return message, unescape(html.get_payload(decode=True).decode()), files


def _email_figures(body: str) -> dict[str, str]:
    return dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", body))


def _snapshot_values(summary: dict[str, Any]) -> dict[str, float]:
    from evidently.core.report import Snapshot

    snapshot = Snapshot.loads(Path(summary["snapshot"]).read_text())
    return {m["metric_name"].split("(")[0]: m["value"] for m in snapshot.dict()["metrics"]}


def test_the_email_shows_the_reports_figures_and_a_trend(
    lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    from tabular_mlops import monitoring_workspace
    from tabular_mlops.monitoring import monitor

    location = score_churn("2026-11-20", drifted(customers(telco_raw)))
    summary = monitor(_config(), location)
    assert summary["alert_sent"], summary["alert_reason"]
    message, body, files = _parts(smtp_server.messages[0])
    values = _snapshot_values(summary)
    figures = _email_figures(body)
    # The result object, the email and the summary hold one set of numbers ...
    assert values["WindowVerdict"] == 1.0 and summary["breach"]
    assert figures["weighted drift share"] == f"{values['WeightedDriftShare']:.1%}"
    assert figures["prediction PSI"] == f"{values['PredictionPSI']:.3f}"
    assert figures["estimated AUC (before labels)"] == f"{values['EstimatedRocAuc']:.3f}"
    assert summary["prediction_psi"] == round(values["PredictionPSI"], 4)
    # ... and the rendered report shows them: the verdict's reasons, the drifted count, the PSI.
    report = files["report.html"].decode()
    for reason in summary["reasons"]:
        assert reason in body and reason in report
    drifted_count = re.search(r"(\d+ of \d+) features drifted", message["Subject"]).group(1)
    assert f"{drifted_count} features drifted (PSI above 0.2)" in report
    assert "BREACH" in report
    for column in summary["drifted_features"][:5]:
        assert f"{column['column']}: PSI {column['psi']:.3f}" in report
    assert files["trend.png"].startswith(b"\x89PNG\r\n\x1a\n") and len(files["trend.png"]) > 5_000
    # Measured again (a retry): no second email, and the dashboard still counts the alert.
    again = monitor(_config(), location)
    assert not again["alert_sent"] and len(smtp_server.messages) == 1
    assert list(monitoring_workspace.history(_config())["alert_sent"]) == [True]


def test_an_unlabelled_window_whose_estimated_auc_dropped_alerts(
    lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    from tabular_mlops.monitoring import monitor

    # Drift limits out of reach, so only the estimate can breach.
    config = _config(drift_share_threshold=1.0, prediction_psi_threshold=100.0, max_auc_drop=0.05)
    location = score_churn("2026-11-24", drifted(customers(telco_raw)))
    summary = monitor(config, location)
    estimated = summary["performance"]["estimated_roc_auc"]
    assert summary["quality"] == {} and estimated is not None
    assert summary["production_test_auc"] - estimated > 0.05
    assert [r for r in summary["reasons"] if r.startswith("estimated AUC")] == summary["reasons"]
    assert summary["alert_sent"] and len(smtp_server.messages) == 1
    assert summary["reasons"][0] in email.message_from_bytes(smtp_server.messages[0].content)["Subject"]


def test_a_small_window_is_not_judged(lake: Path, telco_raw: Path, smtp_server, fresh_windows) -> None:
    from tabular_mlops.monitoring import monitor

    location = score_churn("2026-11-25", drifted(customers(telco_raw)).head(120))
    summary = monitor(_config(min_rows=500), location)
    assert summary["rows"] == 120 and summary["breach"] is False
    assert "fewer than min_rows 500" in summary["not_judged"][0]
    assert summary["weighted_drift_share"] > 0.3, "the drift is measured and shown, not judged"
    assert smtp_server.messages == []


def test_the_daily_alert_budget_is_honoured(lake: Path, telco_raw: Path, smtp_server, fresh_windows) -> None:
    from tabular_mlops import monitoring_workspace
    from tabular_mlops.monitoring import monitor

    config = _config(alert_budget_per_day=1, cooldown_hours=0)
    rows = drifted(customers(telco_raw))
    first = monitor(config, score_churn("2026-11-26", rows))
    second = monitor(config, score_churn("2026-11-27", rows))
    assert first["alert_sent"] and not second["alert_sent"]
    assert second["alert_reason"].startswith("the daily alert budget (1) is spent")
    assert len(smtp_server.messages) == 1
    history = monitoring_workspace.history(config)
    assert list(history["day"].astype(str)) == ["2026-11-26", "2026-11-27"]
    assert list(history["alert_sent"]) == [True, False]
    assert list(history["weighted_drift_share"].round(4)) == [
        first["weighted_drift_share"],
        second["weighted_drift_share"],
    ]


@pytest.fixture(autouse=True)
def _own_workspace(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(lake.parent / "evidently"))
