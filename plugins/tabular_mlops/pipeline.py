"""The training chain as task bodies: ingest -> features -> train -> evaluate -> gate -> promote.

The Airflow tasks call these functions one per task and pass their small return values along;
`mlops train` calls `run_training_chain`, which runs the very same functions in one process. A run's
overrides (`training.RunOverrides`: CLI flags, DAG Params) become a validated copy of the config
that every stage of the run uses; one that registers under another name (`register_name`) moves no
alias and feeds no online store, since serving and scoring read the config's registered name only.
`compare_versions` (`mlops evaluate`) scores two registry versions on the same test rows.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from tabular_mlops.training import RunOverrides, apply_overrides, experiment_for

SIDE_NAME_NOTE = (
    "registered under {name} (register_name override): only {config}'s own {own} has aliases the "
    "bundle moves, so nothing was promoted"
)


def run_config(model: str, params: Mapping[str, Any] | None = None) -> ModelConfig:
    """A model's config with a DAG run's override Params applied (validated as the YAML is)."""
    return apply_overrides(get_model_config(model), RunOverrides.from_params(params))


def registers_elsewhere(model: str, params: Mapping[str, Any] | None) -> bool:
    """True when a DAG run's register_name Param names another registered model than the config's."""
    return RunOverrides.from_params(params).renames(get_model_config(model))


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
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Task body of train: fit, log and register the candidate; return run id and version.

    A dry run registers nothing: its version is None and evaluate scores the run's logged model.
    `params` are the DAG run's Params: their overrides (RunOverrides.from_params) apply and are recorded.
    """
    from tabular_mlops import registry, signing, tracking
    from tabular_mlops.training import train_candidate

    overrides = RunOverrides.from_params(params)
    config = apply_overrides(get_model_config(model), overrides)
    if origin and not dry_run:
        earlier = registry.registered_by(
            tracking.registered_name(config.model.registered_name),
            experiment_for(config, overrides),
            origin,
        )
        if earlier is not None:  # a retry after a lost worker: keep the one version
            name = tracking.registered_name(config.model.registered_name)
            if not signing.is_signed(name, earlier[1]):  # the lost try died between register and sign
                signing.sign(name, earlier[1])
            return {"run_id": earlier[0], "version": earlier[1], "seconds": 0.0, "resumed": True}
    result = train_candidate(
        config,
        Path(interim_dir),
        Path(features_path),
        origin=origin,
        register=not dry_run,
        overrides=overrides,
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
    run_overrides: RunOverrides | None = None,
) -> dict[str, Any]:
    """Run every stage in order; return the summary the CLI prints (raises IngestFailed on bad data).

    `dry_run` registers no version and moves no alias: metrics and verdict go to the MLflow run
    only. `promote=False` registers and gates the candidate but leaves the aliases to the caller.
    `run_overrides` change `config` for this run (checked before anything is read) and are recorded.
    """
    from tabular_mlops.features import build_feature_table
    from tabular_mlops.training import train_candidate

    say = progress or (lambda _m: None)
    effective = apply_overrides(config, run_overrides)
    elsewhere = run_overrides is not None and run_overrides.renames(config)
    report = ingest_raw_tables(effective, source=data, run_id=run_id, progress=say)
    run = report.run_id
    say(f"building features with {effective.sql_path}")
    built = build_feature_table(effective, Path(str(report.interim_dir)), features_dir_for(effective, run))
    say(f"features: {built.rows:,} rows x {len(built.columns)} columns in {built.seconds:.1f}s")
    trained = train_candidate(
        effective,
        Path(str(report.interim_dir)),
        built.path,
        origin=origin,
        progress=say,
        register=not dry_run,
        overrides=run_overrides,
    )
    if effective.features.online and not dry_run and not elsewhere:
        from tabular_mlops.materialize import after_training

        stored = after_training(effective.name, str(report.interim_dir), trained.version)
        count = stored.get("entities")
        say(f"online store: {stored['skipped']}" if count is None else f"online store: {count:,} entities")
    result = _evaluate_and_gate(effective, trained.run_id, trained.version, overrides, dry_run, say)
    if run_overrides is not None and run_overrides.given():
        result["overrides"] = run_overrides.given()
    if elsewhere and not dry_run:
        own = config.model.registered_name
        result["note"] = SIDE_NAME_NOTE.format(name=trained.registered_name, config=config.name, own=own)
        return result
    if not promote and not dry_run:
        return result
    return _promote(effective, trained.run_id, result, dry_run, origin)


