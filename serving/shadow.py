"""Shadow scoring: each model's `challenger` version scores the champion's records off the response path.

When a model has the MLflow alias `challenger` (shadow mode, registry.set_challenger), every worker
loads that version beside the champion with the same checks (signature, lean path, golden replay).
Requests are answered by the champion only. After the response is built, its records go to the
model's bounded shadow queue (`SERVING_SHADOW_QUEUE` requests, default 1000); a full queue drops
them and counts the drop, the champion never waits. The model's shadow thread scores what queued
with the challenger, in batches, and buffers one row per record: request id, entity id, both
versions and probabilities, the UTC time the champion answered. The buffer goes to the lake as
`<lake>/shadow/<model>/dt=<YYYY-MM-DD>/<worker>-<seq>.parquet` every `SERVING_SHADOW_FLUSH_ROWS`
rows (default 5000) or `SERVING_SHADOW_FLUSH_SECONDS` (default 60) and at shutdown. A challenger
that fails to load, score or write never fails a request, never unloads the champion and never
changes /ready: it is counted (serving_shadow_records), logged, and shown in /health.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tabular_mlops import faults, registry, scoring, settings, storage, tracking
from tabular_mlops.config import ModelConfig

from serving.metrics import CHALLENGER_VERSION, SHADOW_RECORDS
from serving.models import NotServable, Served, _load

log = logging.getLogger("serving.shadow")

KIND = "shadow"  # the lake folder: <lake>/shadow/<model>/dt=<day>/
BATCH_RECORDS = 512  # records the challenger scores per call: queued requests share the SQL cost
IDLE_WAKE_SECONDS = 1.0  # how often an idle shadow thread closes retired versions and checks the flush
LOG_EVERY_SECONDS = 10.0  # at most one challenger-failure log line per model this often
COLUMNS = (
    "request_id",
    "record",
    "entity_id",
    "champion_version",
    "champion_probability",
    "challenger_version",
    "challenger_probability",
    "scored_at",
)
_STOP = object()


def _env_number(name: str, default: float, minimum: float) -> float:
    """A numeric setting from the environment; ValueError naming the variable when it is not one."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


@dataclass(frozen=True)
class Settings:
    """Queue, flush and CPU limits (SERVING_SHADOW_QUEUE, _FLUSH_ROWS, _FLUSH_SECONDS, _CPU_SHARE), on/off."""

    enabled: bool = True
    queue_requests: int = 1000
    flush_rows: int = 5000
    flush_seconds: float = 60.0
    cpu_share: float = 0.02

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this worker (SERVING_SHADOW=off turns shadow scoring off)."""
        switch = os.environ.get("SERVING_SHADOW", "on").strip().lower()
        if switch not in ("on", "off"):
            raise ValueError(f"SERVING_SHADOW={switch!r}: expected on or off")
        return cls(
            enabled=switch == "on",
            queue_requests=int(_env_number("SERVING_SHADOW_QUEUE", 1000, 1)),
            flush_rows=int(_env_number("SERVING_SHADOW_FLUSH_ROWS", 5000, 1)),
            flush_seconds=_env_number("SERVING_SHADOW_FLUSH_SECONDS", 60.0, 0.1),
            cpu_share=min(1.0, _env_number("SERVING_SHADOW_CPU_SHARE", 0.02, 0.01)),
        )


def worker_name() -> str:
    """A name no other worker, host or restart shares: host, pid and start time."""
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{storage._host_tag()}-{os.getpid()}-{started}"


def entity_id(record: dict[str, Any], key: str) -> str | None:
    """The record's entity key (top level, or in an application with history), as text; None if absent."""
    value = record.get(key)
    if value is None and isinstance(record.get("application"), dict):
        value = record["application"].get(key)
    return None if value is None else str(value)


@dataclass(frozen=True)
class _Item:
    """One answered request waiting for the challenger."""

    request_id: str
    records: list[dict[str, Any]]
    champion_version: str
    champion: np.ndarray
    at: datetime


