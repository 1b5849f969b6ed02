"""The evaluate, gate and promote stages of a trained candidate.

evaluate scores the candidate and the current production version on the same held-out rows,
writes metrics and plots to `reports/evaluation/<model>/<run>/` and the MLflow run; gate judges
the candidate (floors, non-inferiority to production, calibration, slices) and writes the
verdict and a model card onto the version; promote moves the `production` alias only when the
gate passed and this is not a dry run. Each stage reads what the previous one left in the
run's working folder, so the three can run as separate Airflow tasks on different workers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_mlops import faults, registry, settings, signing, tracking
from tabular_mlops.config import ModelConfig
from tabular_mlops.training import LABEL, TEST_ROWS, signature_frame, work_dir_for

SCORES = "test_scores.parquet"
EVALUATION = "evaluation.json"
VERDICT = "gate_verdict.json"
SLICE_PREFIX = "slice:"


class GateRefused(RuntimeError):
    """The candidate did not pass the quality gate; the message lists the failed checks."""

    def __init__(self, message: str, verdict: dict[str, Any]) -> None:
        super().__init__(message)
        self.verdict = verdict


@dataclass
class GateOverrides:
    """Per-run overrides of the config's gate floors (UI Params, CLI flags)."""

    min_auc: float | None = None
    min_accuracy: float | None = None


def evaluation_dir(config: ModelConfig, run_id: str) -> Path:
    """reports/evaluation/<model>/<run>/."""
    return settings.reports_dir() / "evaluation" / config.name / run_id


def _load(name: str, version: str | None, run_id: str = "") -> Any:
    # A dry run's candidate is no version: it loads from its run, under the run's signature.
    return signing.load_verified(name, version) if version else signing.load_verified_run(name, run_id)


def _score(model: Any, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(signature_frame(rows))["probability"], dtype=float)


def _score_production(
    config: ModelConfig, name: str, version: str | None, rows: pd.DataFrame, y: np.ndarray
) -> tuple[np.ndarray | None, dict[str, float], str | None]:
    """(probabilities, metrics, why it could not be scored) of the production version on the rows."""
    from tabular_mlops.evaluation import compute_metrics

    if version is None:
        return None, {}, None
    try:
        production = _score(_load(name, version), rows)
        return production, compute_metrics(y, production, config.model.threshold), None
    except Exception as exc:  # noqa: BLE001 - any failure to score production fails the gate closed
        if faults.is_transient(exc):
            raise  # a registry or object store down for a moment: retry, never refuse for it
        return None, {}, faults.describe(exc)


def evaluate_candidate(config: ModelConfig, run_id: str, version: str | None) -> dict[str, Any]:
    """Score candidate and production on the test rows; log metrics and plots; return the summary.

    `version` None is a dry run's candidate, scored from the model its run logged.
    """
    from tabular_mlops.evaluation import evaluate
    from tabular_mlops.explain import explain_rows
    from tabular_mlops.modeling import train_threads

    work = work_dir_for(config, run_id)
    rows = pd.read_parquet(work / TEST_ROWS)
    y = rows.pop(LABEL).to_numpy()
    name = tracking.registered_name(config.model.registered_name)
    tracking.configure()
    candidate_model = _load(name, version, run_id)
    candidate = _score(candidate_model, rows)
    # The candidate's TreeSHAP values on (a sample of) the test rows: summary plot, model card.
    explanation = explain_rows(candidate_model.unwrap_python_model(), config, rows, threads=train_threads())
    production_version = registry.alias_version(name, registry.PRODUCTION)
    production, production_metrics, production_error = _score_production(
        config, name, production_version, rows, y
    )
    importance = pd.read_parquet(work / "importance.parquet")["importance"]
    out = evaluation_dir(config, run_id)
    result = evaluate(
        y,
        candidate,
        config.model.threshold,
        importance,
        out,
        f"{config.name} {_label(version)}",
        explanation,
    )
    _keep_scores(config, work, rows, y, candidate, production)
    summary = {
        "model": config.name,
        "run_id": run_id,
        "version": version,
        "metrics": result.metrics,
        "production_version": production_version,
        "production_metrics": production_metrics,
        "production_error": production_error,
        "report_dir": str(out),
        "drivers": explanation.drivers(),
        "drivers_rows": len(explanation.contributions),
    }
    (work / EVALUATION).write_text(json.dumps(summary, indent=2, default=str))
    _log_evaluation(run_id, result.metrics, production_metrics, out)
    return summary


