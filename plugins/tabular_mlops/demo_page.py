"""`reports/index.html`: everything the demo made, on one page that opens from disk.

Per model: the gate verdict, the test metrics, the evaluation plots, the model card, the rows set
aside at ingest, a sample of predictions, each day's monitoring verdict with its Evidently report,
and the alert email as its reader sees it (in a frame that runs no scripts). Every link is relative
to the page (predictions and quarantined rows live under the data folder, beside the reports), so
it opens from disk with no server.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_mlops import settings
from tabular_mlops.demo_facts import DayFacts, ModelOutcome, TrainingFacts, read_email

PLOTS = ("roc", "precision_recall", "calibration", "confusion_matrix", "feature_importance", "shap_summary")
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 24px 48px;color:#1d2330}
h1{margin:28px 0 4px} h2{border-top:2px solid #dde3ee;padding-top:18px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
td,th{border:1px solid #dde3ee;padding:3px 8px;text-align:left}
th{background:#f3f6fb} .pass{color:#137333;font-weight:600} .fail{color:#b3261e;font-weight:600}
.plots{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}
.plots img{width:100%;border:1px solid #dde3ee}
.card{background:#fafbfd;border:1px solid #dde3ee;padding:4px 16px;max-height:420px;overflow:auto}
iframe{width:100%;height:520px;border:1px solid #dde3ee} code{background:#f3f6fb;padding:1px 4px}
.raw{font-family:monospace;font-size:12px;word-break:break-all}
"""


def _href(target: Path | str) -> str:
    """An attribute-safe address of `target` relative to the page (which lives in the reports folder)."""
    return html.escape(os.path.relpath(target, settings.reports_dir()))


def _link(target: Path | str, text: str) -> str:
    """A link to `target`, relative to the page."""
    return f'<a href="{_href(target)}">{html.escape(text)}</a>'


def _table(rows: Iterable[Iterable[Any]], header: Iterable[str], raw: bool = False) -> str:
    """An HTML table of escaped cells; `raw` cells are HTML this module built from escaped values."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cell = (lambda v: str(v)) if raw else (lambda v: html.escape(str(v)))
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _markdown(text: str) -> str:
    """The model card as HTML (Python-Markdown, installed with the docs tools), else preformatted.

    Raw HTML in the card is escaped, not passed through: the card quotes config descriptions,
    gate details and error texts, none of which may put markup on the page.
    """
    try:
        import markdown
    except ImportError:  # the runtime image has no docs tools: show the card as written
        return f"<pre>{html.escape(text)}</pre>"
    converter = markdown.Markdown(extensions=["tables"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return str(converter.convert(text))


def _gate(facts: TrainingFacts) -> str:
    """The gate verdict and the test metrics."""
    passed = facts.gate.get("passed")
    verdict = '<span class="pass">passed</span>' if passed else '<span class="fail">refused</span>'
    checks = [
        (
            html.escape(str(c["name"])),
            _fmt(c.get("value")),
            _fmt(c.get("bound")),
            {True: "pass", False: "FAIL"}.get(c["passed"], "not judged"),
        )
        for c in facts.gate.get("checks", [])
    ]
    # The test metrics are in the model card below, beside production's.
    return (
        f"<h3>Quality gate: {verdict}</h3>{_table(checks, ('check', 'value', 'bound', 'result'), raw=True)}"
    )


def _fmt(value: Any) -> str:
    """Numbers to four decimals, the rest as they are."""
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return "-" if value is None else html.escape(str(value))


def _plots(facts: TrainingFacts) -> str:
    """The evaluation plots and the model card."""
    if facts.evaluation_dir is None:
        return "<p>No evaluation report.</p>"
    images = [facts.evaluation_dir / f"{name}.png" for name in PLOTS]
    tiles = "".join(
        f'<figure>{_link(p, p.stem)}<br><img src="{_href(p)}" alt="{p.stem}"></figure>'
        for p in images
        if p.exists()
    )
    card = facts.evaluation_dir / "model_card.md"
    card_html = _markdown(card.read_text()) if card.exists() else "<p>No model card.</p>"
    return (
        f'<h3>Evaluation plots</h3><div class="plots">{tiles}</div>'
        f'<h3>Model card ({_link(card, "markdown")})</h3><div class="card">{card_html}</div>'
    )


def _quarantine(facts: TrainingFacts) -> str:
    """The rows ingest set aside, with their reasons."""
    if facts.quarantine_dir is None:
        return "<h3>Quarantined rows</h3><p>None.</p>"
    parts = [f"<h3>Quarantined rows: {facts.quarantined}</h3>"]
    for path in sorted(facts.quarantine_dir.glob("*.csv")):
        frame = pd.read_csv(path, dtype=str).head(10)
        rows = [
            (r.line, r.reasons, f'<span class="raw">{html.escape(str(r.raw_row))}</span>')
            for r in frame.itertuples()
        ]
        escaped = [(html.escape(str(a)), html.escape(str(b)), c) for a, b, c in rows]
        parts.append(
            f"<p>{_link(path, path.name)}</p>{_table(escaped, ('line', 'reasons', 'raw row'), raw=True)}"
        )
    return "".join(parts)


def _predictions(day: DayFacts) -> str:
    """The first rows of a day's predictions."""
    if day.predictions_dir is None or not (day.predictions_dir / "predictions.parquet").exists():
        return ""
    frame = pd.read_parquet(day.predictions_dir / "predictions.parquet").head(8)
    frame = frame.drop(columns=[c for c in ("run_id", "scored_at") if c in frame])
    rows = [[_fmt(v) for v in row] for row in frame.itertuples(index=False)]
    links = ", ".join(
        _link(day.predictions_dir / f, f)
        for f in ("predictions.parquet", "rejects.csv", "_manifest.json")
        if (day.predictions_dir / f).exists()
    )
    return f"<p>Sample of predictions ({links}):</p>{_table(rows, frame.columns, raw=True)}"