def _evaluate_and_gate(
    config: ModelConfig,
    run_id: str,
    version: str | None,
    overrides: GateOverrides | None,
    dry_run: bool,
    say: Any,
) -> dict[str, Any]:
    """Evaluate and gate the trained candidate; the chain's summary so far (nothing promoted yet)."""
    # The stages after training only talk to the registry and are safe to repeat: like Airflow's
    # task retries, a registry that is down for a moment is waited out instead of failing the run.
    summary = faults.retry_transient(
        lambda: evaluate_candidate(config, run_id, version), "evaluating the candidate"
    )
    say(f"test roc_auc {summary['metrics']['roc_auc']:.4f} (production: {summary['production_version']})")
    say("gating the candidate (floors, bootstrap against production, slices)")
    verdict = faults.retry_transient(
        lambda: gate_candidate(config, run_id, overrides), "gating the candidate"
    )
    return {
        "model": config.name,
        "run_id": run_id,
        "registered_name": config.model.registered_name,
        "version": version,
        "metrics": {"candidate": summary["metrics"], "production": summary["production_metrics"]},
        "production_version": summary["production_version"],
        "gate": {"passed": verdict["passed"], "reasons": verdict["reasons"], "checks": verdict["checks"]},
        "report_dir": summary["report_dir"],
        "dry_run": dry_run,
        "promoted": False,
    }


def _promote(
    config: ModelConfig, run_id: str, result: dict[str, Any], dry_run: bool, origin: dict[str, str] | None
) -> dict[str, Any]:
    """The promote stage of the chain: approval first when required, nothing when the gate refused."""
    if config.promotion.approval == "required" and not dry_run and result["gate"]["passed"]:
        # A person approves in Airflow (the approval task) or promotes by hand: nothing moves here.
        result["awaiting_approval"] = True
        return result
    try:
        moved = faults.retry_transient(
            lambda: promote_candidate(config, run_id, dry_run=dry_run, origin=origin),
            "promoting the candidate",
        )
    except GateRefused:
        return result
    result["promoted"] = bool(moved["promoted"])
    result["alias"] = moved.get("alias")
    return result


def latest_interim(config: ModelConfig) -> Path:
    """The newest published interim folder of a model (ingest's `_manifest.json` is written last)."""
    from tabular_mlops.storage import StorageError

    root = settings.data_dir() / "interim" / config.name
    found = [m for m in root.glob("*/_manifest.json") if not m.parent.name.startswith(".")]
    if not found:
        raise StorageError(
            f"no ingested data of {config.name} under {root}: give --data, or run mlops validate first"
        )
    return max(found, key=lambda m: m.stat().st_mtime).parent


