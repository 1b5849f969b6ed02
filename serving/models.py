"""The production versions a worker serves, how a new one is checked and swapped in, and scoring.

Each worker loads `models:/<registered name>@production` for every model it serves (every config,
or those SERVING_MODELS names: serving.selection) at start-up and re-reads the alias every
`SERVING_RELOAD_SECONDS`. A model without a production version yet is not ready (`not_ready` says
why, for /ready) and its requests get NoProduction, while the other models serve. A new version
is swapped in only after it loads, compiles into the lean request path (lean.py) and reproduces
the golden requests logged with it at training: raw request bodies (for credit_risk,
applications with their history rows) replayed through the request schema, the feature SQL, the
encoder and the booster. The swap is one reference assignment, so a batch in flight finishes on
the version it started with.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabular_mlops import faults, registry, signing, tracking
from tabular_mlops.config import ModelConfig

from serving.lean import LeanScorer, Scored
from serving.schemas import request_model

log = logging.getLogger("serving")
GOLDEN_TOLERANCE = 1e-6


class NotServable(RuntimeError):
    """A version that cannot take traffic, with the reason."""


class NoProduction(NotServable):
    """The model has no production version yet; the message names no internals, callers may see it."""


def no_production(registered: str) -> str:
    """The reason a model without a production alias is not ready, by its registered name."""
    return f"no production version of {registered} yet"


@dataclass(frozen=True)
class Served:
    """One loaded, checked version of a model."""

    config: ModelConfig
    registered_name: str
    version: str
    run_id: str
    lean: LeanScorer
    metrics: dict[str, float]
    loaded_at: str

    @property
    def threshold(self) -> float:
        """The decision threshold of the model config."""
        return self.config.model.threshold


def golden_probabilities(lean: LeanScorer, golden: pd.DataFrame) -> np.ndarray:
    """What the lean path gives legacy golden rows (raw records, or feature rows)."""
    if lean.raw:
        records = golden.astype(object).where(golden.notna(), None).to_dict(orient="records")
        return lean.score(records)
    return lean.score_feature_rows(golden)


def replay_golden(config: ModelConfig, lean: LeanScorer, requests: list[Any]) -> np.ndarray:
    """What the request path gives golden request bodies: the request schema, then the lean path."""
    from pydantic import TypeAdapter

    body = request_model(config)
    parsed = TypeAdapter(list[body]).validate_python(requests)  # type: ignore[valid-type]
    return lean.score([r.model_dump() for r in parsed])  # type: ignore[attr-defined]


def _golden(run_id: str, lean: LeanScorer, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(expected, got) probabilities of a version's golden records through the serving path."""
    import mlflow
    from tabular_mlops.training import GOLDEN_FILE, GOLDEN_REQUESTS, REFERENCE_PROBABILITY

    listed = {Path(f.path).name for f in mlflow.MlflowClient().list_artifacts(run_id, "serving")}
    if GOLDEN_REQUESTS in listed:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"serving/{GOLDEN_REQUESTS}")
        golden = json.loads(Path(path).read_text())
        expected = np.asarray(golden["probabilities"], dtype=float)
        return expected, replay_golden(config, lean, golden["requests"])
    # A version trained before golden requests: its model input rows only.
    log.warning("run %s has no %s: golden check over model input rows only", run_id, GOLDEN_REQUESTS)
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"serving/{GOLDEN_FILE}")
    rows = pd.read_parquet(path)
    expected = rows.pop(REFERENCE_PROBABILITY).to_numpy()
    return expected, golden_probabilities(lean, rows)


def _load(config: ModelConfig, version: str | None = None) -> Served:
    """Load and check a version (the production one by default); raise NotServable on any failure."""
    name = tracking.registered_name(config.model.registered_name)
    client = tracking.configure()
    if version is None:
        version = registry.alias_version(name, registry.PRODUCTION)
        if version is None:
            raise NotServable(f"{name}: no version has alias {registry.PRODUCTION!r}")
    details = client.get_model_version(name, version)
    try:
        model = signing.load_verified(name, version)
    except signing.SignatureError as exc:  # checked before anything is unpickled
        raise NotServable(f"refused {exc}") from None
    except Exception as exc:  # any loading failure keeps the old version serving
        if faults.is_transient(exc):
            raise  # the registry or its store went away mid-download: refresh reports it unreachable
        raise NotServable(f"{name} version {version} does not load: {exc}") from None
    try:
        lean = LeanScorer(config, model.unwrap_python_model())
    except Exception as exc:
        raise NotServable(f"{name} version {version} cannot be prepared for serving: {exc}") from None
    try:
        expected, got = _golden(details.run_id, lean, config)
    except Exception as exc:
        lean.close()
        if faults.is_transient(exc):
            raise
        raise NotServable(f"{name} version {version} cannot replay its golden records: {exc}") from None
    worst = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    if len(got) != len(expected) or worst > GOLDEN_TOLERANCE:
        lean.close()
        raise NotServable(f"{name} version {version} moved its golden probabilities by up to {worst:.2e}")
    metrics = {k: v for k, v in client.get_run(details.run_id).data.metrics.items() if k.startswith("test_")}
    return Served(
        config,
        name,
        str(version),
        str(details.run_id),
        lean,
        metrics,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )


