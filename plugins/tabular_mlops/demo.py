"""`make demo`: the whole loop on generated data, through the bundle's own Airflow DAGs.

For each model: generate its data set, train it with `<model>_training` (promoted when the gate
passes), put a day's partition of new rows into the lake, score it with `<model>_batch_scoring`
and check it with `<model>_monitoring`. Every DAG runs with Airflow's own `dag.test()` against a
private SQLite metadata DB (`.airflow/` in the project) and the embedded MLflow registry
(`mlruns/`). Prints where the metrics, plots, predictions and reports are; exits non-zero when a
DAG run fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tabular_mlops import settings

DATASETS = {
    # model -> (dataset, rows, seed); sizes large enough for a stable test-split AUC.
    "churn": ("telco", 7043, 7),
    "credit_risk": ("home_credit", 8000, 7),
}
NEW_ROWS = 2000  # customers / applicants generated (with another seed) for the day's partition


def _stage_partition(model: str, dataset: str, day: str) -> Path:
    """New rows for `day` in the lake's incoming partition: what an upstream system would drop."""
    import shutil
    import tempfile

    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.dataset import generate_dataset
    from tabular_mlops.scoring import partition

    config = get_model_config(model)
    target = Path(partition(config, "incoming", day))
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(dataset, Path(tmp), rows=NEW_ROWS, seed=8, dirty_rows=3)
        target.mkdir(parents=True)
        for path in Path(tmp).iterdir():
            # Applicants to score come as application_test.csv; the training table stays out.
            if path.name != "application_train.csv":
                shutil.copy(path, target / path.name)
    # Last, as a producer does: the scoring DAG waits for this marker before it reads the partition.
    (target / config.scoring.completion_marker).touch()
    return target


def _prepare_airflow() -> None:
    """Point Airflow at a private home in the project and migrate its metadata DB once."""
    home = settings.project_dir() / ".airflow"
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(settings.project_dir() / "dags"))
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)  # noqa: S603 - the venv's airflow, fixed argv
    if result.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{result.stderr[-3000:]}")


def _train(bag: Any, model: str, data: Path) -> Any:
    """Run `<model>_training`; where it waits for approval, the demo answers as user `demo`."""
    import threading

    from tabular_mlops.approval import APPROVE, answer_in_metadata_db
    from tabular_mlops.config import get_model_config

    dag_id = f"{model}_training"
    if get_model_config(model).promotion.approval == "required":
        print(
            f"== {model}: promotion.approval is required; the demo approves as user 'demo' (in real "
            f"use: the Airflow UI's Required Actions or `mlops approve --model {model} --run <run>`)",
            flush=True,
        )

        def approve() -> None:
            try:
                answer_in_metadata_db(
                    dag_id, APPROVE, "approved by make demo", {"id": "demo", "name": "demo"}
                )
            except TimeoutError:  # the run ended before asking (a refused gate): nothing to approve
                pass

        threading.Thread(target=approve, daemon=True).start()
    return bag.get_dag(dag_id).test(run_conf={"data": str(data)})


def main() -> int:
    """Generate, train through the DAGs, and print where to look."""
    from tabular_mlops import tracking
    from tabular_mlops.generators.dataset import generate_dataset

    _prepare_airflow()
    from airflow.dag_processing.dagbag import DagBag

    demo_dir = settings.data_dir() / "demo"
    bag = DagBag(dag_folder=str(settings.project_dir() / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    outcome: dict[str, str] = {}
    from datetime import UTC, datetime

    today = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    for model, (dataset, rows, seed) in DATASETS.items():
        out = demo_dir / dataset
        print(f"== {model}: generating {rows:,} rows of {dataset} (5 dirty rows) into {out}", flush=True)
        generate_dataset(dataset, out, rows=rows, seed=seed, dirty_rows=5)
        print(f"== {model}: running {model}_training with dag.test()", flush=True)
        run = _train(bag, model, out)
        outcome[model] = str(run.state)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        print(f"== {model}_training: {run.state} {json.dumps(states)}", flush=True)
        if run.state != "success":
            continue
        incoming = _stage_partition(model, dataset, today.date().isoformat())
        for kind in ("batch_scoring", "monitoring"):
            print(f"== {model}: running {model}_{kind} with dag.test() ({incoming.name})", flush=True)
            followup = bag.get_dag(f"{model}_{kind}").test(logical_date=today)
            outcome[f"{model}_{kind}"] = str(followup.state)
            states = {ti.task_id: str(ti.state) for ti in followup.get_task_instances()}
            print(f"== {model}_{kind}: {followup.state} {json.dumps(states)}", flush=True)

    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config

    print("\nResults")
    for model in DATASETS:
        config = get_model_config(model)
        name = tracking.registered_name(config.model.registered_name)
        try:
            production = registry.alias_version(name, registry.PRODUCTION)
        except Exception:  # noqa: BLE001 - a model that never registered has no alias to show
            production = None
        print(f"- {model}: training {outcome[model]}, {name} in production: version {production}")
        for kind in ("batch_scoring", "monitoring"):
            print(f"  {model}_{kind}: {outcome.get(f'{model}_{kind}', 'not run')}")
    reports = settings.reports_dir()
    print(f"- validation reports: {reports / 'validation'}/<model>/<run>/summary.md")
    print(f"- metrics, plots, gate verdict, model card: {reports / 'evaluation'}/<model>/<run>/")
    print(f"- quarantined rows: {settings.data_dir() / 'quarantine'}/<model>/<run>/")
    from tabular_mlops.scoring import lake_root

    lake = settings.resolve_location(lake_root(get_model_config("churn")))
    print(f"- predictions, rejects, manifest: {lake}/predictions/<model>/dt={today.date()}/")
    print(f"- drift and quality reports: {reports / 'monitoring'}/<model>/dt={today.date()}/report.html")
    print("- monitoring dashboards (Evidently UI): make monitoring-ui  (http://127.0.0.1:8001)")
    print(
        f"- MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking.tracking_uri()}  (http://127.0.0.1:5000)"
    )
    return 0 if all(state == "success" for state in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
