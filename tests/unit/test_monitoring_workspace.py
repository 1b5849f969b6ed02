"""The monitoring workspace: one Evidently project per model, one snapshot per window, its dashboard,
the history read back from the snapshots and the trend PNG of the alert email.

The windows are real report runs (drift_report.run_report) on generated rows: a population that
drifts by a chosen amount, the model's probability from a fixed logistic relation, and outcomes
drawn from that probability where a test says the labels have arrived.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tabular_mlops import monitoring_workspace as mw
from tabular_mlops import settings, storage
from tabular_mlops.config import ModelConfig, load_model_configs
from tabular_mlops.drift_report import LABEL, Figures

from tests.monitoring_windows import generated_rows, trained_version, window_report

DAY = date(2025, 3, 1)
MODEL = "churn"
# Two versions of the model: another training sample, so another reference, calibrator, test AUC
# and importance (the parameters that would split a dashboard series without _slim_locations).
IMPORTANCE = {
    "1": {"utilisation": 0.35, "income": 0.2, "channel": 0.15, "age": 0.1, "tenure": 0.1, "enquiries": 0.1},
    "2": {"utilisation": 0.3, "income": 0.25, "channel": 0.2, "age": 0.05, "tenure": 0.1, "enquiries": 0.1},
}


@dataclass(frozen=True)
class Run:
    """One window's report run, as monitoring.measure makes it."""

    day: date
    snapshot: Any
    figures: Figures


@pytest.fixture(scope="module")
def report() -> Callable[..., Run]:
    """run(offset, rows, drift, labelled, version): the real report of a generated window of the
    day DAY + offset; each distinct window is run once per module."""
    spec = load_model_configs()[MODEL].monitoring
    versions = {
        version: trained_version(np.random.default_rng(int(version)), importance, 4000)
        for version, importance in IMPORTANCE.items()
    }

    @functools.cache
    def run(
        offset: int, rows: int = 3000, drift: float = 0.0, labelled: bool = True, version: str = "1"
    ) -> Run:
        day = DAY + timedelta(days=offset)
        rng = np.random.default_rng([offset, rows, round(drift * 100), int(labelled), int(version)])
        current = generated_rows(rng, rows, drift)
        if not labelled:
            current[LABEL] = np.nan  # the outcomes are not known yet
        return Run(day, *window_report(spec, MODEL, day, version, versions[version], current))

    return run


@pytest.fixture
def churn() -> ModelConfig:
    return load_model_configs()[MODEL]


@pytest.fixture
def workspace_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(tmp_path / "evidently"))
    return tmp_path / "evidently"


def _record(config: ModelConfig, run: Run, *tags: str) -> str:
    """File the run as monitoring.measure does: the snapshot, then its tags (breach, alert-sent)."""
    snapshot_id = mw.record_window(config, run.snapshot, run.day)
    if tags:
        assert mw.tag_window(config, run.day, *tags) == snapshot_id
    return snapshot_id


def _history_figures(figures: Figures) -> dict[str, float]:
    """The history columns a run's figures should fill (NaN where the report has no such metric)."""
    return {
        "rows": figures.rows,
        "weighted_drift_share": figures.weighted_drift_share,
        "prediction_psi": figures.prediction_psi,
        "estimated_auc": figures.estimated.get("roc_auc", math.nan),
        "estimated_accuracy": figures.estimated.get("accuracy", math.nan),
        "realised_auc": math.nan if figures.realised_auc is None else figures.realised_auc,
    }


def _assert_history_row(row: Mapping[str, Any], figures: Figures) -> None:
    for column, expected in _history_figures(figures).items():
        assert float(row[column]) == pytest.approx(expected, nan_ok=True), (row["day"], column)


def test_the_workspace_follows_the_env_and_refuses_s3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLOPS_EVIDENTLY_WORKSPACE", raising=False)
    assert mw.workspace_location() == str(settings.reports_dir() / "evidently")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", "dashboards")
    assert mw.workspace_location() == str(tmp_path / "dashboards")
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", "s3://lake/evidently")
    with pytest.raises(storage.StorageError, match="s3fs"):
        mw.open_workspace()


