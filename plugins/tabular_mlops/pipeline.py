"""The training chain as task bodies: ingest -> features -> train -> evaluate -> gate -> promote.

The Airflow tasks call these functions one per task and pass their small return values along;
`mlops train` calls `run_training_chain`, which runs the very same functions in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabular_mlops import faults, settings
from tabular_mlops.config import ModelConfig, get_model_config
from tabular_mlops.ingest import ingest_raw_tables
from tabular_mlops.promotion import (
    GateOverrides,
    GateRefused,
    evaluate_candidate,
    gate_candidate,
    promote_candidate,
)


def features_dir_for(config: ModelConfig, run_id: str) -> Path:
    """data/features/<model>/<run>/."""
    return settings.data_dir() / "features" / config.name / run_id


def build_features(model: str, interim_dir: str, run_id: str) -> str:
    """Task body of build_features: run the model's SQL over the interim tables; return the table path."""
    from tabular_mlops.features import build_feature_table

    config = get_model_config(model)
    built = build_feature_table(config, Path(interim_dir), features_dir_for(config, run_id))
    return str(built.path)


def train(
    model: str,
    interim_dir: str,
    features_path: str,
    origin: dict[str, str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Task body of train: fit, log and register the candidate; return run id and version.

    A dry run registers nothing: its version is None and evaluate scores the run's logged model.
    """
    from tabular_mlops import registry, signing, tracking
    from tabular_mlops.training import train_candidate

    config = get_model_config(model)
    if origin and not dry_run:
        earlier = registry.registered_by(
            tracking.registered_name(config.model.registered_name),
            tracking.experiment_name(config.name),
            origin,
        )
        if earlier is not None:  # a retry after a lost worker: keep the one version
            name = tracking.registered_name(config.model.registered_name)
            if not signing.is_signed(name, earlier[1]):  # the lost try died between register and sign
                signing.sign(name, earlier[1])
            return {"run_id": earlier[0], "version": earlier[1], "seconds": 0.0, "resumed": True}
    result = train_candidate(
        config, Path(interim_dir), Path(features_path), origin=origin, register=not dry_run
    )
    return {"run_id": result.run_id, "version": result.version, "seconds": result.seconds}


def run_training_chain(
    config: ModelConfig,
    data: str | None = None,
    run_id: str | None = None,
    overrides: GateOverrides | None = None,
    dry_run: bool = False,
    origin: dict[str, str] | None = None,
    progress: Any = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Run every stage in order; return the summary the CLI prints (raises IngestFailed on bad data).

    `dry_run` registers no version and moves no alias: metrics and verdict go to the MLflow run
    only. `promote=False` registers and gates the candidate but leaves the aliases to the caller.
    """
    from tabular_mlops.features import build_feature_table
    from tabular_mlops.training import train_candidate

    say = progress or (lambda _m: None)
    report = ingest_raw_tables(config, source=data, run_id=run_id, progress=say)
    run = report.run_id
    say(f"building features with {config.sql_path}")
    built = build_feature_table(config, Path(str(report.interim_dir)), features_dir_for(config, run))
    say(f"features: {built.rows:,} rows x {len(built.columns)} columns in {built.seconds:.1f}s")
    trained = train_candidate(
        config, Path(str(report.interim_dir)), built.path, origin=origin, progress=say, register=not dry_run
    )
    if config.features.online and not dry_run:
        from tabular_mlops.materialize import after_training

        stored = after_training(config.name, str(report.interim_dir), trained.version)
        count = stored.get("entities")
        say(f"online store: {stored['skipped']}" if count is None else f"online store: {count:,} entities")
    # The stages after training only talk to the registry and are safe to repeat: like Airflow's
    # task retries, a registry that is down for a moment is waited out instead of failing the run.
    summary = faults.retry_transient(
        lambda: evaluate_candidate(config, trained.run_id, trained.version), "evaluating the candidate"
    )
    say(f"test roc_auc {summary['metrics']['roc_auc']:.4f} (production: {summary['production_version']})")
    verdict = faults.retry_transient(
        lambda: gate_candidate(config, trained.run_id, overrides), "gating the candidate"
    )
    result: dict[str, Any] = {
        "model": config.name,
        "run_id": trained.run_id,
        "registered_name": trained.registered_name,
        "version": trained.version,
        "metrics": {"candidate": summary["metrics"], "production": summary["production_metrics"]},
        "production_version": summary["production_version"],
        "gate": {"passed": verdict["passed"], "reasons": verdict["reasons"], "checks": verdict["checks"]},
        "report_dir": summary["report_dir"],
        "dry_run": dry_run,
        "promoted": False,
    }
    if not promote and not dry_run:
        return result
    if config.promotion.approval == "required" and not dry_run and verdict["passed"]:
        # A person approves in Airflow (the approval task) or promotes by hand: nothing moves here.
        result["awaiting_approval"] = True
        return result
    try:
        moved = faults.retry_transient(
            lambda: promote_candidate(config, trained.run_id, dry_run=dry_run, origin=origin),
            "promoting the candidate",
        )
    except GateRefused:
        return result
    result["promoted"] = bool(moved["promoted"])
    result["alias"] = moved.get("alias")
    return result
