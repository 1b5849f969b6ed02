"""The monitoring dashboards: one Evidently project per model, one snapshot per monitoring window.

`monitoring.measure` judges each window (a day of one model's predictions) with an Evidently Report;
`record_window` files the run's Snapshot in an Evidently workspace, where `evidently ui`
(`make monitoring-ui`, the compose `monitoring-ui` service) draws the trends `project` defines.
`history` reads the same snapshots back as a table and `trend_png` draws it small enough for an
alert email.

The workspace is a folder in Evidently's own layout, <workspace>/<project id>/{metadata.json,
dashboard.json, snapshots/<snapshot id>.json}. The project, tab, panel and snapshot ids are derived
from the model name and the day, so a re-run rewrites the same files and never adds a second copy.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tabular_mlops import settings, storage
from tabular_mlops.config import ModelConfig

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardPanelPlot, ProjectModel
    from evidently.ui.storage.local.base import LocalState
    from evidently.ui.workspace import Workspace

# Tags of a window's snapshot besides the model name: it breached; its alert email went out.
BREACH_TAG = "breach"
ALERT_SENT_TAG = "alert-sent"

# The metrics of the monitoring report (tabular_mlops.drift_report's classes and Evidently's
# RowCount), by the `history` column each fills. A panel names a metric by its type,
# "evidently:metric_v2:<class name>" (Evidently's AutoAliasMixin), so these are the class names.
METRIC_CLASSES = {
    "rows": "RowCount",
    "weighted_drift_share": "WeightedDriftShare",
    "prediction_psi": "PredictionPSI",
    "estimated_auc": "EstimatedRocAuc",
    "estimated_accuracy": "EstimatedAccuracy",
    "realised_auc": "RealisedRocAuc",
}
# The report's verdict (1 breach, 0 none): summed over alert days it counts the alerts sent.
VERDICT_CLASS = "WindowVerdict"
HISTORY_COLUMNS = ["day", "model_version", *METRIC_CLASSES, "breach", "alert_sent"]
TAB = "Daily monitoring"
# Root of the ids derived from names; changing it would orphan every existing project.
_NAMESPACE = uuid.UUID("99b16378-0efd-4ef8-a2f9-f3754594742d")


def metric_type(class_name: str) -> str:
    """The type Evidently gives a metric class's results, which dashboard panels filter on."""
    return f"evidently:metric_v2:{class_name}"


def workspace_location() -> str:
    """The workspace folder (settings.evidently_workspace); StorageError for an s3:// location.

    Evidently reaches s3:// through fsspec, which needs s3fs (not in the lock), and its UI only
    notices new snapshots on a local folder; docker-compose shares a volume instead.
    """
    location = settings.evidently_workspace()
    if storage.is_s3(location):
        raise storage.StorageError(
            f"MLOPS_EVIDENTLY_WORKSPACE={location!r}: an s3:// workspace needs s3fs, which the lock "
            "does not carry; use a folder (a volume shared by the workers and the UI)"
        )
    return location


def open_workspace() -> Workspace:
    """Evidently's Workspace on workspace_location(), for a notebook or a test.

    The functions here use the workspace's file layer (LocalState) instead: opening a Workspace
    parses every snapshot of every project first.
    """
    from evidently.ui.workspace import Workspace

    return Workspace(_state().path)


def _state() -> LocalState:
    from evidently.ui.storage.local.base import LocalState

    location = workspace_location()
    Path(location).mkdir(parents=True, exist_ok=True)
    return LocalState(location)


def _derived_id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(parts))


def _find_project(state: LocalState, name: str) -> ProjectModel | None:
    """The model's project: the one with the derived id, else the first of that name."""
    derived = _derived_id("project", name)
    found = [p for p in map(state.read_project, state.list_projects()) if p.name == name]
    return min(found, key=lambda p: (p.id != derived, str(p.id)), default=None)


def project(config: ModelConfig) -> ProjectModel:
    """Get or create the model's project (name = model name) and (re)define its dashboard.

    Writes <workspace>/<project id>/metadata.json and dashboard.json only when they differ from
    what the config asks for; re-running never duplicates the project, the tab or a panel.
    """
    return _project(_state(), config)