def _keep_scores(
    config: ModelConfig,
    work: Path,
    rows: pd.DataFrame,
    y: np.ndarray,
    candidate: np.ndarray,
    production: np.ndarray | None,
) -> None:
    """Write the test rows' labels, both versions' scores and the gate's slice columns for the gate."""
    scores = pd.DataFrame({LABEL: y, "candidate": candidate})
    if production is not None:
        scores["production"] = production
    for column in config.gate.slices:
        if column in rows.columns:
            scores[f"{SLICE_PREFIX}{column}"] = rows[column].to_numpy()
    scores.to_parquet(work / SCORES, index=False)


def _log_evaluation(
    run_id: str, metrics: dict[str, float], production_metrics: dict[str, float], out: Path
) -> None:
    """Log the test metrics (production's beside them) and the report folder on the training run."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        if production_metrics:
            mlflow.log_metrics({f"production_test_{k}": v for k, v in production_metrics.items()})
        mlflow.log_artifacts(str(out), artifact_path="evaluation")


def gate_candidate(
    config: ModelConfig, run_id: str, overrides: GateOverrides | None = None
) -> dict[str, Any]:
    """Judge the evaluated candidate; record the verdict and model card; return the verdict."""
    import mlflow

    from tabular_mlops.gate import GatePolicy, auc_intervals, judge, slice_masks

    overrides = overrides or GateOverrides()
    work = work_dir_for(config, run_id)
    summary = json.loads((work / EVALUATION).read_text())
    scores = pd.read_parquet(work / SCORES)
    y = scores[LABEL].to_numpy()
    gate = config.gate
    policy = GatePolicy(
        min_auc=overrides.min_auc if overrides.min_auc is not None else gate.min_auc,
        min_accuracy=overrides.min_accuracy if overrides.min_accuracy is not None else gate.min_accuracy,
        threshold=config.model.threshold,
        max_auc_drop=gate.max_auc_drop_vs_production,
        max_brier_increase=gate.max_brier_increase,
        slice_min_auc=gate.slice_min_auc,
        slice_min_positives=gate.slice_min_positives,
        bootstrap_rounds=gate.bootstrap_rounds,
    )
    slice_values = scores[[c for c in scores.columns if c.startswith(SLICE_PREFIX)]]
    slice_values = slice_values.rename(columns=lambda c: c.removeprefix(SLICE_PREFIX))
    slices = slice_masks(slice_values, list(slice_values.columns))
    verdict = judge(
        scores["candidate"].to_numpy(),
        y,
        policy,
        production=scores["production"].to_numpy() if "production" in scores else None,
        production_error=summary.get("production_error"),
        slices=slices or None,
        seed=config.split.seed,
    ).to_dict()
    verdict["policy"] = asdict(policy)
    models = {"candidate": scores["candidate"].to_numpy()}
    if "production" in scores:
        models["production"] = scores["production"].to_numpy()
    verdict["auc_intervals"] = auc_intervals(
        y, models, policy.bootstrap_rounds, config.split.seed, policy.confidence
    )
    (work / VERDICT).write_text(json.dumps(verdict, indent=2, default=str))
    report = Path(summary["report_dir"])
    (report / VERDICT).write_text(json.dumps(verdict, indent=2, default=str))
    card = model_card(config, summary, verdict)
    (report / "model_card.md").write_text(card)
    if summary["version"] is not None:  # a dry run has no version to write on: the run holds it all
        client = tracking.configure()
        name = tracking.registered_name(config.model.registered_name)
        client.update_model_version(name, summary["version"], description=card)
        client.set_model_version_tag(name, summary["version"], "gate.passed", str(verdict["passed"]).lower())
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tag("gate.passed", str(verdict["passed"]).lower())
        mlflow.log_dict(verdict, f"evaluation/{VERDICT}")
        mlflow.log_text(card, "evaluation/model_card.md")
    return verdict


class ApprovalMissing(RuntimeError):
    """promotion.approval is required and no approval of this candidate was given."""


def promote_candidate(
    config: ModelConfig,
    run_id: str,
    dry_run: bool = False,
    origin: dict[str, str] | None = None,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move the gated candidate to production (direct) or challenger (shadow); refuse when it failed.

    With `promotion.approval: required`, `approval` must be the recorded Approve of a person.
    """
    work = work_dir_for(config, run_id)
    summary = json.loads((work / EVALUATION).read_text())
    verdict = json.loads((work / VERDICT).read_text())
    name = tracking.registered_name(config.model.registered_name)
    version = summary["version"]
    if not verdict["passed"]:
        reasons = "; ".join(verdict.get("reasons", [])) or "see the verdict"
        raise GateRefused(f"{name} version {version} refused by the gate: {reasons}", verdict)
    if dry_run or version is None:
        return {
            "promoted": False,
            "dry_run": True,
            "version": version,
            "production": summary["production_version"],
        }
    if config.promotion.approval == "required" and (approval or {}).get("decision") != "approve":
        raise ApprovalMissing(
            f"{name} version {version}: promotion.approval is required and nobody approved it"
        )
    gate = {"passed": True, "reasons": verdict.get("reasons", []), "checks": len(verdict.get("checks", []))}
    move_to = registry.set_challenger if config.promotion.mode == "shadow" else registry.promote
    move = move_to(
        name,
        version,
        registry.actor(origin),
        reason=f"passed the gate in run {run_id}",
        gate=gate,
        approval=approval,
    )
    return {
        "promoted": move.alias == registry.PRODUCTION,
        "alias": move.alias,
        "dry_run": False,
        "version": version,
        "previous": move.from_version,
        "already": move.already,  # a retry whose lost try had moved the alias already
    }