@dataclass
class ModelStore:
    """The versions this worker serves, with the last reload error per model."""

    configs: dict[str, ModelConfig]
    served: dict[str, Served] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    on_load: Callable[[str, Served], None] | None = None
    registry: dict[str, Any] = field(default_factory=dict)
    _retired: dict[str, list[Served]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _refreshing: threading.Lock = field(default_factory=threading.Lock)
    shadow: Any = None  # shadow.Shadow: the challengers scored off the response path (app.py sets it)
    # Models whose registry had no production alias at the last check (their error says so too).
    unpromoted: set[str] = field(default_factory=set)

    def score(self, name: str, records: list[dict[str, Any]]) -> tuple[Served, Scored]:
        """Score with the version served now. Runs on the model's scorer thread, the only user
        of its DuckDB sessions, so replaced versions are closed here, between batches."""
        for old in self._retired.pop(name, []):
            old.lean.close()
        served = self.served.get(name)
        if served is None:
            if name in self.unpromoted:
                registered = tracking.registered_name(self.configs[name].model.registered_name)
                raise NoProduction(no_production(registered))
            raise NotServable(f"{name}: no version loaded: {self.errors.get(name)}")
        return served, served.lean.score_with_details(records)

    def not_ready(self, name: str) -> str | None:
        """Why `name` takes no traffic now (None: a version is loaded): no production version yet,
        the load or registry error, or not loaded yet (before the first refresh)."""
        if name in self.served:
            return None
        return self.errors.get(name) or "not loaded yet"

    def refresh(self, names: Iterable[str] | None = None) -> None:
        """Load any model (of `names`, default all) whose production alias moved or that is not loaded.

        The poll thread and the registry-event thread both call this: one refresh at a time."""
        with self._refreshing:
            self._refresh(self.configs if names is None else {n: self.configs[n] for n in names})

    def _refresh(self, configs: dict[str, ModelConfig]) -> None:
        unreachable = None
        for name, config in configs.items():
            current = self.served.get(name)
            registered = tracking.registered_name(config.model.registered_name)
            try:
                wanted = registry.alias_version(registered, registry.PRODUCTION)
            except Exception as exc:  # the registry is down or unreachable: keep serving
                self.unpromoted.discard(name)  # unknown now: the error says the registry did not answer
                unreachable = self._unreachable(name, exc)
                continue
            try:
                if wanted is None:
                    self.unpromoted.add(name)
                    self.errors[name] = no_production(registered)
                    continue
                self.unpromoted.discard(name)
                if current is not None and current.version == wanted:
                    self.errors.pop(name, None)  # e.g. the registry is back after an outage
                    continue
                loaded = _load(config, wanted)
                self.served[name] = loaded  # one assignment: in-flight requests keep their version
                if current is not None:
                    self._retired.setdefault(name, []).append(current)
                self.errors.pop(name, None)
                if self.on_load is not None:
                    self.on_load(name, loaded)
                log.info("%s: now serving %s version %s", name, registered, wanted)
            except NotServable as exc:
                self.errors[name] = str(exc)
                log.error("%s: kept the loaded version: %s", name, exc)
            except Exception as exc:  # an artifact download cut off halfway, say
                if faults.is_transient(exc):  # down while loading a newer version: same as down before
                    unreachable = self._unreachable(name, exc)
                else:
                    self.errors[name] = f"reload failed: {exc}"
                    log.exception("%s: reload failed", name)
        for name, config in configs.items():
            self._refresh_challenger(name, config)
        self.registry = {
            "reachable": unreachable is None,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "error": unreachable,
        }

    def _refresh_challenger(self, name: str, config: ModelConfig) -> None:
        """Let the shadow scorer follow the model's challenger alias (its failures stay there)."""
        if self.shadow is None:
            return
        try:
            self.shadow.refresh(name, config)
        except Exception:  # a challenger bug must not stop the champions' reloads
            log.exception("%s: challenger refresh failed", name)

    def _unreachable(self, name: str, exc: BaseException) -> str:
        """Record that the registry did not answer for `name`; the loaded version keeps serving."""
        reason = faults.describe(exc)[:300]
        current = self.served.get(name)
        kept = f"version {current.version}" if current is not None else "nothing loaded"
        self.errors[name] = f"registry unreachable, serving {kept}: {reason}"
        log.error("%s: registry unreachable, serving %s", name, kept)
        return reason

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


def signing_status() -> dict[str, Any]:
    """Whether versions are verified before loading, and by which key (its id, never the key)."""
    keys = signing.signing_keys()
    if keys.current is None:
        return {"verified": False, "reason": f"{signing.KEY_ENV} is not set: versions load UNVERIFIED"}
    return {"verified": True, "key_id": signing.key_id(keys.current), "keys": len(keys.verifying)}


def limit_registry_retries() -> None:
    """Fail registry calls within seconds, not minutes: the watch loop retries every interval
    anyway, and /health should say the registry is down while it is down."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def reload_seconds() -> float:
    """SERVING_RELOAD_SECONDS (default 30)."""
    return float(os.environ.get("SERVING_RELOAD_SECONDS", "30"))


def max_records() -> int:
    """SERVING_MAX_RECORDS: the largest batch one request may carry (default 1000)."""
    return int(os.environ.get("SERVING_MAX_RECORDS", "1000"))