def _project(state: LocalState, config: ModelConfig) -> ProjectModel:
    from evidently.sdk.models import ProjectModel

    found = _find_project(state, config.name)
    if found is None:
        # A derived id: two first runs at once write the same project rather than two.
        found = ProjectModel(
            id=_derived_id("project", config.name), name=config.name, description=config.description
        )
        state.write_project(found)
    elif (found.description or "") != config.description:
        found.description = config.description
        state.write_project(found)
    _define_dashboard(state, found.id, config)
    return found


def _panels(config: ModelConfig, project_id: uuid.UUID) -> list[DashboardPanelPlot]:
    """The dashboard, top to bottom; each panel's id is derived, so redefining it replaces it."""
    panels = {**_verdict_panels(config), **_trend_panels(config)}
    for key, panel in panels.items():
        panel.id = _derived_id(str(project_id), "panel", key)
    return list(panels.values())


def _verdict_panels(config: ModelConfig) -> dict[str, DashboardPanelPlot]:
    """The dashboard's top, by key: what a point is and when it breaches, breaches and alerts counted."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, text_panel

    spec = config.monitoring
    verdict = metric_type(VERDICT_CLASS)
    return {
        "intro": text_panel(
            f"{config.name}: one point per scored day",
            "Each point is one day of predictions, judged the morning after it was scored. A day "
            f"breaches when drifted features carry over {spec.drift_share_threshold:.0%} of the "
            f"model's importance, when the prediction PSI exceeds {spec.prediction_psi_threshold:.2f}, "
            "or when the ROC AUC falls too low; an alert email goes out for a breach "
            f"(at most one per {spec.cooldown_hours:g} hours).",
        ),
        "breaches": counter_panel(
            "Days that breached",
            [PanelMetric(legend="days breached", metric=verdict)],
            'Days whose drift or performance broke a limit ("no value" means none).',
            size="half",
            aggregation="sum",
        ),
        "alerts": counter_panel(
            "Alert emails sent",
            [PanelMetric(legend="alert emails", metric=verdict, tags=[ALERT_SENT_TAG])],
            "Breached days whose alert email went out (an empty panel means none).",
            size="half",
            aggregation="sum",
        ),
    }


def _trend_panels(config: ModelConfig) -> dict[str, DashboardPanelPlot]:
    """The dashboard's trends, by key: drift, prediction drift, ROC AUC and rows per day."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    spec = config.monitoring
    auc_floor = f"; a breach below {spec.min_auc:.2f}" if spec.min_auc is not None else ""
    return {
        "drift": line_plot_panel(
            "Drifted features, weighted by importance",
            [PanelMetric(legend="weighted drift share", metric=metric_type("WeightedDriftShare"))],
            f"Share of the model's feature importance carried by features whose PSI is above "
            f"{spec.psi_threshold:.2f}; a breach above {spec.drift_share_threshold:.2f}.",
            size="half",
        ),
        "prediction": line_plot_panel(
            "Prediction drift (PSI of the predicted probability)",
            [PanelMetric(legend="prediction PSI", metric=metric_type("PredictionPSI"))],
            "Population stability index of the day's predicted probabilities against the training "
            f"reference; a breach above {spec.prediction_psi_threshold:.2f}.",
            size="half",
        ),
        "auc": line_plot_panel(
            "ROC AUC: estimated on the day, realised once labels arrive",
            [
                PanelMetric(legend="estimated (no labels needed)", metric=metric_type("EstimatedRocAuc")),
                PanelMetric(legend="realised (labelled days)", metric=metric_type("RealisedRocAuc")),
            ],
            "The estimate comes from the model's own confidence on the day's rows; the realised AUC "
            f"appears only for days whose outcomes are known{auc_floor}.",
        ),
        "rows": bar_plot_panel(
            "Rows scored per day",
            [PanelMetric(legend="rows", metric=metric_type("RowCount"))],
            "A sudden drop usually means an upstream extract was late or partial.",
        ),
    }


