"""What the demo's DAG runs left behind, read back from the files and the registry they wrote.

The demo's lines and its page quote these facts, never numbers of their own, so what it says is
what the reports say.
"""

from __future__ import annotations

import email
import email.policy
import json
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_mlops import settings


def mail_dir() -> Path:
    """Where the demo's SMTP sink writes every message it receives."""
    return settings.reports_dir() / "mail"


@dataclass
class TrainingFacts:
    """One training run: its evaluation folder, metrics, gate verdict and registry outcome."""

    model: str
    evaluation_dir: Path | None
    metrics: dict[str, float]
    gate: dict[str, Any]
    registered_name: str
    version: str | None
    production: str | None
    quarantine_dir: Path | None
    quarantined: int

    def line(self) -> str:
        """The story's line for this run."""
        auc, accuracy = (self.metrics.get(k, float("nan")) for k in ("roc_auc", "accuracy"))
        metrics = f"test AUC {auc:.3f}, accuracy {accuracy:.3f}"
        if not self.gate.get("passed"):
            reasons = "; ".join(self.gate.get("reasons") or []) or "see the model card"
            return f"{metrics}; gate REFUSED ({reasons}); production stays version {self.production}"
        promoted = self.version is not None and self.version == self.production
        where = "now in production" if promoted else f"not promoted (production: version {self.production})"
        return f"{metrics}; gate passed; {self.registered_name} version {self.version} {where}"


def _version_of_run(name: str, run_id: str) -> str | None:
    """The registry version a training run registered, if any."""
    from tabular_mlops import tracking

    versions = tracking.configure().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return str(versions[0].version) if versions else None


def _mlflow_run(airflow_run_id: str) -> str | None:
    """The MLflow run a training DAG run logged (its lineage tag names the Airflow run)."""
    from tabular_mlops import tracking

    client = tracking.configure()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.airflow_run_id = '{airflow_run_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _rows_in(folder: Path | None) -> int:
    """Rows over every CSV in a quarantine folder."""
    if folder is None:
        return 0
    return sum(len(pd.read_csv(path)) for path in folder.glob("*.csv"))


def _json(path: Path | None) -> dict[str, Any]:
    """A JSON report, or {} when the run did not write it."""
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def training_facts(model: str, airflow_run_id: str) -> TrainingFacts:
    """Facts of the training DAG run `airflow_run_id` of `model`, from its reports and the registry."""
    from tabular_mlops import registry, tracking
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import safe_run_id
    from tabular_mlops.promotion import evaluation_dir

    config = get_model_config(model)
    name = tracking.registered_name(config.model.registered_name)
    run = _mlflow_run(airflow_run_id)
    evaluation = evaluation_dir(config, run) if run else None
    quarantine = settings.data_dir() / "quarantine" / model / safe_run_id(airflow_run_id)
    return TrainingFacts(
        model=model,
        evaluation_dir=evaluation if evaluation and evaluation.is_dir() else None,
        metrics=_json(evaluation / "metrics.json" if evaluation else None),
        gate=_json(evaluation / "gate_verdict.json" if evaluation else None),
        registered_name=name,
        version=_version_of_run(name, run) if run else None,
        production=registry.alias_version(name, registry.PRODUCTION),
        quarantine_dir=quarantine if quarantine.is_dir() else None,
        quarantined=_rows_in(quarantine if quarantine.is_dir() else None),
    )


@dataclass
class DayFacts:
    """One day of one model: what scoring read and rejected, what monitoring found, the email."""

    model: str
    day: date
    drifted: bool
    scored: int = 0
    rejected: int = 0
    predictions_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    email: Path | None = None
    email_is_new: bool = False
    error: str | None = None

    @classmethod
    def failed(cls, model: str, day: date, drifted: bool, error: str) -> DayFacts:
        """A day whose DAG run failed."""
        return cls(model=model, day=day, drifted=drifted, error=error)

    @property
    def breach(self) -> bool:
        """Whether monitoring judged the window a breach."""
        return bool(self.summary.get("breach"))

    def line(self, noun: str) -> str:
        """The story's line for this day."""
        scored = f"scored {self.scored:,} {noun} ({self.rejected} rejected with reasons)"
        if not self.breach:
            return f"{scored}; monitoring OK: {self.summary.get('headline', '')}"
        verdict = f"monitoring BREACH: {self.summary.get('headline', '')}"
        if self.email is None:
            return f"{scored}; {verdict}; no alert email (cool-down or budget)"
        sent = "alert email" if self.email_is_new else "alert already sent for this window by an earlier run"
        return f"{scored}; {verdict}\n  → {sent}: {self.email}"


def predictions_partition(model: str, day: date) -> Path:
    """Where batch scoring publishes `day`'s predictions (the demo's lake is local)."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import partition

    return Path(settings.resolve_location(partition(get_model_config(model), "predictions", day)))


def _manifest_counts(folder: Path) -> tuple[int, int]:
    """Rows scored and rejected in a predictions partition, as its manifest counts them."""
    counts = json.loads((folder / "_manifest.json").read_text())["counts"]
    return int(counts["scored"]), int(counts["rejected"])


def alert_email(model: str, day: date) -> Path | None:
    """The newest message in the mail sink whose Message-ID is this model's window's."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import message_id

    wanted = message_id(get_model_config(model), day.isoformat())
    found = [p for p in mail_dir().glob("*.eml") if read_email(p)["Message-ID"] == wanted]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def read_email(path: Path) -> EmailMessage:
    """A saved message, parsed with the modern policy."""
    with path.open("rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # noqa: S101 - guaranteed by policy.default
    return message


def day_facts(model: str, day: date, drifted: bool, since: float) -> DayFacts:
    """Facts of one scored and monitored day; `since` tells a new email from an earlier run's."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import SUMMARY, report_dir

    config = get_model_config(model)
    folder = predictions_partition(model, day)
    scored, rejected = _manifest_counts(folder)
    summary_path = report_dir(config, day.isoformat()) / SUMMARY
    summary = json.loads(summary_path.read_text())
    # Only a breached window has an alert; a day that breached in an earlier run keeps its old one.
    mail = alert_email(model, day) if summary.get("breach") else None
    return DayFacts(
        model=model,
        day=day,
        drifted=drifted,
        scored=scored,
        rejected=rejected,
        predictions_dir=folder,
        summary=summary,
        email=mail,
        email_is_new=mail is not None and mail.stat().st_mtime >= since,
    )


@dataclass
class ModelOutcome:
    """What happened to one model in the demo, for the summary and the page."""

    model: str
    training: str = "not run"
    facts: TrainingFacts | None = None
    days: list[DayFacts] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every DAG run of the model succeeded."""
        return self.training == "success" and len(self.days) == 2 and all(d.error is None for d in self.days)
