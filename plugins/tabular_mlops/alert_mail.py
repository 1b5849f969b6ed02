"""The alert email's HTML: the window's figures as its report shows them, and why it breached.

Every number is formatted as the Evidently report formats it (drift_report.py): weighted drift
share as a percentage with one decimal, PSI with three, AUC with three, so what the on-call
engineer reads in the email is what they find in the attached report.
"""

from __future__ import annotations

import html
import json
from typing import Any

from tabular_mlops import shadow_compare
from tabular_mlops.config import ModelConfig


def figures_table(summary: dict[str, Any]) -> str:
    """The window's figures, each beside its limit or 'not judged'."""
    spec_rows = [
        ("weighted drift share", f"{summary['weighted_drift_share']:.1%}"),
        ("prediction PSI", f"{summary['prediction_psi']:.3f}"),
    ]
    performance = summary.get("performance", {})
    for key, label in (
        ("estimated_roc_auc", "estimated AUC (before labels)"),
        ("realised_roc_auc", "realised AUC (labelled rows)"),
        ("estimated_accuracy", "estimated accuracy"),
        ("realised_accuracy", "realised accuracy"),
    ):
        if performance.get(key) is not None:
            spec_rows.append((label, f"{performance[key]:.3f}"))
    if summary.get("production_test_auc") is not None:
        spec_rows.append(("test AUC at training", f"{summary['production_test_auc']:.3f}"))
    cells = "".join(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in spec_rows)
    return f"<table><tr><th>figure</th><th>this window</th></tr>{cells}</table>"


def _drifted_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(d['column'])}</td><td>{d['psi']:.3f}</td><td>{d['importance']:.1%}</td></tr>"
        for d in summary["drifted_features"][:10]
    )
    if not rows:
        return ""
    return f"<table><tr><th>drifted feature</th><th>PSI</th><th>importance weight</th></tr>{rows}</table>"


def body(config: ModelConfig, summary: dict[str, Any]) -> str:
    """The alert's HTML: headline, reasons, figures, drifted features, quality and attachments."""
    weights = summary.get("weights", "")
    quality = summary["quality"].get(summary["model_version"], {})
    parts = [
        f"<p><b>{html.escape(summary['headline'])}</b> on {summary['day']} "
        f"(model version {summary['model_version']}, {summary['rows']:,} predictions).</p>",
        f"<p>Why: {html.escape('; '.join(summary['reasons']))}.</p>",
        figures_table(summary),
        f"<p>Drift is the population stability index (PSI) of each feature against the version's "
        f"training reference, on every row; above {config.monitoring.psi_threshold:g} counts as drifted, "
        "and the drifted features' share of the model's importance decides the breach.</p>",
    ]
    if weights.startswith("unweighted"):
        parts.append(
            "<p>Drift is not weighted by importance, every feature counts the same: "
            f"{html.escape(weights.removeprefix('unweighted: '))}.</p>"
        )
    parts.append(_drifted_table(summary))
    parts += [f"<p>Not judged: {html.escape(why)}.</p>" for why in summary.get("not_judged", [])]
    if quality:
        parts.append(f"<p>Quality on labelled rows: {html.escape(json.dumps(quality))}</p>")
    if summary.get("challenger"):
        parts.append(f"<p>Shadow: {html.escape(shadow_compare.describe(summary['challenger']))}.</p>")
    parts.append(
        f"<p>The full report and a trend of the last 30 windows are attached; the report is also at "
        f"{html.escape(summary['report'])}. A retrain has been requested; its candidate must still "
        "pass the quality gate.</p>"
    )
    return "".join(parts)