def _define_dashboard(state: LocalState, project_id: uuid.UUID, config: ModelConfig) -> None:
    """Put the panels in their own tab (first), keeping any other tab and panel someone added."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    panels = _panels(config, project_id)
    ours = {panel.id for panel in panels}
    tab_id = _derived_id(str(project_id), "tab", TAB)
    current = state.read_dashboard(project_id)
    # Once each: Evidently's own add_panel(tab=...) lists a new panel twice in its tab.
    added = list(dict.fromkeys(p for t in current.tabs if t.id == tab_id for p in t.panels if p not in ours))
    others = [t.copy(update={"panels": [p for p in t.panels if p not in ours]}) for t in current.tabs]
    wanted = DashboardModel(
        tabs=[
            DashboardTabModel(id=tab_id, title=TAB, panels=[*(p.id for p in panels), *added]),
            *(t for t in others if t.id != tab_id),
        ],
        panels=[*panels, *(p for p in current.panels if p.id not in ours)],
    )
    if json.dumps(wanted.dict(), default=str) != json.dumps(current.dict(), default=str):
        state.write_dashboard(project_id, wanted)


def _as_day(day: date | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    return day if isinstance(day, date) else date.fromisoformat(day)


def _snapshots_dir(state: LocalState, project_id: uuid.UUID) -> Path:
    from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME

    return Path(state.path) / str(project_id) / SNAPSHOTS_DIR_NAME


def _slim_locations(node: object) -> None:
    """Cut every metric location in the results down to the metric's type (in place).

    Evidently keys a dashboard series by the metric's type and all its parameters, and copies
    them into each value's location: a new model version (other importances, calibrator,
    baseline) or an unjudged window (no limit) would start a new line, and a per-feature result
    would carry every feature's parameters once per feature (megabytes per snapshot).
    """
    if isinstance(node, dict):
        location = node.get("metric_value_location")
        if isinstance(location, dict) and isinstance(location.get("metric"), dict):
            params = location["metric"].get("params") or {}
            location["metric"]["params"] = {"type": params.get("type")}
        for value in node.values():
            _slim_locations(value)
    elif isinstance(node, list):
        for value in node:
            _slim_locations(value)


def _result_type(result: dict[str, Any]) -> str | None:
    """The metric type of a result as stored (JSON), e.g. "evidently:metric_v2:RowCount"."""
    location = result.get("metric_value_location") or {}
    return ((location.get("metric") or {}).get("params") or {}).get("type")


def _fill_gaps(results: dict[str, Any]) -> None:
    """Give each plotted metric the window lacks (realised AUC before labels) a NaN result, in place.

    Evidently's UI pads a series with nulls only up to its last value: without labels on the latest
    days, the realised AUC's list would end early and its chart's y axis would start at 0. A NaN
    reaches the browser as null, a gap in the line, and `history` reads it as missing.
    """
    present = {_result_type(result) for result in results.values()}
    for name in METRIC_CLASSES.values():
        if metric_type(name) not in present:
            key = f"no-value:{name}"
            results[key] = {
                "type": "evidently:metric_result_v2:SingleValue",
                "display_name": f"{name}: not computed for this window",
                "value": math.nan,
                "metric_value_location": {
                    "metric": {"metric_id": key, "params": {"type": metric_type(name)}},
                    "param": {},
                },
            }


def _write_snapshot(path: Path, data: dict[str, Any]) -> None:
    """Replace the snapshot file atomically, then tell a running `evidently ui` it changed.

    A half-written snapshot would stop the UI from starting (it parses every file at start), so the
    file is written beside itself and renamed into place. The UI's file watcher reloads a snapshot
    on a modify event of its own name but not on a rename onto it; rewriting the last byte with the
    same byte is that event, and the file is complete throughout.
    """
    from evidently.legacy.utils import NumpyEncoder

    path.parent.mkdir(parents=True, exist_ok=True)
    # A name the UI ignores (not "<uuid>.json"), unique per writer.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, cls=NumpyEncoder)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with path.open("r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(last)


def _windows(state: LocalState, project_id: uuid.UUID) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Every snapshot file of the project and its JSON, by the day it judges (oldest day first).

    Read as plain JSON: a snapshot's widgets (the report's charts) are most of it and are not needed.
    A day's snapshot with the derived id comes last in its list.
    """
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for snapshot_id in state.list_snapshots(project_id):
        path = _snapshots_dir(state, project_id) / f"{snapshot_id}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:  # deleted since the listing
            continue
        day = str((data.get("metadata") or {}).get("day") or str(data["timestamp"])[:10])
        found.setdefault(day, []).append((path, data))
    for day, snapshots in found.items():
        derived = f"{_derived_id(str(project_id), 'window', day)}.json"
        snapshots.sort(key=lambda item: item[0].name == derived)
    return dict(sorted(found.items()))


