"""`make demo`: the whole loop on generated data, through the bundle's own Airflow DAGs, told briefly.

For each model: generate its data set, train it with `<model>_training` (promoted when the gate
passes), then play two days: day 1 (yesterday) a normal partition of new rows, day 2 (today) a
drifted one. Each day is scored with `<model>_batch_scoring` and checked with `<model>_monitoring`;
day 2's breach ends in a real alert email through a local SMTP server (aiosmtpd on loopback),
written to `reports/mail/*.eml`. Last, `reports/index.html` puts everything on one page.

Every DAG runs with Airflow's own `dag.test()` against a private SQLite metadata DB (`.airflow/`)
and the embedded MLflow registry (`mlruns/`). The terminal gets one line per step; Airflow's and
the libraries' logs go to `reports/demo/logs/<step>.log`. Exits non-zero when a DAG run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tabular_mlops import settings
from tabular_mlops.demo_console import FAIL, OK, WARN, Story, seconds
from tabular_mlops.demo_facts import (
    DayFacts,
    ModelOutcome,
    day_facts,
    mail_dir,
    predictions_partition,
    training_facts,
)
from tabular_mlops.demo_page import write_index
from tabular_mlops.local_airflow import (
    AirflowHomeBusy,
    airflow_home_lock,
    default_home,
    project_airflow_settings,
)
from tabular_mlops.mail_sink import smtp_sink

# model -> (dataset, rows, seed, what one row is); sizes large enough for a stable test-split AUC.
DATASETS = {
    "churn": ("telco", 7043, 7, "customers"),
    "credit_risk": ("home_credit", 8000, 7, "applicants"),
}
# Rows generated (with other seeds) for each day's partition. Home Credit puts about one applicant
# in six into application_test.csv: 4,000 give a window above monitoring.min_rows (500).
NEW_ROWS = {"churn": 2000, "credit_risk": 4000}
DIRTY_ROWS = 5


# Day 2 of credit_risk adds an incident to the generator's drifted population: the bureau and
# previous-application extracts arrive empty (header only), as when an upstream export fails. The
# generator's drift alone moves this model's 516 features too little to breach on 600 rows.
INCIDENTS = {"credit_risk": ("bureau.csv", "bureau_balance.csv", "previous_application.csv")}
INCIDENT_LABEL = {"credit_risk": "bureau and previous-application extracts empty"}


def _keep_header_only(path: Path) -> None:
    """Truncate a generated CSV to its header line (the day-2 incident)."""
    with path.open() as handle:
        header = handle.readline()
    path.write_text(header)


def _stage_partition(model: str, dataset: str, day: date, drift: bool) -> Path:
    """New rows for `day` in the lake's incoming partition: what an upstream system would drop."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.dataset import generate_dataset
    from tabular_mlops.scoring import partition

    config = get_model_config(model)
    target = Path(partition(config, "incoming", day.isoformat()))
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        seed = 9 if drift else 8
        generate_dataset(dataset, Path(tmp), rows=NEW_ROWS[model], seed=seed, drift=drift, dirty_rows=3)
        target.mkdir(parents=True)
        for path in Path(tmp).iterdir():
            # Applicants to score come as application_test.csv; the training table stays out.
            if path.name != "application_train.csv":
                shutil.copy(path, target / path.name)
    if drift and model in INCIDENTS:
        for name in INCIDENTS[model]:
            _keep_header_only(target / name)
    # Last, as a producer does: the scoring DAG waits for this marker before it reads the partition.
    (target / config.scoring.completion_marker).touch()
    return target


def _prepare_airflow(story: Story) -> None:
    """Point Airflow at a private home in the project and migrate its metadata DB (idempotent)."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(default_home())))
    for name, value in project_airflow_settings().items():
        os.environ.setdefault(name, value)
    airflow = Path(sys.executable).parent / "airflow"
    with story.step("airflow_db_migrate") as started:
        result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)  # noqa: S603 - the venv's airflow, fixed argv
        print(result.stdout, result.stderr)
    if result.returncode != 0:
        story.say(f"{FAIL} airflow db migrate failed: see {story.log_path('airflow_db_migrate')}")
        raise SystemExit(1)
    story.say(f"{OK} Airflow metadata DB ready in {home} ({seconds(started)})")


def _run_dag(story: Story, bag: Any, dag_id: str, log_suffix: str = "", **test_args: Any) -> Any:
    """One `dag.test()` with a progress bar, its output in the step's log file."""
    dag = bag.get_dag(dag_id)
    with story.step(dag_id + log_suffix), story.dag_progress(dag_id, len(dag.tasks)):
        return dag.test(**test_args)