def test_recording_a_day_again_leaves_one_snapshot_with_the_latest_figures(
    churn: ModelConfig, workspace_dir: Path, report: Callable[..., Run]
) -> None:
    ids = [_record(churn, report(i, rows=2000 + 100 * i)) for i in range(3)]
    # A stray second snapshot of the third day, added the way a notebook would.
    ws = mw.open_workspace()
    project = mw.project(churn)
    ws.add_run(project.id, report(2, rows=60, labelled=False).snapshot)
    assert len(ws.list_runs(project.id)) == 4

    # The second day scored again (an upstream fix: other rows, drifted, no labels yet); it breached.
    retried = report(1, rows=555, drift=1.0, labelled=False)
    assert retried.figures.breaches
    assert _record(churn, retried, "breach", "alert-sent") == ids[1]
    assert _record(churn, report(2, rows=2300)) == ids[2]

    assert sorted(str(s) for s in ws.list_runs(project.id)) == sorted(ids)
    # No temporary file is left beside them.
    files = sorted(p.name for p in (workspace_dir / str(project.id) / "snapshots").iterdir())
    assert files == sorted(f"{i}.json" for i in ids)
    second = mw.history(churn).iloc[1]
    assert second["day"] == np.datetime64(DAY + timedelta(days=1))
    assert second["rows"] == 555 and second["breach"] and second["alert_sent"]
    _assert_history_row(second, retried.figures)
    assert math.isnan(second["realised_auc"])  # the retry carried no labels
    stored = ws.get_run(project.id, ids[1])
    assert stored.timestamp.isoformat() == "2025-03-02T00:00:00"
    assert stored.metadata["day"] == "2025-03-02" and stored.tags[0] == "churn"


def test_tag_window_marks_the_alert_once(
    churn: ModelConfig, workspace_dir: Path, report: Callable[..., Run]
) -> None:
    run = report(0, drift=1.0, labelled=False)
    assert run.figures.breaches
    snapshot_id = _record(churn, run, "breach")
    assert mw.tag_window(churn, DAY, mw.ALERT_SENT_TAG) == snapshot_id
    assert mw.tag_window(churn, DAY.isoformat(), mw.ALERT_SENT_TAG) == snapshot_id
    ws = mw.open_workspace()
    tags = ws.get_run(mw.project(churn).id, snapshot_id).tags
    assert tags == ["churn", "breach", "alert-sent"]
    assert mw.history(churn)["alert_sent"].tolist() == [True]
    with pytest.raises(KeyError, match="2025-03-02"):
        mw.tag_window(churn, DAY + timedelta(days=1), mw.ALERT_SENT_TAG)


VERDICT = "evidently:metric_v2:WindowVerdict"
EXPECTED_PANELS = {
    "churn: one point per scored day": ("text", []),
    "Days that breached": ("counter", [(VERDICT, [])]),
    "Alert emails sent": ("counter", [(VERDICT, ["alert-sent"])]),
    "Drifted features, weighted by importance": ("line", [("evidently:metric_v2:WeightedDriftShare", [])]),
    "Prediction drift (PSI of the predicted probability)": (
        "line",
        [("evidently:metric_v2:PredictionPSI", [])],
    ),
    "ROC AUC: estimated on the day, realised once labels arrive": (
        "line",
        [("evidently:metric_v2:EstimatedRocAuc", []), ("evidently:metric_v2:RealisedRocAuc", [])],
    ),
    "Rows scored per day": ("bar", [("evidently:metric_v2:RowCount", [])]),
}
AUC_PANEL = "ROC AUC: estimated on the day, realised once labels arrive"


