"""The full-size credit chain in one process: `make bench-chain ROWS=307511` (RAW= reuses CSVs).

Runs `credit_risk_training` end to end with `dag.test()` (ingest, features, train, evaluate,
gate, approval answered from a thread, promote), then scores the generated test applicants with
their history through `credit_risk_batch_scoring` and judges that partition with
`credit_risk_monitoring`: the DAGs as Airflow runs them, on a private SQLite metadata DB, MLflow
store, lake and report folder. Each task's time and peak memory are taken through Airflow's
listener hooks: at a task's start the process's peak RSS (VmHWM) is reset through
/proc/self/clear_refs, at its end it is read, so each figure is that task's own. Prints one JSON
line and writes it to --json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pluggy
from bench_home_credit import report

hookimpl = pluggy.HookimplMarker("airflow")
TRAINING, SCORING, MONITORING = "credit_risk_training", "credit_risk_batch_scoring", "credit_risk_monitoring"


def _peak_rss_mb() -> float:
    """The process's peak resident memory since the last reset (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    Path("/proc/self/clear_refs").write_text("5")


class TaskClock:
    """Airflow listener recording each task instance's wall time and peak RSS."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self.process_peak_mb = 0.0

    def _key(self, ti: Any) -> str:
        return f"{ti.dag_id}.{ti.task_id}" + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        """Start the task's clock and its peak-memory window."""
        self.process_peak_mb = max(self.process_peak_mb, _peak_rss_mb())
        _reset_peak_rss()
        self.started[self._key(task_instance)] = time.perf_counter()

    def _finish(self, task_instance: Any, state: str) -> None:
        key = self._key(task_instance)
        if key not in self.started:  # skipped without running
            self.rows.append({"task": key, "state": state, "seconds": 0.0, "peak_rss_mb": None})
            return
        peak = _peak_rss_mb()
        self.process_peak_mb = max(self.process_peak_mb, peak)
        seconds = time.perf_counter() - self.started.pop(key)
        self.rows.append(
            {"task": key, "state": state, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
        )

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        """Stop the clock of a task that succeeded."""
        self._finish(task_instance, "success")

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        """Stop the clock of a task that failed."""
        self._finish(task_instance, "failed")

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        """Record a task that skipped itself."""
        self._finish(task_instance, "skipped")


def _private_environment(work: Path) -> None:
    """Point Airflow, MLflow, the lake, data and reports at the work folder, before Airflow loads."""
    project = Path(__file__).resolve().parents[1]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "MLOPS_DATA_DIR": str(work / "data"),
            "MLOPS_REPORTS_DIR": str(work / "reports"),
            "MLOPS_MLFLOW_DIR": str(work / "mlruns"),
            "MLOPS_EVIDENTLY_WORKSPACE": str(work / "evidently"),
            "MLOPS_LAKE": str(work / "lake"),
        }
    )
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)  # noqa: S603 - the venv's airflow, fixed argv


def _stage_partition(raw: Path, day: date) -> Path:
    """The test applicants and their history as the day's incoming partition (links, no copies)."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition

    config = get_model_config("credit_risk")
    target = Path(partition(config, "incoming", day.isoformat()))
    target.mkdir(parents=True)
    for path in raw.glob("*.csv"):
        if path.name != "application_train.csv":  # applicants to score come as application_test.csv
            (target / path.name).symlink_to(path.resolve())
    (target / config.scoring.completion_marker).touch()
    return target


def _run(bag: Any, dag_id: str, clock: TaskClock, **test_args: Any) -> dict[str, Any]:
    """One dag.test(); its state and wall time, or SystemExit naming the failed tasks."""
    started = time.perf_counter()
    run = bag.get_dag(dag_id).test(**test_args)
    seconds = round(time.perf_counter() - started, 1)
    # A refused gate fails its task while the run itself may end "success" (teardown semantics).
    failed = [t["task"] for t in clock.rows if t["state"] == "failed" and t["task"].startswith(dag_id + ".")]
    if str(run.state) != "success" or failed:
        raise SystemExit(f"{dag_id} {run.state} after {seconds} s (failed: {failed}); logs above")
    return {"dag": dag_id, "seconds": seconds}


def run_chain(raw: Path, day: date) -> dict[str, Any]:
    """Train, score and monitor at the size of `raw`; the per-task and per-DAG figures."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.listener import get_listener_manager
    from tabular_mlops.approval import approve_in_background
    from tabular_mlops.demo_facts import predictions_partition

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    clock = TaskClock()
    get_listener_manager().add_listener(clock)
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC)
    approve_in_background("credit_risk", "approved by bench-chain", {"id": "bench", "name": "bench"}, 7200)
    dags = [_run(bag, TRAINING, clock, run_conf={"data": str(raw)})]
    _stage_partition(raw, day)
    dags.append(_run(bag, SCORING, clock, logical_date=logical))
    current = {"current": str(predictions_partition("credit_risk", day))}
    dags.append(_run(bag, MONITORING, clock, logical_date=logical, run_conf=current))
    return {"dags": dags, "tasks": clock.rows, "chain_peak_rss_mb": round(clock.process_peak_mb)}


def main() -> None:
    """Generate (or reuse) the CSVs, run the chain, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511, help="training applicants to generate")
    parser.add_argument("--raw", default=None, help="reuse generated Home Credit CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    _private_environment(work)
    raw, generated = Path(args.raw) if args.raw else work / "raw", None
    if not args.raw:
        from tabular_mlops.generators.home_credit import generate_home_credit

        started = time.perf_counter()
        generate_home_credit(raw, rows=args.rows, seed=0)
        generated = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    figures = run_chain(raw, datetime.now(UTC).date())
    figures.update(
        rows=args.rows,
        generate_seconds=generated,
        chain_seconds=round(time.perf_counter() - started, 1),
        cpus=os.cpu_count(),
    )
    report(figures, args.json, work, args.keep)


if __name__ == "__main__":
    main()
