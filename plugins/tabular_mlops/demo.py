"""`make demo`: generate both data sets and train both models through their Airflow training DAGs.

Runs each `<model>_training` DAG with Airflow's own `dag.test()` against a private SQLite metadata
DB (`.airflow/` in the project) and the embedded MLflow registry (`mlruns/`), then prints where
the metrics, plots, reports and registry are. Exits non-zero when a DAG run fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tabular_mlops import settings

DATASETS = {
    # model -> (dataset, rows, seed); sizes large enough for a stable test-split AUC.
    "churn": ("telco", 7043, 7),
    "credit_risk": ("home_credit", 8000, 7),
}


def _prepare_airflow() -> None:
    """Point Airflow at a private home in the project and migrate its metadata DB once."""
    home = settings.project_dir() / ".airflow"
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(settings.project_dir() / "dags"))
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{result.stderr[-3000:]}")


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
    for model, (dataset, rows, seed) in DATASETS.items():
        out = demo_dir / dataset
        print(f"== {model}: generating {rows:,} rows of {dataset} (5 dirty rows) into {out}", flush=True)
        generate_dataset(dataset, out, rows=rows, seed=seed, dirty_rows=5)
        print(f"== {model}: running {model}_training with dag.test()", flush=True)
        run = bag.get_dag(f"{model}_training").test(run_conf={"data": str(out)})
        outcome[model] = str(run.state)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        print(f"== {model}_training: {run.state} {json.dumps(states)}", flush=True)

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
        print(f"- {model}: run {outcome[model]}, {name} in production: version {production}")
    reports = settings.reports_dir()
    print(f"- validation reports: {reports / 'validation'}/<model>/<run>/summary.md")
    print(f"- metrics, plots, gate verdict, model card: {reports / 'evaluation'}/<model>/<run>/")
    print(f"- quarantined rows: {settings.data_dir() / 'quarantine'}/<model>/<run>/")
    print(
        f"- MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking.tracking_uri()}  (http://127.0.0.1:5000)"
    )
    return 0 if all(state == "success" for state in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