def test_the_dashboard_has_one_panel_per_trend_and_is_never_duplicated(
    churn: ModelConfig, workspace_dir: Path, report: Callable[..., Run]
) -> None:
    first = mw.project(churn)
    ws = mw.open_workspace()
    dashboard = ws.get_dashboard(first.id)
    panels = {
        p.title: (p.plot_params["plot_type"], [(v.metric, v.tags) for v in p.values])
        for p in dashboard.panels
    }
    assert panels == EXPECTED_PANELS
    assert [t.title for t in dashboard.tabs] == [mw.TAB]
    assert dashboard.tabs[0].panels == [p.id for p in dashboard.panels]

    # Someone adds a panel of their own in the project's tab; the next runs keep it and add nothing.
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    mine = line_plot_panel("Mine", [PanelMetric(metric="EstimatedAccuracy")])
    ws.get_project(first.id).dashboard.add_panel(mine, tab=mw.TAB)
    second = mw.project(churn)
    _record(churn, report(0))
    again = ws.get_dashboard(second.id)
    assert second.id == first.id and [p.name for p in ws.list_projects()] == ["churn"]
    assert [p.title for p in again.panels] == [*EXPECTED_PANELS, "Mine"]
    assert [t.title for t in again.tabs] == [mw.TAB]
    assert again.tabs[0].panels == [p.id for p in again.panels]
    assert [p.id for p in again.panels[: len(EXPECTED_PANELS)]] == [p.id for p in dashboard.panels]

    # A new threshold in the config rewrites the subtitle of the same panel.
    stricter = churn.model_copy(
        update={"monitoring": churn.monitoring.model_copy(update={"drift_share_threshold": 0.25})}
    )
    mw.project(stricter)
    drift = next(p for p in ws.get_dashboard(first.id).panels if p.title.startswith("Drifted"))
    assert drift.id == next(p.id for p in dashboard.panels if p.title.startswith("Drifted"))
    assert "a breach above 0.25" in drift.subtitle


def _panel_series(workspace_dir: Path, project_id: Any, values: list[tuple[str, list[str]]]) -> Any:
    """What `evidently ui` answers a panel asking for these (metric, tags), from its own data storage."""
    from evidently.legacy.utils.sync import async_to_sync
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import create_local_project_manager

    manager = create_local_project_manager(str(workspace_dir), autorefresh=False)
    wanted = [SeriesFilter(metric=m, tags=t, metadata={}, metric_labels={}) for m, t in values]
    return async_to_sync(manager.data_storage.get_data_series(project_id, wanted, None, None))


def test_each_panel_draws_one_full_series_across_versions_and_unjudged_days(
    churn: ModelConfig, workspace_dir: Path, report: Callable[..., Run]
) -> None:
    # Version 2 from the third day (another reference, calibrator, test AUC and importance); the
    # second day is too small to judge (no limits) but labelled; the last day has no labels yet.
    # The first and last days drift, breach, and their alerts went out.
    runs = [
        report(0, drift=1.0),
        report(1, rows=450),
        report(2, version="2"),
        report(3, drift=1.0, labelled=False, version="2"),
    ]
    assert runs[1].figures.not_judged and runs[1].figures.realised_auc is not None
    assert runs[0].figures.breaches and runs[3].figures.breaches
    for offset, run in enumerate(runs):
        _record(churn, run, *(("breach", "alert-sent") if offset in (0, 3) else ()))
    put = [run.figures for run in runs]
    project_id = mw.project(churn).id
    for title, (_kind, values) in EXPECTED_PANELS.items():
        if not values:
            continue
        answer = _panel_series(workspace_dir, project_id, values)
        # One series per metric, each as long as the days it spans (a shorter one would make the
        # UI start the AUC axis at 0).
        assert len(answer.series) == len(values), (title, [s.params for s in answer.series])
        assert {len(s.values) for s in answer.series} == {len(answer.sources)}, title
    auc = _panel_series(workspace_dir, project_id, EXPECTED_PANELS[AUC_PANEL][1])
    assert auc.series[0].values == pytest.approx([f.estimated["roc_auc"] for f in put])
    assert auc.series[1].values[:3] == pytest.approx([f.realised_auc for f in put[:3]])
    assert auc.series[1].values[3] is None or math.isnan(auc.series[1].values[3])
    drift = _panel_series(workspace_dir, project_id, [("evidently:metric_v2:WeightedDriftShare", [])])
    assert drift.series[0].values == pytest.approx([f.weighted_drift_share for f in put])
    alerts = _panel_series(workspace_dir, project_id, [(VERDICT, ["alert-sent"])])
    assert sum(alerts.series[0].values) == 2 and len(alerts.sources) == 2
    # What makes that so: each value's location keeps the metric's type only, not the parameters
    # that differ between the windows (calibrator, test AUC, limits, importance).
    for path in (workspace_dir / str(project_id) / "snapshots").glob("*.json"):
        stored = path.read_text()
        for parameter in ['"calibrator"', '"baseline"', '"limit"', '"importance": {"utilisation"']:
            assert parameter not in stored, (path.name, parameter)
    assert math.isnan(mw.history(churn)["realised_auc"].iloc[3])


