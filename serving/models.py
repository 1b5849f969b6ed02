"""The production versions a worker serves, how a new one is checked and swapped in, and scoring.

Each worker loads `models:/<registered name>@production` for every model config at start-up and
re-reads the alias every `SERVING_RELOAD_SECONDS`. A new version is swapped in only after it
loads and reproduces the golden records logged with it at training; the swap is one reference
assignment, so a request in flight finishes on the version it started with.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from tabular_mlops import registry, tracking
from tabular_mlops.config import ModelConfig, TableSpec
from tabular_mlops.features import FeatureSession, features_from_frames

log = logging.getLogger("serving")
GOLDEN_TOLERANCE = 1e-6
_SESSIONS = threading.local()  # DuckDB connections are per thread


class NotServable(RuntimeError):
    """A version that cannot take traffic, with the reason."""


@dataclass(frozen=True)
class Served:
    """One loaded, checked version of a model."""

    config: ModelConfig
    registered_name: str
    version: str
    run_id: str
    classifier: Any
    metrics: dict[str, float]
    loaded_at: str

    @property
    def threshold(self) -> float:
        """The decision threshold of the model config."""
        return self.config.model.threshold

    def session(self, example: pd.DataFrame) -> Any:
        """This thread's prepared feature session for this version (created on first use)."""
        sessions = _SESSIONS.__dict__.setdefault("by_version", {})
        key = (self.registered_name, self.version)
        if key not in sessions:
            sessions[key] = FeatureSession(self.classifier.sql or {}, {self.classifier.entity_table: example})
        return sessions[key]


def _typed_frame(
    records: list[dict[str, Any]], table: TableSpec, drop: set[str] = frozenset()
) -> pd.DataFrame:  # type: ignore[assignment]
    """Records as a frame typed like the interim tables (so the SQL sees the types it trained on)."""
    columns = [c for c in table.columns if c not in drop]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in columns:
        kind = table.columns[column].type
        if kind == "int":
            frame[column] = frame[column].astype("Int64")
        elif kind == "float":
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype(object)
    return frame


def score_frame(served: Served, records: list[dict[str, Any]]) -> np.ndarray:
    """Probabilities for request records (raw records, or applications with their history)."""
    config = served.config
    entity = config.data.tables[config.scoring_entity_table]
    label = entity.label.column if entity.label is not None else None
    if config.features.model_input == "raw":
        frame = _typed_frame(records, entity, {label} if label else set())
        return np.asarray(served.classifier.predict_proba(frame, served.session(frame)), dtype=float)
    key = config.features.entity_key
    applications = [r["application"] for r in records]
    frames = {config.data.label_table: _typed_frame(applications, entity)}
    for table, spec in config.data.tables.items():
        if table in (config.scoring_entity_table, config.data.label_table):
            continue
        rows = []
        for record in records:
            for row in record.get(table, []):
                # History belongs to the application it came with, whatever id it carried.
                rows.append({**row, key: record["application"][key]} if key in spec.columns else row)
        frames[table] = _typed_frame(rows, spec)
    features = features_from_frames(served.classifier.sql, frames)
    ordered = features.set_index(key).loc[[a[key] for a in applications]].reset_index()
    return np.asarray(served.classifier.predict_proba(ordered), dtype=float)


def _load(config: ModelConfig, version: str | None = None) -> Served:
    """Load and check a version (the production one by default); raise NotServable on any failure."""
    import mlflow
    from tabular_mlops.training import GOLDEN_FILE, REFERENCE_PROBABILITY

    name = tracking.registered_name(config.model.registered_name)
    client = tracking.configure()
    if version is None:
        version = registry.alias_version(name, registry.PRODUCTION)
        if version is None:
            raise NotServable(f"{name}: no version has alias {registry.PRODUCTION!r}")
    details = client.get_model_version(name, version)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except Exception as exc:  # any loading failure keeps the old version serving
        raise NotServable(f"{name} version {version} does not load: {exc}") from None
    classifier = model.unwrap_python_model()
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=details.run_id, artifact_path=f"serving/{GOLDEN_FILE}"
        )
    except Exception as exc:
        raise NotServable(f"{name} version {version} has no golden records: {exc}") from None
    golden = pd.read_parquet(path)
    expected = golden.pop(REFERENCE_PROBABILITY).to_numpy()
    got = np.asarray(classifier.predict_proba(golden), dtype=float)
    worst = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    if worst > GOLDEN_TOLERANCE:
        raise NotServable(f"{name} version {version} moved its golden probabilities by up to {worst:.2e}")
    metrics = {k: v for k, v in client.get_run(details.run_id).data.metrics.items() if k.startswith("test_")}
    return Served(
        config,
        name,
        str(version),
        str(details.run_id),
        classifier,
        metrics,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )


@dataclass
class ModelStore:
    """The versions this worker serves, with the last reload error per model."""

    configs: dict[str, ModelConfig]
    served: dict[str, Served] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def refresh(self) -> None:
        """Load any model whose production alias moved (or that is not loaded yet)."""
        for name, config in self.configs.items():
            try:
                registered = tracking.registered_name(config.model.registered_name)
                wanted = registry.alias_version(registered, registry.PRODUCTION)
                current = self.served.get(name)
                if wanted is None:
                    self.errors[name] = f"{registered}: no version has alias {registry.PRODUCTION!r}"
                    continue
                if current is not None and current.version == wanted:
                    continue
                loaded = _load(config, wanted)
                self.served[name] = loaded  # one assignment: in-flight requests keep their version
                self.errors.pop(name, None)
                log.info("%s: now serving %s version %s", name, registered, wanted)
            except NotServable as exc:
                self.errors[name] = str(exc)
                log.error("%s: kept the loaded version: %s", name, exc)
            except Exception as exc:  # the registry may be unreachable for a while
                self.errors[name] = f"reload failed: {exc}"
                log.exception("%s: reload failed", name)

    def watch(self, interval: float) -> threading.Thread:
        """Re-check the aliases every `interval` seconds in a daemon thread."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        thread = threading.Thread(target=loop, name="alias-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """End the watch loop."""
        self._stop.set()


def reload_seconds() -> float:
    """SERVING_RELOAD_SECONDS (default 30)."""
    return float(os.environ.get("SERVING_RELOAD_SECONDS", "30"))


def max_records() -> int:
    """SERVING_MAX_RECORDS: the largest batch one request may carry (default 1000)."""
    return int(os.environ.get("SERVING_MAX_RECORDS", "1000"))
