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
import html
import json
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_mlops import faults, settings, shadow_compare, signing, storage, tracking
from tabular_mlops.config import ModelConfig, MonitoringSpec
from tabular_mlops.drift import column_drift, numeric_psi, weighted_drift_share

TAG_PREFIX = "monitor."
SUMMARY = "summary.json"
REPORT = "report.html"
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


def _feature_rows(model: Any, rows: Path, batch_rows: int, with_probability: bool = False) -> pd.DataFrame:
    """The model's feature columns for a parquet file of input rows, computed by the version itself.

    Streams `batch_rows` rows at a time and keeps numbers as float32 (plenty for binning), so a
    307,511 x 516 window stays near 0.6 GB instead of several copies of 1.3 GB.
    """
    import pyarrow.parquet as pq

    from tabular_mlops.training import REFERENCE_PROBABILITY, signature_frame

    classifier = model.unwrap_python_model()
    parts = []
    for batch in pq.ParquetFile(rows).iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        features = classifier.features(frame)
        numbers = features.select_dtypes("float64").columns
        features[numbers] = features[numbers].astype("float32")
        if with_probability:
            probability = model.predict(signature_frame(frame))["probability"].to_numpy()
            features[REFERENCE_PROBABILITY] = probability
        parts.append(features)
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


def _evidently_report(
    config: ModelConfig, reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out: Path
) -> None:
    """The HTML people read: Evidently's drift report on the most drifted features, row-sampled."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    n = config.monitoring.report_rows
    ref = reference[columns].sample(n=min(n, len(reference)), random_state=0)
    cur = current[columns].sample(n=min(n, len(current)), random_state=0)
    snapshot = Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
    snapshot.save_html(str(out))


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


def measure(
    config: ModelConfig,
    current: str | None = None,
    reference: str | None = None,
    labels: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Drift and quality of one predictions partition; saves and logs the report; returns the summary."""
    from tabular_mlops.training import REFERENCE_PROBABILITY

    say = progress or (lambda _m: None)
    conn = config.data.aws_conn_id
    location = settings.resolve_location(current) if current else latest_partition(config)
    with tempfile.TemporaryDirectory(prefix="mlops-monitor-") as tmp:
        work = Path(tmp)
        manifest = _manifest(location, work, conn)
        day = window_day(location, manifest)
        version = str(manifest["model_version"])
        name, run_id = _version_run(config, version)
        say(f"{location}: scored by {name} version {version}")
        predictions = _read_table(storage.join(location, "predictions.parquet"), work, conn)
        if predictions.empty:
            raise MonitoringError(f"{location}: the partition holds no predictions to monitor")
        tracking.configure()
        model = _load_checked(name, version)
        batch_rows = config.scoring.batch_rows
        ref = _reference(run_id, reference, model, work, conn, batch_rows)
        cur = _feature_rows(
            model, storage.local_path(storage.join(location, "inputs.parquet"), work, conn), batch_rows
        )
        columns = [
            c for c in model.unwrap_python_model().feature_columns if c in ref.columns and c in cur.columns
        ]
        spec = config.monitoring
        importance, weights = _importance(run_id)
        if not importance:
            say(f"drift is {weights}")
        drifts = column_drift(ref, cur, columns, spec.psi_threshold, spec.psi_bins, importance)
        weighted = weighted_drift_share(drifts)
        prediction_psi = numeric_psi(
            ref[REFERENCE_PROBABILITY].to_numpy(), predictions["probability"].to_numpy(), spec.psi_bins
        )
        count = sum(d.drifted for d in drifts)
        say(f"{count} of {len(drifts)} features drifted; prediction PSI {prediction_psi:.3f}")
        quality: dict[str, Any] = {}
        labelled = None
        if labels:
            labelled = _labels(config, labels, work)
            quality = quality_by_version(
                predictions, labelled, config.features.entity_key, spec.min_labelled_rows
            )
        challenger = shadow_compare.challenger_section(config, manifest, predictions, labelled, day, work)
        if challenger is not None:
            say(shadow_compare.describe(challenger))
        production_auc = tracking.configure().get_run(run_id).data.metrics.get("test_roc_auc")
        reasons = _breach_reasons(
            config, drifts, weighted, prediction_psi, quality.get(version, {}), production_auc
        )
        drifted = [d for d in drifts if d.drifted]
        headline = f"{config.name}: {len(drifted)} of {len(drifts)} features drifted"
        if reasons and not drifted:
            headline = f"{config.name}: {reasons[0]}"
        out = report_dir(config, day)
        out.mkdir(parents=True, exist_ok=True)
        top = [d.column for d in drifts[: spec.report_columns]]
        cur_report = cur[top].assign(**{REFERENCE_PROBABILITY: predictions["probability"].to_numpy()})
        _evidently_report(config, ref, cur_report, [*top, REFERENCE_PROBABILITY], out / REPORT)
        quality_report = None
        if labelled is not None and "roc_auc" in quality.get(version, {}):
            quality_report = out / QUALITY_REPORT
            _quality_report(predictions, labelled, config.features.entity_key, quality_report)
        summary = {
            "model": config.name,
            "day": day,
            "partition": location,
            "model_version": version,
            "rows": len(predictions),
            "reference_rows": len(ref),
            "features": len(drifts),
            "drifted_features": [d.to_dict() for d in drifted],
            "drift_share": round(len(drifted) / len(drifts), 4) if drifts else 0.0,
            "weighted_drift_share": round(weighted, 4),
            "weights": weights,
            "prediction_psi": round(prediction_psi, 4),
            "quality": quality,
            "challenger": challenger,
            "production_test_auc": production_auc,
            "breach": bool(reasons),
            "reasons": reasons,
            "headline": headline,
            "report": str(out / REPORT),
            "quality_report": str(quality_report) if quality_report else None,
            "columns": [d.to_dict() for d in drifts],
        }
        (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    _log_to_mlflow(config, summary, out)
    _record_verdict(config, summary)
    return {k: v for k, v in summary.items() if k != "columns"}


def _record_verdict(config: ModelConfig, summary: dict[str, Any]) -> None:
    """Record the window's verdict on the model's `monitor.<day>` tag, keeping its alert's progress."""
    day = summary["day"]
    previous = _window_states(config).get(day, {})
    # A re-measured window keeps its alert's progress: a "sending" alert is finished, not restarted.
    kept: dict[str, Any] = {k: previous[k] for k in ("message_id", "alert_at", PROPOSED) if k in previous}
    if phase := _alert_state(previous):
        kept["alert_state"] = phase
    verdict = {
        "breach": summary["breach"],
        "severity": summary["weighted_drift_share"],
        "headline": summary["headline"],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _record_window(config, day, {**verdict, **kept})


def _breach_reasons(
    config: ModelConfig,
    drifts: list[Any],
    weighted: float,
    prediction_psi: float,
    quality: dict[str, Any],
    production_auc: float | None,
) -> list[str]:
    """Why this window breaches, empty when it does not."""
    spec = config.monitoring
    reasons = []
    if weighted > spec.drift_share_threshold:
        limit = spec.drift_share_threshold
        reasons.append(f"drifted features carry {weighted:.0%} of the model's importance (limit {limit:.0%})")
    if prediction_psi > spec.prediction_psi_threshold:
        reasons.append(f"prediction PSI {prediction_psi:.3f} above {spec.prediction_psi_threshold}")
    auc = quality.get("roc_auc")
    if auc is not None:
        if spec.min_auc is not None and auc < spec.min_auc:
            reasons.append(f"AUC {auc:.3f} below the floor {spec.min_auc}")
        if production_auc is not None and production_auc - auc > spec.max_auc_drop:
            reasons.append(
                f"AUC {auc:.3f} dropped {production_auc - auc:.3f} from {production_auc:.3f} at training"
            )
    return reasons


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
    sent = [states[d] for d in earlier if _alert_state(states[d]) == SENT and states[d].get("alert_at")]
    if sent:
        last = max(sent, key=lambda s: s["alert_at"])
        quiet_until = datetime.fromisoformat(last["alert_at"]) + timedelta(hours=spec.cooldown_hours)
        if now < quiet_until and state["severity"] <= last["severity"]:
            return (
                False,
                f"cool-down until {quiet_until.isoformat(timespec='minutes')} and the breach is not worse",
            )
    return True, "breach"


def _alert_body(config: ModelConfig, summary: dict[str, Any]) -> str:
    """The alert's HTML: headline, reasons, the drifted features, quality and how drift was weighed."""
    drifted = summary["drifted_features"][:10]
    rows = "".join(
        f"<tr><td>{d['column']}</td><td>{d['psi']:.3f}</td><td>{d['importance']:.1%}</td></tr>"
        for d in drifted
    )
    quality = summary["quality"].get(summary["model_version"], {})
    weights = summary.get("weights", "")
    return (
        f"<p><b>{summary['headline']}</b> on {summary['day']} (model version {summary['model_version']}, "
        f"{summary['rows']:,} predictions).</p>"
        f"<p>Why: {'; '.join(summary['reasons'])}.</p>"
        f"<p>Drift is the population stability index (PSI) of each feature against the version's "
        f"training reference; above {config.monitoring.psi_threshold} counts as drifted. "
        f"Prediction PSI: {summary['prediction_psi']:.3f}.</p>"
        + (
            f"<p>Drift is not weighted by importance, every feature counts the same: "
            f"{weights.removeprefix('unweighted: ')}.</p>"
            if weights.startswith("unweighted")
            else ""
        )
        + (f"<table><tr><th>feature</th><th>PSI</th><th>importance</th></tr>{rows}</table>" if rows else "")
        + (f"<p>Quality on labelled rows: {json.dumps(quality)}</p>" if quality else "")
        + (
            f"<p>Shadow: {html.escape(shadow_compare.describe(summary['challenger']))}.</p>"
            if summary.get("challenger")
            else ""
        )
        + f"<p>Full report attached; also at {summary['report']}. A retrain has been requested; "
        "its candidate must still pass the quality gate.</p>"
    )


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
    with SmtpHook(smtp_conn_id=config.alerts.smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=list(config.alerts.recipients),
            subject=f"{summary['headline']} ({day})",
            html_content=_alert_body(config, summary),
            files=[f for f in (summary["report"], summary.get("quality_report")) if f],
            custom_headers={"Message-ID": message_id(config, day)},
        )
    _fault_point("mailed")
    _mark_alert(config, day, SENT)
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
