"""
### `<model>_training`: one DAG per model config in `include/configs/`

The training chain of a model, from its raw tables to a promoted registry version:

1. **data_ingest**: validates the raw CSVs (folder or `s3://`, Param `data` overrides the config's
   `data.source`), quarantines malformed rows, runs the Great Expectations suites and publishes
   typed parquet tables under `data/interim/<model>/<run>/`. An `error` expectation stops the run.
2. **build_features**: runs the model's SQL in `include/sql/<model>/` with DuckDB.
3. **train**: splits rows by a seeded hash of the entity key, fits XGBoost or LightGBM (from the
   YAML) with early stopping on validation log loss, logs one MLflow pyfunc with preprocessing,
   signature, input example and lineage, and registers it as a new version.
4. **evaluate**: scores the candidate and the current `production` version on the same test rows;
   metrics, plots and a model card in `reports/evaluation/<model>/<run>/` and in the MLflow run.
5. **gate**: floors, non-inferiority to production (paired bootstrap), calibration and slices.
   A refused candidate fails the run visibly; nothing is promoted.
   **materialize** (models with an online store, e.g. credit_risk; beside evaluate): writes the
   history features of every applicant in the interim tables to the online store with the
   candidate's SQL (`MLOPS_ONLINE_STORE_URL`), so serving answers `{"application": ...}` alone.
6. **approve** (only with `promotion.approval: required`, e.g. credit_risk): Airflow's
   human-in-the-loop ApprovalOperator. The task waits in Required Actions with the model card,
   the data fingerprint and links; the approvers get a mail with its link. Approve lets promote
   run; Reject, or no answer within `promotion.approval_timeout_hours`, skips it.
   `mlops approve|reject --model M --run RUN` answers from a terminal.
7. **promote**: moves alias `production` to the candidate and `previous` to the one it replaced;
   with `promotion.mode: shadow` it moves `challenger` instead and production keeps answering.
8. **record_answer** (with approval): writes who answered, when, and their comment to the
   registry's audit trail, whatever the answer was.

Param `dry_run` trains, evaluates and gates but changes nothing in the registry: no version is
registered (evaluate scores the signed model on the MLflow run) and no alias moves.

Params `test_split`, `learning_rate`, `num_leaves` (LightGBM models), `experiment_name` and
`register_name` override the config for this run only, exactly as `mlops train`'s flags do (empty:
the config's value). They are checked in data_ingest before any data is read, and recorded on the
MLflow run as `override.<name>` params beside the effective values (tag `mlops.overrides`). A run
with another `register_name` registers, evaluates and gates its version under that name but moves no
alias and skips approval and the online store: serving and scoring read the config's name only.
Param `data` also takes a single CSV file for a model of one table (churn).

Scheduled by the config's `schedules.training` and by the `retrain/<model>` Asset that the
monitoring DAG emits. A new model is a new YAML plus its SQL; this file does not change.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_parsing_context, task
from tabular_mlops import approval
from tabular_mlops.assets import model_asset, retrain_asset
from tabular_mlops.config import ModelConfig, ModelSpec, load_model_configs
from tabular_mlops.dag_defaults import dag_arguments

MAX_NUM_LEAVES = 131_072  # LightGBM's bound (training.MAX_NUM_LEAVES; training is too heavy to parse)


def _schedule(config: ModelConfig) -> Any:
    """Retrain requests always trigger a run; a cron in the config adds time-based runs."""
    if config.schedules.training is None:
        return [retrain_asset(config.name)]
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(config.schedules.training, timezone="UTC"),
        assets=[retrain_asset(config.name)],
    )


def _override_params(config: ModelConfig) -> dict[str, Param]:
    """The Params that override the config for one run (training.RunOverrides; null: the config's)."""
    model, split = config.model, config.split
    params = {
        "test_split": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            exclusiveMaximum=round(0.9 - split.validation_size, 6),
            title="Test split share",
            description=f"Share of entities held out for the test split (config: {split.test_size}); "
            f"with validation_size {split.validation_size}, at least 10% must stay to train on.",
        ),
        "learning_rate": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Learning rate",
            description="The booster's learning_rate "
            f"(config: {model.params.get('learning_rate', 'the default')}).",
        ),
        "experiment_name": Param(
            None,
            type=["null", "string"],
            minLength=1,
            maxLength=500,
            pattern=r"^\S(.*\S)?$",
            title="MLflow experiment",
            description="The MLflow experiment of this run (default: MLFLOW_EXPERIMENT_NAME, else "
            f"{config.name}-training).",
        ),
        "register_name": Param(
            None,
            type=["null", "string"],
            pattern=ModelSpec.model_json_schema()["properties"]["registered_name"]["pattern"],
            maxLength=256,
            title="Registered model name",
            description=f"Register this run's version under this name instead of {model.registered_name}: "
            "it is evaluated and gated there, and no alias moves (not another model's name).",
        ),
    }
    if model.type == "lightgbm":  # XGBoost sizes its trees by max_depth: no such Param there
        params["num_leaves"] = Param(
            None,
            type=["null", "integer"],
            minimum=2,
            maximum=MAX_NUM_LEAVES,
            title="Number of leaves",
            description=f"LightGBM's num_leaves (config: {model.params.get('num_leaves', 'default')}).",
        )
    return params