class ShadowWriter:
    """One model's buffered shadow rows, written to its lake partitions as parquet files."""

    def __init__(self, config: ModelConfig, worker: str, limits: Settings) -> None:
        self.config = config
        self.worker = worker
        self.limits = limits
        self.rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.files = 0
        self.last_flush = time.monotonic()

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        return len(self.rows["request_id"])

    def add(self, item: _Item, challenger_version: str, challenger: np.ndarray) -> None:
        """Buffer one row per record of an answered request."""
        key = self.config.features.entity_key
        for i, (record, ours, theirs) in enumerate(zip(item.records, item.champion, challenger, strict=True)):
            values = (item.request_id, i, entity_id(record, key), item.champion_version, float(ours))
            values += (challenger_version, float(theirs), item.at)
            for column, value in zip(COLUMNS, values, strict=True):
                self.rows[column].append(value)

    def due(self) -> bool:
        """True when the buffer is full enough or old enough to write."""
        if not self.pending:
            return False
        age = time.monotonic() - self.last_flush
        return self.pending >= self.limits.flush_rows or age >= self.limits.flush_seconds

    def flush(self) -> list[str]:
        """Write the buffer, one file per UTC day; keep it (bounded) to retry when a write fails."""
        if not self.pending:
            return []
        self.last_flush = time.monotonic()
        written: list[str] = []
        try:
            days = sorted({at.date() for at in self.rows["scored_at"]})
            for day in days:
                written.append(self._write_day(day))
        except Exception as exc:  # the lake is down or refuses: rows stay buffered for the next flush
            log.error("%s: shadow rows not written to the lake: %s", self.config.name, faults.describe(exc))
            self._trim()
            return written
        self.rows = {c: [] for c in COLUMNS}
        return written

    def _write_day(self, day: Any) -> str:
        """Write (and remove from the buffer) the rows of one day; return the file's location."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keep = [i for i, at in enumerate(self.rows["scored_at"]) if at.date() == day]
        columns = {c: [self.rows[c][i] for i in keep] for c in COLUMNS}
        table = pa.table(
            {
                "request_id": pa.array(columns["request_id"], pa.string()),
                "record": pa.array(columns["record"], pa.int32()),
                "entity_id": pa.array(columns["entity_id"], pa.string()),
                "champion_version": pa.array(columns["champion_version"], pa.string()),
                "champion_probability": pa.array(columns["champion_probability"], pa.float64()),
                "challenger_version": pa.array(columns["challenger_version"], pa.string()),
                "challenger_probability": pa.array(columns["challenger_probability"], pa.float64()),
                "scored_at": pa.array(columns["scored_at"], pa.timestamp("us", tz="UTC")),
            }
        )
        root = scoring.partition(self.config, KIND, day)
        location = storage.join(root, f"{self.worker}-{self.files:06d}.parquet")
        with tempfile.TemporaryDirectory(prefix="shadow-") as work:
            local = Path(work) / "rows.parquet"
            pq.write_table(table, local)
            storage.upload(local, location, self.config.data.aws_conn_id)
        self.files += 1
        drop = set(keep)
        self.rows = {c: [v for i, v in enumerate(vals) if i not in drop] for c, vals in self.rows.items()}
        log.info("%s: wrote %d shadow rows to %s", self.config.name, len(keep), location)
        return location

    def _trim(self) -> None:
        """Forget the oldest rows beyond ten flushes' worth (the lake stayed down), counting them."""
        over = self.pending - 10 * self.limits.flush_rows
        if over > 0:
            self.rows = {c: vals[over:] for c, vals in self.rows.items()}
            SHADOW_RECORDS.labels(self.config.name, "unwritten").inc(over)