def test_history_returns_the_figures_put_in_oldest_first(
    churn: ModelConfig, workspace_dir: Path, report: Callable[..., Run]
) -> None:
    rng = np.random.default_rng(7)
    put = {}
    # Recorded out of order, as a backfill does; a drift that grows by the day; labels only for
    # the older days; tagged "breach" where the report found one, as monitoring.measure does.
    for offset in [4, 0, 5, 2, 1, 3]:
        run = report(
            offset, rows=int(rng.integers(600, 4000)), drift=max(0, offset - 2) / 3, labelled=offset < 3
        )
        put[run.day] = run
        _record(churn, run, *([mw.BREACH_TAG] if run.figures.breaches else []))

    frame = mw.history(churn, last=4)
    assert list(frame.columns) == mw.HISTORY_COLUMNS
    assert [d.date() for d in frame["day"]] == [DAY + timedelta(days=i) for i in range(2, 6)]
    for row in frame.to_dict("records"):
        run = put[row["day"].date()]
        assert row["rows"] == run.figures.rows
        assert row["breach"] == bool(run.figures.breaches) and not row["alert_sent"]
        assert row["model_version"] == "1"
        _assert_history_row(row, run.figures)
    assert frame["breach"].any() and not frame["breach"].all()
    assert frame["realised_auc"].notna().tolist() == [True, False, False, False]
    assert len(mw.history(churn)) == 6


def test_history_is_empty_and_creates_nothing_before_a_window_is_recorded(
    churn: ModelConfig, workspace_dir: Path
) -> None:
    frame = mw.history(churn)
    assert frame.empty and list(frame.columns) == mw.HISTORY_COLUMNS
    assert mw.open_workspace().list_projects() == []


def test_trend_png_is_an_email_sized_png(
    churn: ModelConfig, workspace_dir: Path, tmp_path: Path, report: Callable[..., Run]
) -> None:
    from matplotlib.image import imread

    empty = mw.trend_png(churn, tmp_path / "empty.png")
    assert imread(empty).shape[:2] == (350, 700)
    last_alert = -99
    for offset in range(12):
        # A drift from the seventh day; labels for the first nine; an alert every other breached day.
        run = report(offset, drift=max(0, offset - 5) / 6, labelled=offset < 9)
        alert = bool(run.figures.breaches) and offset - last_alert >= 2
        last_alert = offset if alert else last_alert
        tags = ([mw.BREACH_TAG] if run.figures.breaches else []) + ([mw.ALERT_SENT_TAG] if alert else [])
        _record(churn, run, *tags)
    assert mw.history(churn)["alert_sent"].any()
    out = mw.trend_png(churn, tmp_path / "mail" / "trend.png")
    assert out == tmp_path / "mail" / "trend.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[:2] == (350, 700)
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    assert out.stat().st_size > empty.stat().st_size


def test_the_report_metrics_carry_the_types_the_panels_name() -> None:
    from evidently.metrics import RowCount

    assert RowCount.__get_type__() == mw.metric_type(mw.METRIC_CLASSES["rows"])
    drift_report = pytest.importorskip("tabular_mlops.drift_report")
    for name in [*mw.METRIC_CLASSES.values(), mw.VERDICT_CLASS]:
        if name != "RowCount":
            assert getattr(drift_report, name).__get_type__() == mw.metric_type(name), name
