"""The window's report: Evidently metrics that compute the figures that decide a breach.

One Evidently `Report` per monitoring window computes every figure the bundle acts on: the PSI
of each feature (reference-quantile bins plus a bin for missing values, on every row, `drift.py`),
the share of the model's importance those drifted features carry, the PSI of the predicted
probability, the performance estimated from the probabilities (`estimation.py`) and, once labels
arrive, the realised AUC. `measure` reads the figures and the verdict back from the report's
result object, so the alert's subject, its body, the registry verdict, the dashboard and the
HTML people open all show one set of numbers.

The figures are custom metrics rather than Evidently's `ValueDrift` because `ValueDrift` drops
missing values before its test and bins numbers into equal-width Sturges bins over both windows:
a feature going missing would not count as drift, and its PSI would differ from ours (the unit
test `test_drift_report.py` pins how much).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from evidently.core.metric_types import (
    DataframeCalculation,
    DataframeMetric,
    SingleValueCalculation,
    SingleValueMetric,
)
from evidently.legacy.renderers.html_widgets import CounterData, counter, plotly_figure, table_data
from evidently.metrics import RowCount

from tabular_mlops.config import MonitoringSpec
from tabular_mlops.drift import Bins, ColumnDrift, column_bins, column_drift, weighted_drift_share

LABEL = "label"  # the window's label column, where labels have arrived (missing elsewhere)
PROBABILITY = "probability"
TOP_TABLE_ROWS = 100  # the feature table shows the most drifted features first


def _shares_figure(title: str, bins: Bins) -> Any:
    """Reference and window share of each bin, side by side: what the PSI was computed over."""
    import plotly.graph_objects as go

    figure = go.Figure(
        [
            go.Bar(name="reference", x=bins.labels, y=bins.expected),
            go.Bar(name="this window", x=bins.labels, y=bins.actual),
        ]
    )
    figure.update_layout(barmode="group", yaxis_title="share of rows", xaxis_title="bin")
    return plotly_figure(title=title, figure=figure)


class Check:
    """A figure with limits: the reasons its value breaches them, each with how far over it is."""

    def breaches(self, value: float) -> list[tuple[str, float]]:
        """(reason, severity) per limit the value breaks; severity is how many times over it is."""
        raise NotImplementedError


class FeatureDrift(DataframeMetric):
    """PSI of every model feature against the version's reference, on every row.

    A table (one row per feature) rather than a value per label: Evidently repeats a metric's
    parameters in every labelled value, which would make the snapshot grow with the square of
    the feature count.
    """

    columns: list[str]
    importance: dict[str, float]
    psi_threshold: float
    bins: int
    charts: int = 20  # the most drifted features get a chart of their bins


class FeatureDriftCalculation(DataframeCalculation[FeatureDrift]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        m = self.metric
        reference, current = reference_data.as_dataframe(), current_data.as_dataframe()
        drifts = column_drift(reference, current, m.columns, m.psi_threshold, m.bins, m.importance)
        table = pd.DataFrame(
            {
                "feature": [d.column for d in drifts],
                "kind": [d.kind for d in drifts],
                "psi": [d.psi for d in drifts],
                "importance": [d.importance for d in drifts],
            }
        )
        result = self.result(table)
        charts = []
        for d in drifts[: m.charts]:
            _kind, bins = column_bins(reference[d.column], current[d.column], m.bins)
            verdict = "drifted" if d.drifted else "not drifted"
            title = (
                f"{d.column}: PSI {d.psi:.3f} (threshold {m.psi_threshold:g}, {verdict}); "
                f"importance weight {d.importance:.1%}"
            )
            charts.append(_shares_figure(title, bins))
        result.widget = [_feature_table(drifts, m.psi_threshold), *charts]
        return result

    def display_name(self) -> str:
        return "PSI per feature"


def _feature_table(drifts: list[ColumnDrift], threshold: float) -> Any:
    """The most drifted features with their PSI, the threshold and their importance weight."""
    drifted = sum(d.drifted for d in drifts)
    rows = [
        [
            d.column,
            d.kind,
            f"{d.psi:.3f}",
            f"{threshold:g}",
            "drifted" if d.drifted else "",
            f"{d.importance:.1%}",
        ]
        for d in drifts[:TOP_TABLE_ROWS]
    ]
    return table_data(
        title=f"{drifted} of {len(drifts)} features drifted (PSI above {threshold:g}); "
        f"the {min(len(drifts), TOP_TABLE_ROWS)} most drifted",
        column_names=["feature", "kind", "PSI", "threshold", "verdict", "importance weight"],
        data=rows,
    )


def drifts_from(table: pd.DataFrame, threshold: float) -> list[ColumnDrift]:
    """The per-feature drift a FeatureDrift result holds, largest PSI first."""
    return [
        ColumnDrift(
            str(row.feature), str(row.kind), float(row.psi), float(row.psi) > threshold, float(row.importance)
        )
        for row in table.itertuples(index=False)
    ]


class WeightedDriftShare(SingleValueMetric, Check):
    """Share of the model's importance carried by drifted features; a breach above `limit`."""

    drift: FeatureDrift
    limit: float | None = None  # None: not judged (a window below monitoring.min_rows)

    def breaches(self, value: float) -> list[tuple[str, float]]:
        """Above the limit: the drifted features carry too much of the model's importance."""
        if self.limit is None or value <= self.limit:
            return []
        return [
            (
                f"drifted features carry {value:.1%} of the model's importance (limit {self.limit:.1%})",
                value / self.limit if self.limit else math.inf,
            )
        ]