@dataclass
class ModelShadow:
    """One model's challenger: the loaded version, its bounded queue and its shadow thread."""

    name: str
    config: ModelConfig
    writer: ShadowWriter
    limits: Settings
    challenger: Served | None = None
    reason: str | None = None
    _queue: queue.Queue[Any] = field(init=False)
    _retired: list[Served] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _last_log: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.limits.queue_requests)

    def set(self, served: Served) -> None:
        """Shadow with this version from now on (the one before is closed on the shadow thread)."""
        with self._lock:
            if self.challenger is not None:
                self._retired.append(self.challenger)
            self.challenger, self.reason = served, None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"shadow-{self.name}", daemon=True)
                self._thread.start()
        CHALLENGER_VERSION.labels(self.name).set(float(served.version))

    def drop(self, reason: str) -> None:
        """Stop shadowing (alias removed, or the new challenger cannot be served), saying why."""
        with self._lock:
            if self.challenger is not None:
                self._retired.append(self.challenger)
                log.info("%s: challenger version %s dropped: %s", self.name, self.challenger.version, reason)
            self.challenger, self.reason = None, reason
        CHALLENGER_VERSION.labels(self.name).set(0)

    def submit(self, item: _Item) -> None:
        """Queue an answered request for the challenger; drop and count it when the queue is full."""
        if self.challenger is None:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            SHADOW_RECORDS.labels(self.name, "dropped").inc(len(item.records))

    def queued(self) -> int:
        """Requests waiting for the challenger."""
        return self._queue.qsize()

    def _take(self) -> tuple[list[_Item], bool]:
        """The queued requests of one batch (waits up to a second for the first), and whether to stop."""
        try:
            first = self._queue.get(timeout=min(IDLE_WAKE_SECONDS, self.limits.flush_seconds))
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        items, rows = [first], len(first.records)
        while rows < BATCH_RECORDS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is _STOP:
                return items, True
            items.append(more)
            rows += len(more.records)
        return items, False

    def _run(self) -> None:
        """The shadow thread: score what queued, write when due, until close()."""
        stop = False
        while not stop:
            try:
                items, stop = self._take()
                self._close_retired()  # the only user of the challengers' DuckDB sessions is this thread
                if items:
                    used = time.thread_time()
                    self._score(items)
                    self._pause(time.thread_time() - used, stop)
                if stop or self.writer.due():
                    self.writer.flush()
            except Exception:  # a bug here must not end shadowing for the worker's life
                log.exception("%s: shadow thread error", self.name)
        self._close_retired()

    def _pause(self, cpu_seconds: float, stop: bool) -> None:
        """Rest so this thread uses at most `cpu_share` of a core: the champion's threads and the
        other workers get the CPU back, and the requests queued meanwhile make the next batch
        bigger, so the challenger keeps up at a lower cost per record (the SQL costs per call)."""
        if not stop:
            time.sleep(cpu_seconds * (1 / self.limits.cpu_share - 1))

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for old in retired:
            old.lean.close()

    def _score(self, items: list[_Item]) -> None:
        """Score a batch with the challenger; when it fails, each request alone, so only culprits fail."""
        challenger = self.challenger
        if challenger is None:  # dropped while these waited
            SHADOW_RECORDS.labels(self.name, "dropped").inc(sum(len(i.records) for i in items))
            return
        try:
            probabilities = challenger.lean.score([r for item in items for r in item.records])
        except Exception as exc:
            if len(items) == 1:
                self._failed(items[0], challenger, exc)
                return
            for item in items:
                self._score_alone(item, challenger)
            return
        start = 0
        for item in items:
            end = start + len(item.records)
            self.writer.add(item, challenger.version, probabilities[start:end])
            start = end
        SHADOW_RECORDS.labels(self.name, "scored").inc(start)

    def _score_alone(self, item: _Item, challenger: Served) -> None:
        try:
            probabilities = challenger.lean.score(item.records)
        except Exception as exc:
            self._failed(item, challenger, exc)
            return
        self.writer.add(item, challenger.version, probabilities)
        SHADOW_RECORDS.labels(self.name, "scored").inc(len(item.records))

    def _failed(self, item: _Item, challenger: Served, exc: BaseException) -> None:
        """Count a request the challenger could not score; log it, at most once per LOG_EVERY_SECONDS."""
        SHADOW_RECORDS.labels(self.name, "failed").inc(len(item.records))
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            log.error(
                "request_id=%s model=%s challenger version %s failed (the champion answered): %s",
                item.request_id,
                self.name,
                challenger.version,
                faults.describe(exc),
            )

    def close(self, timeout: float = 30.0) -> None:
        """Score what is queued, write the buffer and end the shadow thread."""
        if self._thread is None:
            return
        try:  # waits only while the queue is full, until the thread takes a request
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("%s: shadow thread stuck; %d rows not written", self.name, self.writer.pending)
            return
        self._thread.join(timeout)


