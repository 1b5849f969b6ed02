"""Monitoring: drift and quality of a scored window against what the version learned from.

`measure` compares a predictions partition (its `inputs.parquet` and `predictions.parquet`) with
the reference logged with the version that scored it: PSI of every feature on every row
(`drift.py`), weighted by the feature's importance in that version; PSI of the predicted
probabilities; and, when labels have arrived, quality per model version. It saves an Evidently
HTML report and a JSON summary under `reports/monitoring/<model>/dt=<date>/`, logs both to
MLflow and records the window's verdict on the registered model (tag `monitor.<date>`). The
date is the one the partition's `_manifest.json` names, never read from its path.

`alert` sends one email per model and window through Airflow's SMTP connection, only when the
breach has lasted `consecutive_windows` windows and the model is not in its cool-down (unless
the breach got worse). Delivery is at least once with one identity: the tag records the intent
("sending", with the window's fixed Message-ID) before the mail goes out and "sent" after, so a
retry after a crash in between sends the same message again, which receivers that deduplicate
by Message-ID show once, and a retry after "sent" sends nothing.

When the window's manifest names a shadow challenger, the summary's `challenger` section compares
it with the champion on the same labelled rows (shadow_compare.py, the gate's paired bootstrap);
`challenger_proposal` turns a win into the `challenger/<model>` Asset event, once per window.

A registry, object store or mail server that fails for a moment (`faults.is_transient`) raises
its own error, never a MonitoringError, so Airflow retries the task with back-off; only the data
or the model fail a window at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_mlops import (
    alert_mail,
    estimation,
    faults,
    monitoring_workspace,
    settings,
    shadow_compare,
    signing,
    storage,
    tracking,
)
from tabular_mlops.config import ModelConfig, MonitoringSpec
from tabular_mlops.drift_report import LABEL, PROBABILITY, Figures, Window, run_report, snapshot_identity

TAG_PREFIX = "monitor."
SUMMARY = "summary.json"
REPORT = "report.html"
SNAPSHOT = "snapshot.json"  # the report as an Evidently snapshot, as filed in the workspace
TREND = "trend.png"
QUALITY_REPORT = "quality.html"
SENDING, SENT = "sending", "sent"
PROPOSED = "challenger_proposed"  # the window's tag field: the challenger event it emitted
IMPORTANCE_FILE = "monitoring/column_importance.json"
Progress = Callable[[str], None]
# Tests set this to crash an alert at a named step ("mailed": after the send, before "sent" is
# recorded); None in production.
FAULT_HOOK: Callable[[str], None] | None = None


class MonitoringError(RuntimeError):
    """A monitoring run that cannot go on; the message names what is missing and where."""


def report_dir(config: ModelConfig, day: str) -> Path:
    """reports/monitoring/<model>/dt=<date>/."""
    return settings.reports_dir() / "monitoring" / config.name / f"dt={day}"


def latest_partition(config: ModelConfig) -> str:
    """The newest complete predictions partition (one with a manifest) of the model's lake."""
    from tabular_mlops.scoring import lake_root

    root = storage.join(settings.resolve_location(lake_root(config)), "predictions", config.name)
    days = [
        m.group(1)
        for name in storage.list_files(root, config.data.aws_conn_id)
        if (m := re.fullmatch(r"dt=(\d{4}-\d{2}-\d{2})/_manifest\.json", name))
    ]
    if not days:
        raise MonitoringError(f"{root}: no complete predictions partition (dt=<date>/_manifest.json) yet")
    return storage.join(root, f"dt={max(days)}")


def _manifest(location: str, work: Path, conn: str) -> dict[str, Any]:
    """The partition's `_manifest.json`; MonitoringError when there is none (the partition is incomplete)."""
    if not storage.list_files(location, conn):
        raise MonitoringError(f"{location}: no predictions partition there")
    try:
        local = storage.download(storage.join(location, storage.MANIFEST), work / "manifest.json", conn)
        return dict(json.loads(local.read_text()))
    except Exception as exc:
        if faults.is_transient(exc):
            raise  # the object store is down for a moment: a retry reads the manifest
        raise MonitoringError(f"{location}: no _manifest.json, the partition is incomplete ({exc})") from None