class WeightedDriftShareCalculation(SingleValueCalculation[WeightedDriftShare]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        m = self.metric
        per_feature = context.calculate_metric(m.drift.to_calculation())
        drifts = drifts_from(per_feature.value, m.drift.psi_threshold)
        value = weighted_drift_share(drifts)
        result = self.result(value)
        drifted = sum(d.drifted for d in drifts)
        limit = "not judged" if m.limit is None else f"limit {m.limit:.1%}"
        result.widget = [
            counter(
                title="Feature drift, weighted by importance",
                counters=[
                    CounterData(label=f"of the model's importance drifted ({limit})", value=f"{value:.1%}"),
                    CounterData(label="features drifted", value=f"{drifted} of {len(drifts)}"),
                    CounterData(label="PSI threshold per feature", value=f"{m.drift.psi_threshold:g}"),
                ],
            )
        ]
        return result

    def display_name(self) -> str:
        return "Weighted drift share"


class PredictionPSI(SingleValueMetric, Check):
    """PSI of the predicted probability against the reference's; a breach above `limit`."""

    column: str = PROBABILITY
    bins: int
    limit: float | None = None

    def breaches(self, value: float) -> list[tuple[str, float]]:
        """Above the limit: the model's output distribution moved."""
        if self.limit is None or value <= self.limit:
            return []
        return [(f"prediction PSI {value:.3f} above {self.limit:g}", value / self.limit)]


class PredictionPSICalculation(SingleValueCalculation[PredictionPSI]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        m = self.metric
        _kind, bins = column_bins(
            reference_data.as_dataframe()[m.column], current_data.as_dataframe()[m.column], m.bins
        )
        value = bins.psi()
        limit = "not judged" if m.limit is None else f"limit {m.limit:g}"
        result = self.result(value)
        result.widget = [_shares_figure(f"Prediction drift: PSI {value:.3f} ({limit})", bins)]
        return result

    def display_name(self) -> str:
        return "Prediction PSI"


def _auc_breaches(
    what: str, value: float, floor: float | None, baseline: float | None, max_drop: float | None
) -> list[tuple[str, float]]:
    """Reasons an AUC breaks its floor or dropped too far from the version's test AUC."""
    out = []
    if floor is not None and value < floor:
        out.append((f"{what} {value:.3f} below the floor {floor:g}", (1 - value) / max(1 - floor, 1e-9)))
    if baseline is not None and max_drop is not None and baseline - value > max_drop:
        drop = baseline - value
        out.append(
            (
                f"{what} {value:.3f} dropped {drop:.3f} from {baseline:.3f} at training",
                drop / max_drop if max_drop else math.inf,
            )
        )
    return out


class EstimatedRocAuc(SingleValueMetric, Check):
    """ROC AUC estimated from the probabilities before labels arrive (CBPE, `estimation.py`)."""

    column: str = PROBABILITY
    calibrator: str  # the version's calibrator, as JSON
    threshold: float
    baseline: float | None = None  # the version's test AUC
    max_drop: float | None = None

    def breaches(self, value: float) -> list[tuple[str, float]]:
        """The estimate dropped more than max_drop from the version's test AUC."""
        return _auc_breaches("estimated AUC", value, None, self.baseline, self.max_drop)


class EstimatedRocAucCalculation(SingleValueCalculation[EstimatedRocAuc]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        estimate = _estimate(self.metric, current_data)
        return self.result(estimate.roc_auc)

    def display_name(self) -> str:
        return "Estimated ROC AUC (CBPE, before labels)"


class EstimatedAccuracy(SingleValueMetric):
    """Accuracy estimated from the probabilities at the version's decision threshold (CBPE)."""

    column: str = PROBABILITY
    calibrator: str
    threshold: float


class EstimatedAccuracyCalculation(SingleValueCalculation[EstimatedAccuracy]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        return self.result(_estimate(self.metric, current_data).accuracy)

    def display_name(self) -> str:
        return "Estimated accuracy (CBPE, before labels)"


def _estimate(metric: Any, current_data: Any) -> Any:
    from tabular_mlops.estimation import Calibrator, estimate

    probabilities = current_data.as_dataframe()[metric.column].to_numpy(dtype="float64")
    return estimate(probabilities, Calibrator.from_json(metric.calibrator), metric.threshold)


class RealisedRocAuc(SingleValueMetric, Check):
    """ROC AUC on the window's labelled rows, once labels have arrived."""

    column: str = PROBABILITY
    label: str = LABEL
    floor: float | None = None
    baseline: float | None = None
    max_drop: float | None = None

    def breaches(self, value: float) -> list[tuple[str, float]]:
        """Below the floor, or dropped more than max_drop from the version's test AUC."""
        return _auc_breaches("AUC", value, self.floor, self.baseline, self.max_drop)


class RealisedRocAucCalculation(SingleValueCalculation[RealisedRocAuc]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        from sklearn.metrics import roc_auc_score

        frame = current_data.as_dataframe()
        labelled = frame[frame[self.metric.label].notna()]
        value = roc_auc_score(labelled[self.metric.label].astype(int), labelled[self.metric.column])
        return self.result(float(value))

    def display_name(self) -> str:
        return "Realised ROC AUC (labelled rows)"


class WindowVerdict(SingleValueMetric):
    """The window's verdict from its checks: 1 breach, 0 none; the report's headline widget."""

    checks: list[SingleValueMetric]  # in the order their reasons are told
    not_judged: list[str] = []  # what was not judged and why (a small window's drift)


class WindowVerdictCalculation(SingleValueCalculation[WindowVerdict]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        found = breaches(context, self.metric.checks)
        result = self.result(1.0 if found else 0.0)
        verdict = "BREACH" if found else "OK"
        summary = f"{len(found)} limit(s) broken" if found else "no limit broken"
        widgets = [counter(title="Window verdict", counters=[CounterData(label=summary, value=verdict)])]
        rows = [[reason, f"{severity:.2f}"] for reason, severity in found]
        rows += [[f"not judged: {why}", ""] for why in self.metric.not_judged]
        if rows:
            widgets.append(
                table_data(
                    title="Why (severity: how many times over its limit)",
                    column_names=["reason", "severity"],
                    data=rows,
                )
            )
        result.widget = widgets
        return result

    def display_name(self) -> str:
        return "Window verdict"


def breaches(context: Any, checks: Sequence[SingleValueMetric]) -> list[tuple[str, float]]:
    """(reason, severity) of every check that breaks a limit, from the report's context.

    `calculate_metric` computes a check once and caches it, so the verdict (shown first) and the
    check's own widget use one result.
    """
    found = []
    for metric in checks:
        value = float(context.calculate_metric(metric.to_calculation()).value)
        if isinstance(metric, Check) and not math.isnan(value):
            found.extend(metric.breaches(value))
    return found


@dataclass
class Window:
    """What one window's report is computed from."""

    reference: pd.DataFrame  # the version's reference rows: features and PROBABILITY
    current: pd.DataFrame  # the window's rows: features, PROBABILITY and LABEL (missing where unlabelled)
    columns: list[str]  # the model's feature columns
    importance: dict[str, float]
    calibrator: str | None  # the version's calibrator as JSON; None: no estimate (older versions)
    threshold: float  # the version's decision threshold
    baseline_auc: float | None  # the version's test AUC
    labelled_rows: int  # rows of this version with a label


@dataclass
class Figures:
    """What the report computed, read back from its result object."""

    rows: int
    per_feature: list[ColumnDrift]
    weighted_drift_share: float
    prediction_psi: float
    estimated: dict[str, float]  # roc_auc and accuracy, empty without a calibrator
    realised_auc: float | None
    breaches: list[tuple[str, float]]  # (reason, severity)
    not_judged: list[str]
    drift_breached: bool  # the weighted drift share is one of the breaches

    @property
    def severity(self) -> float:
        """How many times over its limit the worst breached check is; 0 without a breach."""
        return max((s for _r, s in self.breaches), default=0.0)


def _metrics(window: Window, spec: MonitoringSpec) -> tuple[list[Any], list[str]]:
    """The report's metrics in reading order, and what it does not judge."""
    judged = len(window.current) >= spec.min_rows
    not_judged = (
        []
        if judged
        else [
            f"drift and estimated performance: {len(window.current):,} rows, "
            f"fewer than min_rows {spec.min_rows:,}"
        ]
    )
    drift = FeatureDrift(
        columns=window.columns,
        importance=window.importance,
        psi_threshold=spec.psi_threshold,
        bins=spec.psi_bins,
        charts=spec.report_columns,
    )
    checks: list[Any] = [
        WeightedDriftShare(drift=drift, limit=spec.drift_share_threshold if judged else None, tests=[]),
        PredictionPSI(bins=spec.psi_bins, limit=spec.prediction_psi_threshold if judged else None, tests=[]),
    ]
    if window.calibrator is not None:
        common = {"calibrator": window.calibrator, "threshold": window.threshold}
        baseline = window.baseline_auc if judged else None
        checks.append(EstimatedRocAuc(**common, baseline=baseline, max_drop=spec.max_auc_drop, tests=[]))
        checks.append(EstimatedAccuracy(**common, tests=[]))
    if window.labelled_rows >= spec.min_labelled_rows:
        checks.append(
            RealisedRocAuc(
                floor=spec.min_auc, baseline=window.baseline_auc, max_drop=spec.max_auc_drop, tests=[]
            )
        )
    verdict = WindowVerdict(checks=checks, not_judged=not_judged, tests=[])
    return [verdict, *checks, RowCount(tests=[]), drift], not_judged


def snapshot_identity(model: str, day: str, version: str) -> dict[str, Any]:
    """A window's snapshot identity: its time (the day's 00:00 UTC), tags and metadata, which the
    dashboard groups by."""
    return {
        "timestamp": datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC),
        "tags": [model],
        "metadata": {"model": model, "day": day, "model_version": version},
        "name": f"{model} {day}",
    }


def run_report(window: Window, spec: MonitoringSpec, identity: dict[str, Any]) -> tuple[Any, Figures]:
    """Run the window's report; (Evidently snapshot, the figures read back from it).

    `identity` is the snapshot's `timestamp`, `tags` and `metadata` (see `snapshot_identity`).
    Only the probability is declared to Evidently: declaring 516 features would make it compute
    per-column statistics nobody reads (57 s at full size); the metrics read every column.
    """
    from evidently import DataDefinition, Report

    metrics, not_judged = _metrics(window, spec)
    definition = DataDefinition(
        numerical_columns=[PROBABILITY],
        categorical_columns=[],
        datetime_columns=[],
        text_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    reference = _dataset(window.reference, definition)
    current = _dataset(window.current, definition)
    report = Report(metrics, include_tests=False)
    snapshot = report.run(current_data=current, reference_data=reference, **identity)
    return snapshot, read_figures(snapshot, metrics, not_judged)


def _dataset(frame: pd.DataFrame, definition: Any) -> Any:
    """An Evidently dataset over `frame` itself, not a copy of it.

    `Dataset.from_pandas` copies the whole frame (0.6 GB per side at 307,511 x 516, and the
    freed originals stay in the allocator: 5.0 GB peak instead of 3.7). Evidently builds its
    statistics from a one-column copy of the declared column, then reads `frame` in place; the
    metrics here only read it.
    """
    from evidently.core.datasets import PandasDataset

    dataset = PandasDataset(frame[[PROBABILITY]], definition)
    dataset._data = frame  # noqa: SLF001 - the one attribute PandasDataset reads its rows from
    return dataset


def read_figures(snapshot: Any, metrics: list[Any], not_judged: list[str]) -> Figures:
    """The figures the report computed, from its result object."""
    verdict, share, prediction, *rest = metrics
    drift = share.drift
    context = snapshot.context

    def value(metric: Any) -> float:
        return float(context.get_metric_result(metric).value)

    estimated = {
        "roc_auc" if isinstance(m, EstimatedRocAuc) else "accuracy": value(m)
        for m in rest
        if isinstance(m, EstimatedRocAuc | EstimatedAccuracy)
    }
    realised = next((value(m) for m in rest if isinstance(m, RealisedRocAuc)), None)
    rows = next(value(m) for m in rest if isinstance(m, RowCount))
    return Figures(
        rows=int(rows),
        per_feature=drifts_from(context.get_metric_result(drift).value, drift.psi_threshold),
        weighted_drift_share=value(share),
        prediction_psi=value(prediction),
        estimated=estimated,
        realised_auc=realised,
        breaches=breaches(context, verdict.checks),
        not_judged=not_judged,
        drift_breached=bool(share.breaches(value(share))),
    )