def _failed_tasks(run: Any) -> str:
    """The tasks of a run that did not succeed, for a one-line failure."""
    bad = [ti.task_id for ti in run.get_task_instances() if str(ti.state) in ("failed", "upstream_failed")]
    return ", ".join(bad) or "none recorded"


def _train(story: Story, bag: Any, model: str, outcome: ModelOutcome) -> bool:
    """Generate the model's data and run its training DAG; say what the gate decided."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.dataset import generate_dataset

    dataset, rows, seed, noun = DATASETS[model]
    out = settings.data_dir() / "demo" / dataset
    with story.step(f"{model}_generate") as started:
        generate_dataset(dataset, out, rows=rows, seed=seed, dirty_rows=DIRTY_ROWS)
    story.say(
        f"{OK} generated {rows:,} {noun} ({dataset}, {DIRTY_ROWS} dirty rows) in {out} ({seconds(started)})"
    )
    if get_model_config(model).promotion.approval == "required":
        from tabular_mlops.approval import approve_in_background

        approve_in_background(model, "approved by make demo", {"id": "demo", "name": "demo"})
    started = time.perf_counter()
    run = _run_dag(story, bag, f"{model}_training", run_conf={"data": str(out)})
    outcome.training = str(run.state)
    if outcome.training != "success":
        story.say(
            f"{FAIL} {model}_training {run.state} ({_failed_tasks(run)}): "
            f"see {story.log_path(f'{model}_training')}"
        )
        return False
    facts = outcome.facts = training_facts(model, run.run_id)
    story.say(f"{OK} {model}_training in {seconds(started)}: {facts.line()}")
    if get_model_config(model).promotion.approval == "required":
        story.say(
            f"  {WARN} promotion needs approval: answered as user 'demo' (you: Airflow UI or `mlops approve`)"
        )
    story.say(f"  quarantined {facts.quarantined} malformed rows with their reasons: {facts.quarantine_dir}")
    return True


def _play_day(story: Story, bag: Any, model: str, day: date, drift: bool) -> DayFacts:
    """Stage one day's partition, score it and monitor it; say what monitoring found."""
    dataset, _, _, noun = DATASETS[model]
    _stage_partition(model, dataset, day, drift)
    logical = datetime(day.year, day.month, day.day, tzinfo=UTC)
    label = f"day {'2' if drift else '1'} {day}{' (drifted)' if drift else ''}"
    if drift and model in INCIDENTS:
        label += f", {INCIDENT_LABEL[model]}"
    since = time.time()
    # Monitoring is told the partition: a manual run would otherwise take the newest one.
    conf = {"batch_scoring": {}, "monitoring": {"current": str(predictions_partition(model, day))}}
    for kind in ("batch_scoring", "monitoring"):
        run = _run_dag(
            story, bag, f"{model}_{kind}", logical_date=logical, run_conf=conf[kind], log_suffix=f"_{day}"
        )
        if str(run.state) != "success":
            story.say(
                f"{FAIL} {model} {label}: {model}_{kind} {run.state} ({_failed_tasks(run)}): "
                f"see {story.log_path(f'{model}_{kind}_{day}')}"
            )
            return DayFacts.failed(model, day, drift, f"{model}_{kind} {run.state}")
    facts = day_facts(model, day, drift, since)
    story.say(f"{OK if not facts.breach else WARN} {model} {label}: {facts.line(noun)}")
    return facts


def _model(story: Story, bag: Any, model: str, today: date) -> ModelOutcome:
    """Train one model, then play its two days."""
    outcome = ModelOutcome(model)
    story.say(f"[bold]{model}[/]")
    if _train(story, bag, model, outcome):
        for day, drift in ((today - timedelta(days=1), False), (today, True)):
            outcome.days.append(_play_day(story, bag, model, day, drift))
    return outcome


