"""
### `<model>_training`: one DAG per model config in `include/configs/`

The training chain of a model, starting from its raw tables:

1. **data_ingest**: reads the raw CSVs named in the config (local folder or `s3://` prefix,
   Param `data` overrides the config's `data.source`), sets malformed rows aside in a quarantine
   file with their source line and reason, validates every table with its Great Expectations
   suite and publishes typed parquet tables under `data/interim/<model>/<run_id>/`.
   An `error` expectation failing stops the run here; the report is in
   `reports/validation/<model>/<run_id>/summary.md` either way.

The feature, training, evaluation, gate and registry stages extend this chain.
A new model is a new YAML plus its SQL; this file does not change.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_parsing_context, task
from tabular_mlops.config import ModelConfig, load_model_configs


def build_training_dag(config: ModelConfig) -> object:
    """The training DAG of one model config."""

    @dag(
        dag_id=f"{config.name}_training",
        description=config.description or f"Training chain of {config.name}",
        doc_md=__doc__,
        schedule=config.schedules.training,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["training", config.name, *config.tags],
        default_args={
            "owner": config.owner,
            "retries": config.retries,
            "retry_delay": timedelta(minutes=2),
        },
        params={
            "data": Param(
                None,
                type=["null", "string"],
                description="Raw data folder or s3://bucket/prefix; empty uses data.source of the config.",
            ),
        },
    )
    def training() -> None:
        @task
        def data_ingest(params: dict | None = None, run_id: str | None = None) -> str:
            """Validate the raw tables and publish the typed interim tables; return their folder."""
            from tabular_mlops.ingest import run_data_ingest

            return run_data_ingest(config.name, (params or {}).get("data"), run_id or "manual")

        data_ingest()

    return training()


_current = get_parsing_context().dag_id
for _name, _config in load_model_configs().items():
    # A task run needs only its own DAG; skip building the others.
    if _current is None or _current == f"{_name}_training":
        globals()[f"{_name}_training"] = build_training_dag(_config)