def comparison_rows(
    config: ModelConfig, data: str | None, run_id: str | None, say: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """(test rows, their labels, where they came from): the config's test split of `data` (ingested
    here) or of the latest ingested data, as model input rows (features built when needed)."""
    from tabular_mlops.features import build_feature_table
    from tabular_mlops.training import LABEL, model_input_frame, split_indices

    if data is not None:
        interim = Path(str(ingest_raw_tables(config, source=data, run_id=run_id, progress=say).interim_dir))
    else:
        interim = latest_interim(config)
        say(f"rows: the latest ingested data of {config.name}, {interim}")
    features = None
    if config.features.model_input == "features":
        out = features_dir_for(config, interim.name)
        features = out / "features.parquet"
        if not features.is_file():
            say(f"building features with {config.sql_path}")
            features = build_feature_table(config, interim, out).path
    frame = model_input_frame(config, interim, features)
    y = frame.pop(LABEL).to_numpy()
    test = split_indices(frame[config.features.entity_key], config)["test"]
    split = config.split
    source = {"interim_dir": str(interim), "split": "test", "test_size": split.test_size, "seed": split.seed}
    return frame.iloc[test].reset_index(drop=True), y[test], source


def _versions_to_compare(name: str, version: str, alias: str) -> str:
    """The version `alias` points at, after checking the model, the alias and `version` exist."""
    from mlflow.exceptions import MlflowException

    from tabular_mlops import registry, tracking

    client = tracking.configure()
    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        raise registry.RegistryError(f"{name} is not in the registry: train and register it first") from None
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise registry.RegistryError(f"{name} has no version {version!r}") from None
    if alias not in aliases:
        known = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
        raise registry.RegistryError(f"{name} has no alias {alias!r} (aliases: {known})")
    return str(aliases[alias])


def _trained_on_test_rows(config: ModelConfig, name: str, version: str) -> str | None:
    """Why some of the config's test rows may be training rows of `version` (its run's split), or None.

    Rows go by the seeded hash of the entity key (training.split_positions): a version trained with
    the config's seed used only rows whose draw is above its test + validation shares.
    """
    from tabular_mlops import tracking

    client = tracking.configure()
    params = client.get_run(client.get_model_version(name, version).run_id).data.params
    split = config.split
    try:  # runs from before validation_size was logged trained with the configured one
        seed = int(params["split.seed"])
        held_out = float(params["split.test_size"]) + float(
            params.get("split.validation_size", split.validation_size)
        )
    except (KeyError, ValueError):
        return "has no recorded split: its training rows are unknown"
    if seed != split.seed:
        return f"was trained with split seed {seed}, not {split.seed}: some test rows were its training rows"
    if split.test_size > held_out + 1e-9:
        return (
            f"held out {held_out:.0%} of entities, less than the test share {split.test_size:.0%}: "
            "some test rows were its training rows"
        )
    return None


def compare_versions(
    config: ModelConfig,
    version: str,
    baseline_alias: str = "production",
    data: str | None = None,
    run_id: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Score registry `version` and the version `baseline_alias` names on the same test rows; return
    both metric sets, their difference and the paired-bootstrap interval of the AUC difference."""
    import numpy as np

    from tabular_mlops import signing, tracking
    from tabular_mlops.evaluation import compare_metrics
    from tabular_mlops.gate import paired_bootstrap_auc_diff
    from tabular_mlops.promotion import _score  # the gate's scoring path: signature frame, pyfunc

    say = progress or (lambda _m: None)
    name = tracking.registered_name(config.model.registered_name)
    baseline = _versions_to_compare(name, version, baseline_alias)
    rows, y, source = comparison_rows(config, data, run_id, say)
    scores = []
    for which in (version, baseline):
        overlap = _trained_on_test_rows(config, name, which)
        if overlap:
            say(f"warning: version {which} {overlap}")
        say(f"scoring {name} version {which} on {len(rows):,} test rows")
        scores.append(_score(signing.load_verified(name, which), rows))
    metrics = compare_metrics(y, scores[0], scores[1], config.model.threshold)
    say(f"paired bootstrap of the AUC difference ({config.gate.bootstrap_rounds} resamples)")
    diffs = paired_bootstrap_auc_diff(
        y, scores[0], scores[1], config.gate.bootstrap_rounds, config.split.seed
    )
    interval = [float(q) for q in np.quantile(diffs, [0.025, 0.975])] if diffs.size else None
    return {
        "model": config.name,
        "registered_name": name,
        "version": version,
        "baseline": {"alias": baseline_alias, "version": baseline},
        "rows": {**source, "n": int(len(y)), "positives": int(y.sum())},
        "metrics": metrics,
        "roc_auc_difference_95ci": interval,
    }