def _commands() -> dict[str, str]:
    """How to look further, as the page and the last lines give them."""
    from tabular_mlops import tracking

    # A configured server's URI may carry credentials: name the variable, never print the value.
    mlflow_ui = (
        f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {tracking.tracking_uri()}"
        if tracking.is_embedded()
        else "the MLflow server in MLFLOW_TRACKING_URI"
    )
    return {
        "MLflow UI (http://127.0.0.1:5000)": mlflow_ui,
        "Airflow UI (http://127.0.0.1:8080)": "make airflow",
        "Monitoring dashboards (http://127.0.0.1:8001)": "make monitoring-ui",
        "REST scoring (http://127.0.0.1:8000/docs)": "make serve",
    }


def _load_dags(story: Story) -> Any:
    """The bundle's DAGs, parsed as the dag-processor would."""
    with story.step("dagbag"):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(settings.project_dir() / "dags"))
    if bag.import_errors:
        story.say(f"{FAIL} DAG import errors: {sorted(bag.import_errors)}; see {story.log_path('dagbag')}")
        raise SystemExit(1)
    return bag


def _check_local_lake(story: Story) -> None:
    """The demo stages files with local paths: refuse a lake in object storage (MLOPS_LAKE)."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import lake_root

    for model in DATASETS:
        lake = settings.resolve_location(lake_root(get_model_config(model)))
        if "://" in lake:
            story.say(
                f"{FAIL} the demo plays its days on a local lake, and {model}'s is {lake}: unset MLOPS_LAKE"
            )
            raise SystemExit(2)


def _run(story: Story) -> list[ModelOutcome]:
    """Everything between the first and the last lines, holding the Airflow home against `make airflow`."""
    _check_local_lake(story)
    try:
        with airflow_home_lock(default_home()):
            return _run_locked(story)
    except AirflowHomeBusy as busy:
        story.say(f"{FAIL} {busy}")
        raise SystemExit(1) from None


def _run_locked(story: Story) -> list[ModelOutcome]:
    """Migrate, load the DAGs, then train and play both days of each model with the mail sink up."""
    _prepare_airflow(story)
    bag = _load_dags(story)
    today = datetime.now(UTC).date()
    with smtp_sink(mail_dir()) as connection:
        # The demo's own mail server: whatever smtp_default points at elsewhere, alerts land on disk.
        os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = connection
        story.say(f"{OK} SMTP sink on loopback writing every message to {mail_dir()}")
        return [_model(story, bag, model, today) for model in DATASETS]


def main() -> int:
    """Run the demo; the terminal gets the story, the log folder everything else."""
    import traceback
    import warnings

    # dag.test() reaches Airflow's execution API in-process through Starlette's TestClient, whose
    # httpx backend Starlette now deprecates: Airflow's choice, not something this demo can change.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    started = time.perf_counter()
    log_dir = settings.reports_dir() / "demo" / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    story = Story(log_dir)
    try:
        story.say(
            "[bold]tabular-mlops demo[/]: two models from raw CSVs to scored days, a drift alert and one page"
        )
        story.say(f"Airflow and library logs go to {log_dir}/")
        outcomes = _run(story)
        commands = _commands()
        page = write_index(outcomes, commands)
        story.say(f"\n[bold]Everything on one page:[/] {page}  (file://{page})")
        for what, command in commands.items():
            story.say(f"  {what}: {command}")
        ok = all(o.ok for o in outcomes)
        story.say(f"{OK if ok else FAIL} demo {'done' if ok else 'FAILED'} in {seconds(started)}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        story.say(f"{FAIL} interrupted; what ran so far is logged in {log_dir}/")
        return 130
    except SystemExit as stop:
        if isinstance(stop.code, int):
            return stop.code
        story.say(f"{FAIL} {stop.code}")
        return 1
    except Exception as error:  # noqa: BLE001 - said in one line; the traceback goes to the log
        traceback.print_exc()
        story.say(
            f"{FAIL} demo stopped: {type(error).__name__}: {error}; traceback in {log_dir / 'demo.log'}"
        )
        return 1
    finally:
        story.close()


if __name__ == "__main__":
    sys.exit(main())