def window_day(location: str, manifest: dict[str, Any]) -> str:
    """The window's date, YYYY-MM-DD, as the manifest names it (batch scoring writes `day`).

    Never taken from the path: a folder may be called anything, and the date names the report
    folder, the registry tag and the email subject.
    """
    day = manifest.get("day")
    try:  # the pattern first: fromisoformat also takes 20261120 and week dates
        if isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            return date.fromisoformat(day).isoformat()
    except ValueError:
        pass
    raise MonitoringError(
        f"{location}: its _manifest.json names no window day (field 'day' is {day!r}); "
        "score the partition again with this version so it records the day it holds"
    )


def _read_table(location: str, work: Path, conn: str) -> pd.DataFrame:
    """A CSV or parquet file (local or s3://) as a frame."""
    local = storage.local_path(location, work, conn)
    if local.suffix == ".parquet":
        return pd.read_parquet(local)
    return pd.read_csv(local, low_memory=False)


def _labels(config: ModelConfig, location: str, work: Path) -> pd.DataFrame:
    """Labels keyed by entity id from a file or a folder of files: columns key and y (0/1)."""
    from tabular_mlops.training import label_vector

    conn = config.data.aws_conn_id
    if location.endswith((".csv", ".parquet")):
        files = [location]
    else:
        files = [
            storage.join(location, f)
            for f in storage.list_files(location, conn)
            if f.endswith((".csv", ".parquet"))
        ]
    if not files:
        raise MonitoringError(f"{location}: no labels file (.csv or .parquet)")
    key = config.features.entity_key
    label = config.data.tables[config.data.label_table].label
    assert label is not None  # noqa: S101 - type narrowing: label_table is the table with a label
    frames = []
    for file in files:
        frame = _read_table(file, work, conn)
        missing = [c for c in (key, label.column) if c not in frame.columns]
        if missing:
            raise MonitoringError(f"{file}: labels file lacks column(s) {missing}")
        frame = frame[[key, label.column]].dropna()
        frames.append(pd.DataFrame({key: frame[key].to_numpy(), "y": label_vector(config, frame)}))
    return pd.concat(frames).drop_duplicates(subset=[key], keep="last")


def quality_by_version(
    predictions: pd.DataFrame, labels: pd.DataFrame, key: str, minimum: int
) -> dict[str, Any]:
    """AUC, accuracy, F1 and Brier score of the labelled predictions, per model version."""
    from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score

    joined = predictions.merge(labels, on=key, how="inner")
    out: dict[str, Any] = {}
    for version, rows in joined.groupby("model_version"):
        entry: dict[str, Any] = {"labelled_rows": len(rows)}
        if len(rows) >= minimum and rows["y"].nunique() == 2:
            y, p = rows["y"].to_numpy(), rows["probability"].to_numpy()
            entry.update(
                roc_auc=float(roc_auc_score(y, p)),
                accuracy=float(accuracy_score(y, rows["prediction"])),
                f1=float(f1_score(y, rows["prediction"])),
                brier=float(brier_score_loss(y, p)),
            )
        else:
            entry["not_judged"] = f"fewer than {minimum} labelled rows with both classes"
        out[str(version)] = entry
    return out


def _version_run(config: ModelConfig, version: str) -> tuple[str, str]:
    """(registered name, training run id) of a version."""
    name = tracking.registered_name(config.model.registered_name)
    return name, str(tracking.configure().get_model_version(name, version).run_id)


def _load_checked(name: str, version: str) -> Any:
    """The version that scored the partition, loaded only once its signature checks out."""
    try:
        return signing.load_verified(name, version)
    except signing.SignatureError as exc:
        raise MonitoringError(f"refusing to monitor with {exc}") from None


def _reference(
    run_id: str, override: str | None, model: Any, work: Path, conn: str, batch_rows: int
) -> pd.DataFrame:
    """The version's logged reference, or feature rows computed by the model from `override` rows."""
    from tabular_mlops.training import REFERENCE_FILE

    if override is not None:
        local = storage.local_path(override, work, conn)
        if local.suffix != ".parquet":
            converted = work / "reference_rows.parquet"
            pd.read_csv(local, low_memory=False).to_parquet(converted, index=False)
            local = converted
        return _feature_rows(model, local, batch_rows, with_probability=True)
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"monitoring/{REFERENCE_FILE}", dst_path=str(work)
        )
    except Exception as exc:  # MLflow raises several types for a missing artifact
        if faults.is_transient(exc):
            raise  # the registry or its store is down: a retry reads the reference
        raise MonitoringError(
            f"run {run_id}: no monitoring/{REFERENCE_FILE} (trained before references were logged?); "
            f"pass --reference: {exc}"
        ) from None
    return pd.read_parquet(path)