def record_window(config: ModelConfig, snapshot: Snapshot, day: date | str) -> str:
    """File a window's report run as the model's one snapshot for `day`; returns its id.

    The snapshot is filed under `day` whatever it carried: timestamp that day's 00:00 (UTC, naive
    as Evidently stores its own), metadata "day" and "model", tag the model name first. Its id is
    derived from the project and the day, so recording the day again (a retry, the alert step
    re-adding it with "alert-sent") replaces the earlier file; any other snapshot of that day is
    deleted. Metric locations keep only the metric's type (see _slim_locations).
    """
    window = _as_day(day)
    state = _state()
    found = _project(state, config)
    data = snapshot.to_snapshot_model().dict()
    data["timestamp"] = datetime(window.year, window.month, window.day)
    data["metadata"] = {**data["metadata"], "day": window.isoformat(), "model": config.name}
    data["tags"] = [config.name, *(t for t in data["tags"] if t != config.name)]
    data["name"] = data.get("name") or f"{config.name} {window.isoformat()}"
    _slim_locations(data["metric_results"])
    _fill_gaps(data["metric_results"])
    snapshot_id = _derived_id(str(found.id), "window", window.isoformat())
    target = _snapshots_dir(state, found.id) / f"{snapshot_id}.json"
    _write_snapshot(target, data)
    for path, _ in _windows(state, found.id).get(window.isoformat(), []):
        if path != target:
            path.unlink(missing_ok=True)
    return str(snapshot_id)


def tag_window(config: ModelConfig, day: date | str, *tags: str) -> str:
    """Add tags (e.g. ALERT_SENT_TAG) to the recorded snapshot of `day`; returns its id.

    For a step that runs after the report, such as the alert: it has no Snapshot object to record
    again. KeyError when the day has no snapshot. Adding a tag it already has rewrites nothing.
    """
    window = _as_day(day).isoformat()
    state = _state()
    found = _find_project(state, config.name)
    snapshots = _windows(state, found.id).get(window, []) if found is not None else []
    if not snapshots:
        raise KeyError(f"{config.name}: no monitoring snapshot recorded for {window}")
    path, data = snapshots[-1]
    missing = [t for t in tags if t not in data["tags"]]
    if missing:
        data["tags"] = [*data["tags"], *missing]
        _write_snapshot(path, data)
    return path.stem


def _values(data: dict[str, Any]) -> dict[str, float]:
    """The value of each single-value result of the snapshot, by its metric type (first one wins)."""
    values: dict[str, float] = {}
    for result in data.get("metric_results", {}).values():
        kind, value = _result_type(result), result.get("value")
        if result.get("type", "").endswith(":SingleValue") and kind and value is not None:
            if not math.isnan(float(value)):
                values.setdefault(kind, float(value))
    return values


def history(config: ModelConfig, last: int = 30) -> pd.DataFrame:
    """The model's last `last` windows from the workspace, one row per day, oldest first.

    Columns: day (datetime64), model_version, rows, weighted_drift_share, prediction_psi,
    estimated_auc, estimated_accuracy, realised_auc (NaN where the window lacks that metric, e.g.
    realised_auc before labels arrive), breach, alert_sent. Reads only; empty when nothing is recorded.
    """
    state = _state()
    found = _find_project(state, config.name)
    records = []
    for day, snapshots in (_windows(state, found.id) if found is not None else {}).items():
        data = snapshots[-1][1]
        by_type = _values(data)
        values = {column: by_type.get(metric_type(name), math.nan) for column, name in METRIC_CLASSES.items()}
        version = (data.get("metadata") or {}).get("model_version")
        records.append(
            {
                "day": pd.Timestamp(day),
                "model_version": None if version is None else str(version),
                **values,
                "breach": BREACH_TAG in data["tags"],
                "alert_sent": ALERT_SENT_TAG in data["tags"],
            }
        )
    frame = pd.DataFrame.from_records(records[-last:] if last else [], columns=HISTORY_COLUMNS)
    frame["day"] = pd.to_datetime(frame["day"])
    numbers = [column for column in METRIC_CLASSES if column != "rows"]
    frame[numbers] = frame[numbers].astype(float)
    frame["rows"] = frame["rows"].astype(float).round().astype("Int64")
    frame[["breach", "alert_sent"]] = frame[["breach", "alert_sent"]].astype(bool)
    return frame.reset_index(drop=True)