def _label(version: str | None) -> str:
    return f"v{version}" if version else "dry run (unregistered)"


def _metric_rows(candidate: dict[str, float], production: dict[str, float]) -> list[str]:
    names = ["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier", "ks"]
    rows = ["| metric | candidate | production |", "| --- | ---: | ---: |"]
    for metric in names:
        other = f"{production[metric]:.4f}" if metric in production else "-"
        rows.append(f"| {metric} | {candidate.get(metric, float('nan')):.4f} | {other} |")
    return rows


def _interval_row(verdict: dict[str, Any]) -> list[str]:
    """The AUC's bootstrap interval of candidate and production, as one more table row."""
    intervals = verdict.get("auc_intervals") or {}
    if not intervals:
        return []
    confidence = verdict.get("policy", {}).get("confidence", 0.95)

    def text(name: str) -> str:
        bounds = intervals.get(name)
        return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]" if bounds else "-"

    return [f"| roc_auc {confidence:.0%} CI | {text('candidate')} | {text('production')} |"]


def model_card(config: ModelConfig, summary: dict[str, Any], verdict: dict[str, Any]) -> str:
    """Short markdown description of a version: data, metrics vs production, gate verdict, plots."""
    metrics = summary["metrics"]
    lines = [
        f"# {config.model.registered_name} {_label(summary['version'])}",
        "",
        config.description,
        "",
        f"- model: {config.model.type}, threshold {config.model.threshold}",
        f"- training run: `{summary['run_id']}`",
        f"- test rows: {int(metrics.get('n', 0)):,} ({int(metrics.get('n_positive', 0)):,} positive)",
        f"- production at evaluation: {summary.get('production_version') or 'none'}",
        "",
        "## Test metrics",
        *_metric_rows(metrics, summary.get("production_metrics") or {}),
        *_interval_row(verdict),
        "",
        f"## Gate: {'passed' if verdict['passed'] else 'refused'}",
        "| check | value | bound | result |",
        "| --- | ---: | ---: | --- |",
    ]
    for check in verdict["checks"]:
        value = "-" if check["value"] is None else f"{check['value']:.4f}"
        bound = "-" if check["bound"] is None else f"{check['bound']:.4f}"
        result = {True: "pass", False: "FAIL", None: "not judged"}[check["passed"]]
        lines.append(f"| {check['name']} | {value} | {bound} | {result} |")
    details = [f"- {c['name']}: {c['detail']}" for c in verdict["checks"] if c.get("detail")]
    lines += ["", *details]
    lines += _driver_rows(summary)
    plots = "ROC, PR, calibration, confusion, importance, SHAP summary"
    lines += ["", f"Plots: `evaluation/` artifacts of the run ({plots})."]
    return "\n".join(lines) + "\n"


def _driver_rows(summary: dict[str, Any]) -> list[str]:
    """The global top drivers (mean |TreeSHAP| on test rows) as a markdown table; [] without them."""
    drivers = summary.get("drivers") or []
    if not drivers:
        return []
    rows = summary.get("drivers_rows")
    lines = [
        "",
        f"## Top drivers (mean |SHAP| in log-odds over {rows:,} test rows)" if rows else "## Top drivers",
        "| # | field | meaning | mean abs SHAP |",
        "| ---: | --- | --- | ---: |",
    ]
    for rank, driver in enumerate(drivers, start=1):
        meaning = str(driver["description"]).replace("|", "/")  # a pipe would split the cell
        lines.append(f"| {rank} | `{driver['field']}` | {meaning} | {driver['mean_abs_shap']:.4f} |")
    return lines


def model_card_of(config: ModelConfig, run_id: str) -> str:
    """The model card the gate wrote for the candidate of `run_id`."""
    summary = json.loads((work_dir_for(config, run_id) / EVALUATION).read_text())
    return (Path(summary["report_dir"]) / "model_card.md").read_text()