def _email(path: Path) -> str:
    """An alert email as its reader sees it: headers, the HTML body and the attachments."""
    message = read_email(path)
    folder = path.with_suffix("")
    folder.mkdir(exist_ok=True)
    body = message.get_body(preferencelist=("html", "plain"))
    content = body.get_content() if body is not None else ""
    is_html = body is not None and body.get_content_type() == "text/html"
    (folder / "body.html").write_text(content if is_html else f"<pre>{html.escape(content)}</pre>")
    attachments = []
    for part in message.iter_attachments():
        name = Path(part.get_filename() or "attachment").name
        payload = part.get_payload(decode=True)
        (folder / name).write_bytes(payload if isinstance(payload, bytes) else b"")
        attachments.append(_link(folder / name, name))
    headers = [(h, str(message.get(h, ""))) for h in ("From", "To", "Subject", "Date", "Message-ID")]
    return (
        f"<h3>Alert email ({_link(path, path.name)})</h3>{_table(headers, ('header', 'value'))}"
        f"<p>Attachments: {', '.join(attachments) or 'none'}</p>"
        # No allow-scripts: the sink takes mail from any local process, so the body runs no code.
        f'<iframe title="alert email body" sandbox="allow-same-origin" '
        f'src="{_href(folder / "body.html")}"></iframe>'
    )


def _day(day: DayFacts) -> str:
    """One scored and monitored day."""
    title = f"Day {day.day}{' (drifted)' if day.drifted else ''}"
    if day.error:
        return f'<h3>{title}</h3><p class="fail">{html.escape(day.error)}</p>'
    summary = day.summary
    verdict = '<span class="fail">BREACH</span>' if day.breach else '<span class="pass">OK</span>'
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in summary.get("reasons", []))
    report = _link(summary["report"], "Evidently drift and quality report") if summary.get("report") else ""
    parts = [
        f"<h3>{title}: monitoring {verdict}</h3>",
        f"<p>Scored {day.scored:,} rows, {day.rejected} rejected with their reasons. "
        f"{html.escape(summary.get('headline', ''))}; "
        f"weighted drift share {_fmt(summary.get('weighted_drift_share'))}, "
        f"prediction PSI {_fmt(summary.get('prediction_psi'))}. {report}</p>",
        f"<ul>{reasons}</ul>" if reasons else "",
        _predictions(day),
    ]
    if day.email is not None:
        parts.append(_email(day.email))
    return "".join(parts)


def _model(outcome: ModelOutcome) -> str:
    """The section of one model."""
    facts, model = outcome.facts, html.escape(outcome.model)
    head = f'<h2 id="{model}">{model}</h2><p>Training DAG run: {html.escape(outcome.training)}'
    if facts is None:
        return head + "</p>"
    head += f"; {html.escape(facts.registered_name)} in production: version {_fmt(facts.production)}</p>"
    days = "".join(_day(d) for d in outcome.days)
    return head + _gate(facts) + _plots(facts) + _quarantine(facts) + days


def _glance_row(outcome: ModelOutcome) -> list[str]:
    """One model's line in the summary table (cells are HTML)."""
    facts = outcome.facts
    gate = "-" if facts is None else ("passed" if facts.gate.get("passed") else '<b class="fail">refused</b>')
    model = html.escape(outcome.model)
    cells = [f'<a href="#{model}">{model}</a>', html.escape(outcome.training), gate]
    cells.append("-" if facts is None else f"{html.escape(facts.registered_name)} v{_fmt(facts.production)}")
    for day in outcome.days:
        verdict = "failed" if day.error else ("BREACH" if day.breach else "OK")
        mail = f" → {_link(day.email, 'alert email')}" if day.email else ""
        cells.append(f"{day.day}: {verdict}{mail}")
    return cells


def write_index(outcomes: list[ModelOutcome], commands: dict[str, str]) -> Path:
    """Write `reports/index.html` for the demo's outcomes; returns its path."""
    nav = " · ".join(f'<a href="#{html.escape(o.model)}">{html.escape(o.model)}</a>' for o in outcomes)
    how = _table(
        ((html.escape(k), f"<code>{html.escape(v)}</code>") for k, v in commands.items()),
        ("open", "command"),
        raw=True,
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tabular-mlops demo</title><style>{STYLE}</style></head><body>"
        "<h1>tabular-mlops demo</h1><p>Two models from raw CSVs through the Airflow DAGs: trained, "
        f"gated, promoted, scored on two days and monitored. {nav}</p>"
        + _table(
            map(_glance_row, outcomes),
            ("model", "training", "gate", "production", "day 1", "day 2"),
            raw=True,
        )
        + f"<h2>Look further</h2>{how}"
        + "".join(_model(o) for o in outcomes)
        + f"<p><small>Written {pd.Timestamp.now(tz='UTC').floor('s')}.</small></p></body></html>"
    )
    path = settings.reports_dir() / "index.html"
    path.write_text(page)
    return path
