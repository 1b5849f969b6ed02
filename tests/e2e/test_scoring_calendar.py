"""The scoring calendar: the 02:00 run scores the day that ended, a backfill scores each day once,
a manual run takes a `date`, and a partition that is not complete yet is waited for (deferred)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


def _utc(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _next_run(dag: Any, after: datetime) -> Any:
    """The scheduler's next run of a DAG's serialized timetable from `after` on."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    # Through serialization, as the scheduler gets it.
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    restriction = TimeRestriction(earliest=after, latest=None, catchup=True)
    return timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)


@pytest.mark.parametrize(("dag_id", "hour"), [("churn_batch_scoring", 2), ("churn_monitoring", 6)])
def test_the_nightly_run_handles_the_day_that_ended(dagbag, dag_id: str, hour: int) -> None:
    from tabular_mlops.scoring import run_day

    info = _next_run(dagbag.get_dag(dag_id), _utc(20, 1))
    assert info.run_after == _utc(20, hour)
    assert info.data_interval.start == _utc(19) and info.logical_date == _utc(19)
    assert run_day(None, info.logical_date, info.run_after) == date(2026, 11, 19)


def test_a_backfill_of_n_days_makes_n_runs_for_n_consecutive_days(dagbag) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.backfill import _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from tabular_mlops.scoring import run_day

    DagBundlesManager().sync_bundles_to_db()  # what the dag processor does before it stores DAGs
    sync_bag_to_db(dagbag, "dags-folder", None)
    backfill = _create_backfill(
        dag_id="churn_batch_scoring",
        from_date=_utc(1),
        to_date=_utc(5),
        max_active_runs=1,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="test",
    )
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.backfill_id == backfill.id).all()
        scored = {r.run_after.date(): run_day(None, r.logical_date, r.run_after) for r in runs}
        session.query(DagRun).filter(DagRun.backfill_id == backfill.id).delete()  # nothing left queued
    # Airflow bounds a backfill by the runs' times: 02:00 on Nov 1 to Nov 4, each the day before.
    assert len(runs) == len(scored) == 4
    assert scored == {date(2026, 11, d): date(2026, 11, d) - timedelta(days=1) for d in range(1, 5)}


def test_a_date_must_be_a_day() -> None:
    from tabular_mlops.scoring import run_day

    assert run_day("2026-11-22", _utc(25), _utc(25)) == date(2026, 11, 22)
    assert run_day(None, None, _utc(25, 9)) == date(2026, 11, 24)  # manual, no logical date: yesterday
    for bad in ("2026-13-01", "20261122", "2026-W47-1", ""):
        with pytest.raises(ValueError, match=f"date='{bad}' is not a day in the form YYYY-MM-DD"):
            run_day(bad, None, _utc(25))


def _incoming(telco_raw: Path, folder: Path) -> None:
    frame = pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False).head(300)
    folder.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["Churn"]).to_csv(folder / TELCO_FILE, index=False)


def test_a_manual_run_with_a_date_waits_for_the_marker_then_scores_that_day(
    dagbag, production_models: dict, telco_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    monkeypatch.setenv("MLOPS_LAKE", str(lake))
    incoming = lake / "incoming" / "churn" / "dt=2026-11-22"
    _incoming(telco_raw, incoming)  # the data is there, the producer has not finished yet

    def finish() -> None:
        time.sleep(2)
        (incoming / "_SUCCESS").touch()

    producer = threading.Thread(target=finish)
    producer.start()
    started = time.monotonic()
    dag = dagbag.get_dag("churn_batch_scoring")
    run = dag.test(logical_date=_utc(25, 2), run_conf={"date": "2026-11-22"})
    producer.join()
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert time.monotonic() - started >= 2  # it waited for the marker instead of failing
    assert (lake / "predictions" / "churn" / "dt=2026-11-22" / "_manifest.json").is_file()
    assert not (lake / "predictions" / "churn" / "dt=2026-11-25").exists()


def test_a_schedule_without_one_time_of_day_or_a_marker_path_is_refused() -> None:
    from pydantic import ValidationError
    from tabular_mlops.config import ScheduleSpec, ScoringSpec

    with pytest.raises(ValidationError, match="minute and hour must be single numbers"):
        ScheduleSpec(scoring="*/30 * * * *")
    with pytest.raises(ValidationError, match="must be a plain file name"):
        ScoringSpec(completion_marker="../_SUCCESS")
    with pytest.raises(ValidationError, match="wait_hours"):
        ScoringSpec(wait_hours=0)
