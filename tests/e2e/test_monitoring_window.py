"""A monitoring window on real partitions: its date, and what a fault may and may not become.

Issue 14, point 7: the window's date is the `day` of the partition's `_manifest.json`, never its
path. Point 4 (monitoring): a registry that is down raises its own, transient error (the task
retries), never a MonitoringError (the task would fail at once); a version whose importances
cannot be read is measured unweighted, and the summary and the email say so.
"""

from __future__ import annotations

import email
import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.e2e.monitoring_data import customers, drifted, score_churn
from tests.helpers import free_port, last_json, run_mlops


def _html(envelope) -> str:
    message = email.message_from_bytes(envelope.content)
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode()


def _tags(model: str = "churn-classifier") -> dict[str, str]:
    from tabular_mlops import tracking

    return dict(tracking.configure().get_registered_model(model).tags)


def _production_run(production_models: dict) -> str:
    from tabular_mlops import tracking

    version = production_models["versions"]["churn"]
    return str(tracking.configure().get_model_version("churn-classifier", version).run_id)


def test_a_folder_not_named_by_date_is_judged_on_its_manifest_day(
    lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    day = "2026-12-03"
    folder = score_churn(day, drifted(customers(telco_raw)), output=str(lake / "predictions" / "adhoc-run"))
    result = run_mlops("monitor", "--model", "churn", "--current", folder)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result)
    assert summary["day"] == day and summary["partition"] == folder
    assert (
        Path(summary["report"])
        == lake.parent / "reports" / "monitoring" / "churn" / f"dt={day}" / "report.html"
    )
    windows = [k for k in _tags() if k.startswith("monitor.")]
    assert windows == [f"monitor.{day}"], "the tag names the day, not the folder"
    subject = email.message_from_bytes(smtp_server.messages[0].content)["Subject"]
    assert subject.endswith(f"({day})") and "adhoc-run" not in subject


def test_a_manifest_without_a_day_is_refused_naming_the_folder(
    lake: Path, telco_raw: Path, fresh_windows
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import MonitoringError, measure

    # An older publish named the day only in its path; the path is never read as a date.
    folder = score_churn("2026-12-04", customers(telco_raw))
    manifest = Path(folder) / "_manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "day"}))
    with pytest.raises(MonitoringError, match="names no window day"):
        measure(get_model_config("churn"), folder)
    result = run_mlops("monitor", "--model", "churn", "--current", folder, "--no-email")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{folder}: its _manifest.json names no window day" in result.stderr
    assert last_json(result)["status"] == "failed"
    assert not any(k.startswith("monitor.") for k in _tags()), "no window was recorded"


def test_a_registry_that_is_down_is_transient_never_a_monitoring_error(
    production_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from tabular_mlops import faults, tracking
    from tabular_mlops.monitoring import MonitoringError, _importance, _reference

    run_id = _production_run(production_models)
    with monkeypatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        tracking.configure()
        for read in (lambda: _importance(run_id), lambda: _reference(run_id, None, None, tmp_path, "", 1000)):
            with pytest.raises(MlflowException) as raised:
                read()
            assert faults.is_transient(raised.value) and not isinstance(raised.value, MonitoringError)
    tracking.configure()  # back to the test registry


def test_unreadable_importances_are_reported_in_the_summary_and_the_email(
    production_models: dict, lake: Path, telco_raw: Path, smtp_server, fresh_windows
) -> None:
    from tabular_mlops import tracking
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import IMPORTANCE_FILE, monitor

    run_id = _production_run(production_models)
    artifacts = Path(unquote(urlparse(tracking.configure().get_run(run_id).info.artifact_uri).path))
    logged, aside = artifacts / IMPORTANCE_FILE, lake.parent / "column_importance.json"
    location = score_churn("2026-12-05", drifted(customers(telco_raw)))
    shutil.move(logged, aside)  # the artifact is gone: a permanent fault, not a passing one
    try:
        summary = monitor(get_model_config("churn"), location)
    finally:
        shutil.move(aside, logged)
    assert summary["weights"].startswith(f"unweighted: run {run_id} has no readable {IMPORTANCE_FILE}")
    assert summary["breach"] and summary["alert_sent"], summary["alert_reason"]
    assert "Drift is not weighted by importance, every feature counts the same" in _html(
        smtp_server.messages[0]
    )
    weighted = monitor(get_model_config("churn"), location, send=False)
    assert weighted["weights"].startswith("feature importance")