def build_training_dag(config: ModelConfig) -> object:
    """The training DAG of one model config."""
    dag_id = f"{config.name}_training"
    approval_required = config.promotion.approval == "required"
    registry_retries = {"retries": config.retries, "retry_exponential_backoff": True}

    @dag(
        dag_id=dag_id,
        description=config.description or f"Training chain of {config.name}",
        doc_md=__doc__,
        schedule=_schedule(config),
        **dag_arguments(config, "training"),
        params={
            "data": Param(
                None,
                type=["null", "string"],
                title="Raw data location",
                description="Folder or s3://bucket/prefix of the raw CSVs (a model of one table also takes "
                "its CSV file, local or s3://...csv); empty: data.source of the config.",
            ),
            "min_auc": Param(
                None,
                type=["null", "number"],
                minimum=0.5,
                maximum=1,
                title="Minimum test ROC AUC",
                description=f"Override the gate's AUC floor (config: {config.gate.min_auc}).",
            ),
            "min_accuracy": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                title="Minimum test accuracy",
                description=f"Override the gate's accuracy floor (config: {config.gate.min_accuracy}).",
            ),
            "dry_run": Param(
                False,
                type="boolean",
                title="Dry run",
                description="Train, evaluate and gate; register no version and move no alias.",
            ),
            **_override_params(config),
        },
    )
    def training() -> None:
        @task.branch
        def approval_needed(candidate: dict, params: dict | None = None) -> list[str]:
            """Ask for approval unless nothing can move: a dry run, or a version under another name."""
            from tabular_mlops.approval import TASK_ID
            from tabular_mlops.pipeline import registers_elsewhere

            if (params or {}).get("dry_run") or registers_elsewhere(config.name, params):
                return ["promote"]
            return [TASK_ID, "promote"]

        @task
        def data_ingest(params: dict | None = None, run_id: str | None = None) -> str:
            """Check the override Params, validate the raw tables and publish them; return their folder."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.config import ConfigError
            from tabular_mlops.ingest import run_data_ingest
            from tabular_mlops.pipeline import run_config

            try:  # a refused override fails the run here, before any data is read, without retries
                run_config(config.name, params)
            except ConfigError as exc:
                raise AirflowFailException(str(exc)) from exc
            return run_data_ingest(config.name, (params or {}).get("data"), run_id or "manual")

        @task
        def build_features(interim_dir: str, run_id: str | None = None) -> str:
            """Run the feature SQL over the interim tables; return the feature table's path."""
            from tabular_mlops.ingest import safe_run_id
            from tabular_mlops.pipeline import build_features as build

            return build(config.name, interim_dir, safe_run_id(run_id or "manual"))

        @task(**registry_retries)
        def train(
            interim_dir: str, features_path: str, params: dict | None = None, run_id: str | None = None
        ) -> dict:
            """Fit, log and register the candidate (a dry run: no version); return run id and version."""
            from tabular_mlops.pipeline import train as fit

            return fit(
                config.name,
                interim_dir,
                features_path,
                origin={"dag_id": dag_id, "run_id": run_id or ""},
                dry_run=bool((params or {}).get("dry_run")),
                params=params,
            )

        @task(**registry_retries)
        def evaluate(candidate: dict, params: dict | None = None) -> dict:
            """Score candidate and production on the test rows; log metrics and plots."""
            from tabular_mlops.pipeline import run_config
            from tabular_mlops.promotion import evaluate_candidate

            summary = evaluate_candidate(
                run_config(config.name, params), candidate["run_id"], candidate["version"]
            )
            return {
                "run_id": candidate["run_id"],
                "version": candidate["version"],
                "metrics": summary["metrics"],
            }

        @task(**registry_retries)
        def gate(candidate: dict, params: dict | None = None) -> dict:
            """Judge the candidate against the floors and production; fail the run when refused."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.pipeline import run_config
            from tabular_mlops.promotion import GateOverrides, gate_candidate

            params = params or {}
            effective = run_config(config.name, params)
            overrides = GateOverrides(min_auc=params.get("min_auc"), min_accuracy=params.get("min_accuracy"))
            verdict = gate_candidate(effective, candidate["run_id"], overrides)
            if not verdict["passed"]:
                raise AirflowFailException(
                    f"gate refused version {candidate['version']}: " + "; ".join(verdict["reasons"])
                )
            gated = {"run_id": candidate["run_id"], "version": candidate["version"], "passed": True}
            if approval_required:  # what the approver reads (the approval task renders it)
                from tabular_mlops.approval import request_body
                from tabular_mlops.promotion import model_card_of

                card = model_card_of(effective, candidate["run_id"])
                gated["approval_body"] = request_body(config, candidate["run_id"], card)
            return gated

        @task(
            outlets=[model_asset(config.name)],
            trigger_rule="none_failed_min_one_success",  # runs after an Approve, or a dry run's skip
            **registry_retries,
        )
        def promote(
            candidate: dict, params: dict | None = None, run_id: str | None = None, ti: Any = None
        ) -> dict:
            """Move production (or challenger, shadow mode) to the candidate unless dry_run or the
            version was registered under another name (register_name)."""
            from tabular_mlops.approval import ANSWER_KEY, TASK_ID, decision_of
            from tabular_mlops.pipeline import registers_elsewhere, run_config
            from tabular_mlops.promotion import promote_candidate

            if registers_elsewhere(config.name, params):
                return {"promoted": False, "version": candidate["version"], "skipped": "register_name"}
            wanted = approval_required and ti is not None
            answer = ti.xcom_pull(task_ids=TASK_ID, key=ANSWER_KEY) if wanted else None
            found = decision_of(answer)
            return promote_candidate(
                run_config(config.name, params),
                candidate["run_id"],
                dry_run=bool((params or {}).get("dry_run")),
                origin={"dag_id": dag_id, "run_id": run_id or ""},
                approval=found[1] if found else None,
            )

        @task(**registry_retries)
        def materialize(interim_dir: str, candidate: dict, params: dict | None = None) -> dict:
            """Write the history features to the online store with the candidate's SQL (not in a dry
            run, nor for a version registered under another name)."""
            from tabular_mlops.materialize import after_training
            from tabular_mlops.pipeline import registers_elsewhere

            if registers_elsewhere(config.name, params):
                return {"model": config.name, "skipped": "registered under another name (register_name)"}
            return after_training(config.name, interim_dir, candidate["version"])

        interim = data_ingest()
        features = build_features(interim)
        candidate = train(interim, features)
        if config.features.online:
            materialize(interim, candidate)
        gated = gate(evaluate(candidate))
        if not approval_required:
            promote(gated)
            return
        approval.wire(config, dag_id, approval_needed(gated), gated, promote(gated), **registry_retries)

    return training()


_current = get_parsing_context().dag_id
for _name, _config in load_model_configs().items():
    # A task run needs only its own DAG; skip building the others.
    if _current is None or _current == f"{_name}_training":
        globals()[f"{_name}_training"] = build_training_dag(_config)