class Shadow:
    """Every model's challenger in this worker (ModelStore.shadow); app.py submits answered requests."""

    def __init__(self, configs: dict[str, ModelConfig], limits: Settings | None = None) -> None:
        self.limits = limits or Settings.from_env()
        worker = worker_name()
        self.models = {
            name: ModelShadow(name, config, ShadowWriter(config, worker, self.limits), self.limits)
            for name, config in configs.items()
        }
        if self.limits.enabled:
            _warm_lake_writes(configs)

    def refresh(self, name: str, config: ModelConfig) -> None:
        """Follow the model's challenger alias: load a new version, drop a removed one."""
        model = self.models[name]
        if not self.limits.enabled:
            model.reason = "shadow scoring is off (SERVING_SHADOW=off)"
            return
        registered = tracking.registered_name(config.model.registered_name)
        try:
            wanted = registry.challenger_version(registered)
        except Exception as exc:  # the registry is down: keep what is loaded
            model.reason = f"registry unreachable: {faults.describe(exc)[:300]}"
            return
        current = model.challenger
        if wanted is None:
            unset = f"{registered}: no version has alias {registry.CHALLENGER!r}"
            if current is not None:
                model.drop(unset)
            model.reason = unset
            return
        if current is not None and current.version == wanted:
            model.reason = None
            return
        try:
            loaded = _load(config, wanted)
        except NotServable as exc:
            model.drop(f"challenger not loaded: {exc}")
            log.error("%s: challenger version %s not loaded: %s", name, wanted, exc)
            return
        except Exception as exc:  # transient (keep the current one) or a loading bug (drop it)
            if faults.is_transient(exc):
                model.reason = f"registry unreachable while loading version {wanted}: {faults.describe(exc)}"
            else:
                model.drop(f"challenger version {wanted} failed to load: {faults.describe(exc)}")
                log.exception("%s: challenger version %s failed to load", name, wanted)
            return
        model.set(loaded)
        log.info("%s: shadow scoring with challenger %s version %s", name, registered, wanted)

    def submit(
        self,
        name: str,
        request_id: str,
        records: list[dict[str, Any]],
        served: Served,
        probabilities: np.ndarray,
    ) -> None:
        """Queue an answered request for the model's challenger (a no-op when there is none)."""
        model = self.models.get(name)
        if model is None or model.challenger is None:
            return
        model.submit(_Item(request_id, records, served.version, probabilities, datetime.now(UTC)))

    def status(self, name: str) -> dict[str, Any]:
        """Which challenger version is loaded, or why none is."""
        model = self.models[name]
        challenger = model.challenger
        if challenger is None:
            return {"loaded": False, "reason": model.reason}
        return {
            "loaded": True,
            "version": challenger.version,
            "run_id": challenger.run_id,
            "loaded_at": challenger.loaded_at,
            "queued": model.queued(),
            "unwritten_rows": model.writer.pending,
            "note": model.reason,
        }

    def close(self) -> None:
        """Drain every queue and write every buffer (worker shutdown)."""
        for model in self.models.values():
            model.close()


def _warm_lake_writes(configs: dict[str, ModelConfig]) -> None:
    """Import the S3 client at start-up, not at the first flush under traffic (~3 s holding the GIL).

    The import of Airflow's S3 hook also reconfigures the root logger; the service keeps its own."""
    if not any(storage.is_s3(settings.resolve_location(c.scoring.lake_root())) for c in configs.values()):
        return
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401 - imported for its cost
    except ImportError as exc:
        log.error("shadow rows cannot be written to an s3:// lake: %s (storage.s3_hook needs it)", exc)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