def _importance(run_id: str) -> tuple[dict[str, float], str]:
    """(importance per feature, how drift is weighted): the version's logged importances.

    A registry that is down raises (a retry reads them); a run without them (trained before
    they were logged, or the artifact is gone) weighs every feature the same and says why.
    """
    import mlflow

    try:
        logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/{IMPORTANCE_FILE}")
    except Exception as exc:
        if faults.is_transient(exc):
            raise
        return {}, f"unweighted: run {run_id} has no readable {IMPORTANCE_FILE} ({faults.describe(exc)})"
    weights = {k: float(v) for k, v in logged.items()}
    if sum(weights.values()) <= 0:
        return {}, f"unweighted: {IMPORTANCE_FILE} of run {run_id} gives no feature any weight"
    return weights, f"feature importance ({IMPORTANCE_FILE} of run {run_id})"


def _feature_rows(
    model: Any,
    rows: Path,
    batch_rows: int,
    with_probability: bool = False,
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The model's feature columns for a parquet file of input rows, computed by the version itself.

    Streams `batch_rows` rows at a time and keeps numbers as float32 (plenty for binning), so a
    307,511 x 516 window stays near 0.6 GB instead of several copies of 1.3 GB. `extra` columns
    (one value per input row) join each batch, so the frame is built once, never widened later.
    """
    import pyarrow.parquet as pq

    from tabular_mlops.training import REFERENCE_PROBABILITY, signature_frame

    classifier = model.unwrap_python_model()
    parts, start = [], 0
    for batch in pq.ParquetFile(rows).iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        features = classifier.features(frame)
        numbers = features.select_dtypes("float64").columns
        features[numbers] = features[numbers].astype("float32")
        added: dict[str, Any] = {}
        if with_probability:
            added[REFERENCE_PROBABILITY] = model.predict(signature_frame(frame))["probability"].to_numpy()
        added |= {name: values[start : start + len(frame)] for name, values in (extra or {}).items()}
        start += len(frame)
        # One concat, not a column at a time: inserting into a 500-column frame fragments it.
        parts.append(pd.concat([features, pd.DataFrame(added, index=features.index)], axis=1))
        del frame
    if not parts:
        raise MonitoringError(f"{rows}: no rows")
    return pd.concat(parts, ignore_index=True)


def _window_states(config: ModelConfig) -> dict[str, dict[str, Any]]:
    """Verdicts of earlier windows recorded on the registered model, by date."""
    name = tracking.registered_name(config.model.registered_name)
    tags = tracking.configure().get_registered_model(name).tags
    return {k[len(TAG_PREFIX) :]: json.loads(v) for k, v in tags.items() if k.startswith(TAG_PREFIX)}


def _record_window(config: ModelConfig, day: str, state: dict[str, Any]) -> None:
    name = tracking.registered_name(config.model.registered_name)
    tracking.configure().set_registered_model_tag(name, f"{TAG_PREFIX}{day}", json.dumps(state))


def _alert_state(state: dict[str, Any]) -> str | None:
    """SENDING (intent recorded, delivery not confirmed), SENT or None; older tags hold `alert_sent`."""
    return state.get("alert_state") or (SENT if state.get("alert_sent") else None)


def message_id(config: ModelConfig, day: str) -> str:
    """The alert's Message-ID, the same for every send of one model's window."""
    digest = hashlib.sha256(f"{config.name}|{day}".encode()).hexdigest()[:32]
    return f"<{digest}@tabular-mlops>"


def _mark_alert(config: ModelConfig, day: str, phase: str) -> None:
    """Record the alert's phase, Message-ID and time on the window's tag."""
    state = _window_states(config)[day]
    state.pop("alert_sent", None)  # superseded by alert_state
    state.update(
        alert_state=phase,
        message_id=message_id(config, day),
        alert_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _record_window(config, day, state)


def _fault_point(step: str) -> None:
    """Give a test the chance to crash the alert here (see FAULT_HOOK)."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


def _quality_report(predictions: pd.DataFrame, labels: pd.DataFrame, key: str, out: Path) -> None:
    """Evidently's classification report (AUC, accuracy, F1, log loss, curves) on the labelled rows."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    joined = predictions.merge(labels, on=key, how="inner")[["y", "probability"]]
    definition = DataDefinition(
        classification=[BinaryClassification(target="y", prediction_probas="probability")],
        numerical_columns=["probability"],
    )
    data = Dataset.from_pandas(joined, data_definition=definition)
    Report([ClassificationPreset()]).run(current_data=data, reference_data=None).save_html(str(out))


@dataclass
class _Opened:
    """A window's partition opened: where it is, what it holds and the version that scored it."""

    location: str
    manifest: dict[str, Any]
    day: str
    version: str
    run_id: str
    predictions: pd.DataFrame
    model: Any


def _open(config: ModelConfig, location: str, work: Path, say: Progress) -> _Opened:
    """Read the partition's manifest and predictions and load the (signed) version that scored it."""
    conn = config.data.aws_conn_id
    manifest = _manifest(location, work, conn)
    day = window_day(location, manifest)
    version = str(manifest["model_version"])
    name, run_id = _version_run(config, version)
    say(f"{location}: scored by {name} version {version}")
    predictions = _read_table(storage.join(location, "predictions.parquet"), work, conn)
    if predictions.empty:
        raise MonitoringError(f"{location}: the partition holds no predictions to monitor")
    tracking.configure()
    return _Opened(location, manifest, day, version, run_id, predictions, _load_checked(name, version))


def _window_labels(opened: _Opened, labelled: pd.DataFrame | None, key: str) -> pd.Series:
    """Each prediction's label where it has arrived and the window's version made it; NaN elsewhere."""
    predictions = opened.predictions
    if labelled is None:
        return pd.Series(float("nan"), index=range(len(predictions)))
    joined = predictions[[key, "model_version"]].merge(labelled, on=key, how="left")  # keeps row order
    mine = joined["model_version"].astype(str) == opened.version
    return joined["y"].where(mine).astype("float64").reset_index(drop=True)


def _drift_window(
    config: ModelConfig,
    opened: _Opened,
    reference: str | None,
    labelled: pd.DataFrame | None,
    work: Path,
    say: Progress,
) -> tuple[Window, str]:
    """What the report is computed from, and how drift is weighted (said in the email)."""
    from tabular_mlops.training import REFERENCE_PROBABILITY

    conn, batch_rows = config.data.aws_conn_id, config.scoring.batch_rows
    ref = _reference(opened.run_id, reference, opened.model, work, conn, batch_rows)
    ref.rename(columns={REFERENCE_PROBABILITY: PROBABILITY}, inplace=True)  # no second copy
    inputs = storage.local_path(storage.join(opened.location, "inputs.parquet"), work, conn)
    extra = {
        PROBABILITY: opened.predictions["probability"].to_numpy(),
        LABEL: _window_labels(opened, labelled, config.features.entity_key).to_numpy(),
    }
    cur = _feature_rows(opened.model, inputs, batch_rows, extra=extra)
    feature_columns = opened.model.unwrap_python_model().feature_columns
    columns = [c for c in feature_columns if c in ref.columns and c in cur.columns]
    importance, weights = _importance(opened.run_id)
    if not importance:
        say(f"drift is {weights}")
    calibrator, why = estimation.load_calibrator(opened.run_id)
    if calibrator is None:
        say(f"no performance estimate: {why}")
    baseline = tracking.configure().get_run(opened.run_id).data.metrics.get("test_roc_auc")
    labels = cur[LABEL].dropna()
    window = Window(
        reference=ref,
        current=cur,
        columns=columns,
        importance=importance,
        calibrator=calibrator.to_json() if calibrator is not None else None,
        threshold=config.model.threshold,
        baseline_auc=baseline,
        labelled_rows=len(labels) if labels.nunique() == 2 else 0,
    )
    return window, weights


def measure(
    config: ModelConfig,
    current: str | None = None,
    reference: str | None = None,
    labels: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Drift and quality of one predictions partition; saves and logs the report; returns the summary.

    Every figure it acts on is read back from the window's Evidently report (drift_report.py),
    so the summary, the alert and the report people open agree.
    """
    say = progress or (lambda _m: None)
    location = settings.resolve_location(current) if current else latest_partition(config)
    with tempfile.TemporaryDirectory(prefix="mlops-monitor-") as tmp:
        work = Path(tmp)
        opened = _open(config, location, work, say)
        labelled = _labels(config, labels, work) if labels else None
        window, weights = _drift_window(config, opened, reference, labelled, work, say)
        identity = snapshot_identity(config.name, opened.day, opened.version)
        snapshot, figures = run_report(window, config.monitoring, identity)
        say(_progress_line(figures))
        quality: dict[str, Any] = {}
        if labelled is not None:
            key, minimum = config.features.entity_key, config.monitoring.min_labelled_rows
            quality = quality_by_version(opened.predictions, labelled, key, minimum)
        challenger = shadow_compare.challenger_section(
            config, opened.manifest, opened.predictions, labelled, opened.day, work
        )
        if challenger is not None:
            say(shadow_compare.describe(challenger))
        summary = _summary(config, opened, window, figures, quality, challenger, weights)
        out = _save(config, summary, snapshot, opened, labelled)
    _log_to_mlflow(config, summary, out)
    state = _record_verdict(config, summary)
    _file_snapshot(config, snapshot, opened.day, state)
    return {k: v for k, v in summary.items() if k != "columns"}


def _progress_line(figures: Figures) -> str:
    drifted = sum(d.drifted for d in figures.per_feature)
    line = f"{drifted} of {len(figures.per_feature)} features drifted"
    line += f"; prediction PSI {figures.prediction_psi:.3f}"
    if "roc_auc" in figures.estimated:
        line += f"; estimated AUC {figures.estimated['roc_auc']:.3f}"
    return line


def _summary(
    config: ModelConfig,
    opened: _Opened,
    window: Window,
    figures: Figures,
    quality: dict[str, Any],
    challenger: dict[str, Any] | None,
    weights: str,
) -> dict[str, Any]:
    """The window's JSON summary: the report's figures, the verdict and where the reports are."""
    reasons = [reason for reason, _severity in figures.breaches]
    drifted = [d for d in figures.per_feature if d.drifted]
    headline = f"{config.name}: {len(drifted)} of {len(figures.per_feature)} features drifted"
    if reasons and not figures.drift_breached:
        # The subject names what breached: drifted features that did not decide it would mislead.
        headline = f"{config.name}: {reasons[0]}"
    out = report_dir(config, opened.day)
    realised = quality.get(opened.version, {})
    return {
        "model": config.name,
        "day": opened.day,
        "partition": opened.location,
        "model_version": opened.version,
        "rows": figures.rows,
        "reference_rows": len(window.reference),
        "features": len(figures.per_feature),
        "drifted_features": [d.to_dict() for d in drifted],
        "drift_share": round(len(drifted) / len(figures.per_feature), 4) if figures.per_feature else 0.0,
        "weighted_drift_share": round(figures.weighted_drift_share, 4),
        "weights": weights,
        "prediction_psi": round(figures.prediction_psi, 4),
        "performance": {
            "model_version": opened.version,
            "estimated_roc_auc": _rounded(figures.estimated.get("roc_auc")),
            "realised_roc_auc": _rounded(figures.realised_auc),
            "estimated_accuracy": _rounded(figures.estimated.get("accuracy")),
            "realised_accuracy": _rounded(realised.get("accuracy")),
        },
        "quality": quality,
        "challenger": challenger,
        "production_test_auc": window.baseline_auc,
        "not_judged": figures.not_judged,
        "breach": bool(reasons),
        "reasons": reasons,
        "severity": round(figures.severity, 4),
        "headline": headline,
        "report": str(out / REPORT),
        "snapshot": str(out / SNAPSHOT),
        "quality_report": None,
        "columns": [d.to_dict() for d in figures.per_feature],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _save(
    config: ModelConfig,
    summary: dict[str, Any],
    snapshot: Any,
    opened: _Opened,
    labelled: pd.DataFrame | None,
) -> Path:
    """Write the report, its snapshot, the quality report (with labels) and the summary; return the folder."""
    out = report_dir(config, opened.day)
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / REPORT))
    (out / SNAPSHOT).write_text(snapshot.dumps())
    if labelled is not None and "roc_auc" in summary["quality"].get(opened.version, {}):
        _quality_report(opened.predictions, labelled, config.features.entity_key, out / QUALITY_REPORT)
        summary["quality_report"] = str(out / QUALITY_REPORT)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    return out


def _file_snapshot(config: ModelConfig, snapshot: Any, day: str, state: dict[str, Any]) -> None:
    """File the window's snapshot in the model's Evidently project, tagged as its verdict says.

    A re-measured window whose alert already went out keeps its `alert-sent` tag, so the
    dashboard's alert count does not drop when a window is measured again.
    """
    monitoring_workspace.record_window(config, snapshot, day)
    tags = [monitoring_workspace.BREACH_TAG] if state["breach"] else []
    if _alert_state(state) == SENT:
        tags.append(monitoring_workspace.ALERT_SENT_TAG)
    if tags:
        monitoring_workspace.tag_window(config, day, *tags)


def _record_verdict(config: ModelConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """Record the window's verdict on the model's `monitor.<day>` tag, keeping its alert's progress."""
    day = summary["day"]
    previous = _window_states(config).get(day, {})
    # A re-measured window keeps its alert's progress: a "sending" alert is finished, not restarted.
    kept: dict[str, Any] = {k: previous[k] for k in ("message_id", "alert_at", PROPOSED) if k in previous}
    if phase := _alert_state(previous):
        kept["alert_state"] = phase
    verdict = {
        "breach": summary["breach"],
        "severity": summary["severity"],
        "headline": summary["headline"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    state = {**verdict, **kept}
    _record_window(config, day, state)
    return state


def _log_to_mlflow(config: ModelConfig, summary: dict[str, Any], out: Path) -> None:
    import mlflow

    experiment = tracking.ensure_experiment(f"{config.name}-monitoring")
    with mlflow.start_run(experiment_id=experiment, run_name=f"{config.name}-monitor-{summary['day']}"):
        mlflow.set_tags(
            {"model": config.name, "day": summary["day"], "model_version": summary["model_version"]}
        )
        mlflow.log_metrics(
            {
                "drift_share": summary["drift_share"],
                "weighted_drift_share": summary["weighted_drift_share"],
                "prediction_psi": summary["prediction_psi"],
                "breach": float(summary["breach"]),
                "severity": summary["severity"],
                **{
                    key: value
                    for key, value in summary["performance"].items()
                    if key != "model_version" and value is not None
                },
            }
        )
        mlflow.log_artifacts(str(out), artifact_path="monitoring")


def alert_decision(config: ModelConfig, day: str) -> tuple[bool, str]:
    """(send, why) for a window measured by `measure`, from the verdicts recorded on the model."""
    return decide_alert(_window_states(config), day, config.monitoring, datetime.now(UTC))


def decide_alert(
    states: dict[str, dict[str, Any]], day: str, spec: MonitoringSpec, now: datetime
) -> tuple[bool, str]:
    """(send, why) from the windows' verdicts: persistence, cool-down and at most once per window."""
    state = states.get(day)
    if state is None:
        return False, f"window {day} has not been measured"
    if not state["breach"]:
        return False, "no breach"
    phase = _alert_state(state)
    if phase == SENT:
        return False, f"the alert for {day} was already sent at {state.get('alert_at')}"
    if phase == SENDING:
        # The intent was recorded and the outcome was not: send again under the same Message-ID.
        return True, f"resend: the send of {state.get('alert_at')} was not confirmed"
    earlier = sorted(d for d in states if d < day)
    run = 1
    for d in reversed(earlier):
        if not states[d]["breach"]:
            break
        run += 1
    if run < spec.consecutive_windows:
        return False, f"breach in {run} consecutive window(s), alerting from {spec.consecutive_windows}"
    today = [s for d, s in states.items() if d != day and _sent_on(s, now.date())]
    if len(today) >= spec.alert_budget_per_day:
        return False, f"the daily alert budget ({spec.alert_budget_per_day}) is spent for {now.date()}"
    sent = [states[d] for d in earlier if _alert_state(states[d]) == SENT and states[d].get("alert_at")]
    if sent:
        last = max(sent, key=lambda s: s["alert_at"])
        quiet_until = datetime.fromisoformat(last["alert_at"]) + timedelta(hours=spec.cooldown_hours)
        if now < quiet_until and state["severity"] <= last["severity"]:
            return (
                False,
                f"cool-down until {quiet_until.isoformat(timespec='minutes')} and the breach is not worse "
                f"(severity {state['severity']:.2f}, {last['severity']:.2f} at the last alert)",
            )
    return True, "breach"


def _sent_on(state: dict[str, Any], day: date) -> bool:
    """Whether an alert of this window went out (or was being sent) on `day`, UTC."""
    at = state.get("alert_at")
    if _alert_state(state) not in (SENT, SENDING) or not isinstance(at, str):
        return False
    return datetime.fromisoformat(at).date() == day


def challenger_proposal(
    config: ModelConfig, summary: dict[str, Any], run_id: str
) -> tuple[dict[str, Any] | None, str]:
    """(extra of the `challenger/<model>` event, why) when the window's challenger won; (None, why) else.

    Once per window: the window's tag records the proposal (`challenger_proposed`) with the run
    that made it, so a later run of the same window proposes nothing and a retry of the same run
    (whose event was never emitted: the task failed) proposes again.
    """
    from tabular_mlops import registry

    section = summary.get("challenger")
    if not section:
        return None, "no challenger in this window"
    if section["verdict"] != shadow_compare.WINS:
        return None, shadow_compare.describe(section)
    name = tracking.registered_name(config.model.registered_name)
    now = registry.challenger_version(name)
    if now != section["version"]:
        return None, f"the challenger alias names {now!r} now, not the winner {section['version']}"
    state = _window_states(config).get(summary["day"], {})
    earlier = state.get(PROPOSED)
    if earlier and earlier.get("run_id") != run_id:
        return None, f"version {earlier['version']} was proposed for {summary['day']} at {earlier['at']}"
    evidence = {k: v for k, v in section.items() if k not in ("notes",)}
    evidence.update(day=summary["day"], partition=summary["partition"])
    state[PROPOSED] = {
        "version": section["version"],
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _record_window(config, summary["day"], state)
    return {"version": section["version"], "evidence": evidence}, shadow_compare.describe(section)


def send_alert(config: ModelConfig, summary: dict[str, Any]) -> tuple[bool, str]:
    """Email the breach of a measured window when it is due; (sent, why).

    The intent ("sending") is recorded before the mail goes out and "sent" after it, both under
    the window's fixed Message-ID: a crash in between makes the retry send the same message again
    (at least once, one identity), never a second, different alert.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    day = summary["day"]
    due, why = alert_decision(config, day)
    if not due:
        return False, why
    _mark_alert(config, day, SENDING)
    trend = monitoring_workspace.trend_png(config, report_dir(config, day) / TREND)
    with SmtpHook(smtp_conn_id=config.alerts.smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=list(config.alerts.recipients),
            from_email=config.alerts.sender,
            subject=f"{summary['headline']} ({day})",
            html_content=alert_mail.body(config, summary),
            files=[str(f) for f in (summary["report"], summary.get("quality_report"), trend) if f],
            custom_headers={"Message-ID": message_id(config, day)},
        )
    _fault_point("mailed")
    _mark_alert(config, day, SENT)
    monitoring_workspace.tag_window(config, day, monitoring_workspace.ALERT_SENT_TAG)
    return True, "sent"


def monitor(
    config: ModelConfig,
    current: str | None = None,
    reference: str | None = None,
    labels: str | None = None,
    send: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole run (what `mlops monitor` does): measure, then alert when due.

    As the DAG's task retries do, each step waits out a registry, store or mail server that is
    down for a moment (faults.retry_transient) on its own: a mail server that is down never
    makes the window be measured again, and a retried alert keeps its Message-ID.
    """
    summary = faults.retry_transient(
        lambda: measure(config, current, reference, labels, progress), "measuring the window"
    )
    if not summary["breach"]:
        sent, why = False, "no breach"
    elif send:
        sent, why = faults.retry_transient(lambda: send_alert(config, summary), "sending the alert")
    else:
        sent, why = False, alert_decision(config, summary["day"])[1]
    summary["alert_sent"], summary["alert_reason"] = sent, why
    return summary