def _plot_drift(axis: Any, frame: pd.DataFrame, config: ModelConfig) -> None:
    """Weighted drift share and prediction PSI per day, with their breach thresholds."""
    spec, days = config.monitoring, frame["day"]
    axis.plot(days, frame["weighted_drift_share"], "o-", ms=3, lw=1.4, color="C0", label="drift share")
    axis.plot(days, frame["prediction_psi"], "s-", ms=3, lw=1.4, color="C1", label="prediction PSI")
    axis.axhline(spec.drift_share_threshold, color="C0", ls="--", lw=0.9)
    axis.axhline(spec.prediction_psi_threshold, color="C1", ls=":", lw=1.1)
    axis.set_title("Drift (dashed: breach thresholds)", fontsize=9)
    axis.set_ylim(bottom=0)


def _plot_auc(axis: Any, frame: pd.DataFrame, config: ModelConfig) -> None:
    """Estimated ROC AUC per day, the realised one on labelled days, and the AUC floor."""
    spec = config.monitoring
    axis.plot(frame["day"], frame["estimated_auc"], "o-", ms=3, lw=1.4, color="C2", label="estimated AUC")
    realised = frame.dropna(subset=["realised_auc"])
    axis.plot(realised["day"], realised["realised_auc"], "D-", ms=4, lw=1.2, color="C4", label="realised AUC")
    if spec.min_auc is not None:
        axis.axhline(spec.min_auc, color="C3", ls="--", lw=0.9, label=f"floor {spec.min_auc:.2f}")
    axis.set_title("ROC AUC", fontsize=9)


def _mark_days(axis: Any, frame: pd.DataFrame) -> None:
    """Shade breached days, mark alert days in red, and lay out the date axis."""
    from matplotlib.dates import AutoDateLocator, DateFormatter

    days, half_day = frame["day"], timedelta(hours=12)
    for day in days[frame["breach"]]:
        axis.axvspan(day - half_day, day + half_day, color="C3", alpha=0.12, lw=0)
    for day in days[frame["alert_sent"]]:
        axis.axvline(day, color="C3", lw=1.2)
    axis.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=6))
    axis.xaxis.set_major_formatter(DateFormatter("%d %b"))
    axis.tick_params(labelsize=8)
    axis.grid(alpha=0.3, lw=0.5)
    axis.set_xlim(days.iloc[0] - half_day, days.iloc[-1] + half_day)


def trend_png(config: ModelConfig, out: Path, last: int = 30) -> Path:
    """Draw the last `last` windows as a 700x350 PNG at `out` (for the alert email); returns `out`.

    Left: weighted drift share and prediction PSI with their breach thresholds. Right: estimated and
    realised ROC AUC with the AUC floor. Breached days are shaded, alert days marked in red.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    frame = history(config, last)
    fig = Figure(figsize=(7, 3.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        fig.text(0.5, 0.5, f"{config.name}: no monitoring windows recorded yet", ha="center", va="center")
        fig.savefig(out, format="png")
        return out

    first, final = frame["day"].iloc[0], frame["day"].iloc[-1]
    fig.suptitle(
        f"{config.name}: last {len(frame)} monitoring windows ({first:%d %b} to {final:%d %b %Y})",
        fontsize=10,
        fontweight="bold",
    )
    drift, auc = fig.subplots(1, 2)
    _plot_drift(drift, frame, config)
    _plot_auc(auc, frame, config)
    for axis in (drift, auc):
        _mark_days(axis, frame)
    marks = [
        Line2D([], [], color="C3", lw=1.2, label="alert sent"),
        Line2D([], [], color="C3", alpha=0.25, lw=6, label="breach"),
    ]
    drift.legend(handles=[*drift.get_legend_handles_labels()[0], *marks], fontsize=7, framealpha=0.85)
    auc.legend(fontsize=7, framealpha=0.85)
    fig.savefig(out, format="png")
    return out
