"""Batch scoring: one partition of incoming rows to one partition of predictions, one pinned version.

The stages are the tasks of `<model>_batch_scoring`; `mlops score` runs them in one process:

1. `pin_model`: resolve `production` (or a given version) once; every later stage loads that
   version, so a promotion during the run cannot mix versions in one partition.
2. `prepare`: find the partition's files, check every table with the row rules (rows that cannot
   be scored go to rejects with their reasons), build the model's input rows (for a feature-row
   model, the feature SQL the version was trained with) and split them into chunk files.
3. `score_chunk`: one chunk to predictions, `batch_rows` rows per model call.
4. `publish`: combine the chunks' outputs into `predictions.parquet`, put `rejects.csv` beside
   it and `_manifest.json` last, replacing an earlier run of the same date. Only an empty target
   or a partition this bundle wrote is replaced (storage.owned_entries); input and output must lie
   under the lake or `scoring.allowed_locations` (checked_location).

When the model has a `challenger` version (shadow mode), `pin_model` pins it too and every chunk
also scores it into `challenger_probability` (with `challenger_version`) beside the champion's
columns. The challenger is loaded with the same signature check; a challenger that fails to pin,
load or score is left out of the whole partition, never the champion's output: its part files are
separate, and the manifest's `challenger` section and the task log say why.

Intermediate files live in the run's staging folder under the output's parent (`_staging/`, a
name partition readers skip), in the lake itself, so Celery workers on other hosts share them.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tabular_mlops import faults, registry, settings, signing, storage, tracking
from tabular_mlops.config import ModelConfig, TableSpec
from tabular_mlops.contract import acceptance_spec
from tabular_mlops.csv_load import (
    LoadOutcome,
    load_csv,
    load_parquet,
    parquet_columns,
    read_header,
    repeated_columns,
    scan_file,
)

MANIFEST = storage.MANIFEST
PREDICTIONS = "predictions.parquet"
INPUTS = "inputs.parquet"
REJECTS = "rejects.csv"
PREPARED = "prepared.json"
# What a run's staging folder holds (storage.claim marks it the bundle's before the first write).
STAGING_ENTRIES = [REJECTS, PREPARED, "input/", "scored/", "challenger/"]
REJECTS_HEADER = ["table", "source_file", "line", "reasons", "raw_row"]
CHALLENGER_COLUMNS = ["challenger_version", "challenger_probability"]
Progress = Callable[[str], None]
log = logging.getLogger(__name__)


class ScoringError(RuntimeError):
    """A scoring run that cannot go on; the message names the location or table at fault."""


class PartitionMissing(ScoringError):
    """The input partition for the date has no files: nothing to score, nothing rescored."""


@dataclass(frozen=True)
class PinnedModel:
    """The registry version a whole run scores with, and the challenger it shadows, if any.

    `challenger` is the version the `challenger` alias named when the run was pinned;
    `challenger_left_out` says why it is not scored (None: it is).
    """

    registered_name: str
    version: str
    challenger: str | None = None
    challenger_left_out: str | None = None

    @property
    def uri(self) -> str:
        """models:/ URI of exactly this version."""
        return f"models:/{self.registered_name}/{self.version}"

    @property
    def scores_challenger(self) -> bool:
        """True when the run scores a challenger beside the champion."""
        return self.challenger is not None and self.challenger_left_out is None

    def to_dict(self) -> dict[str, str | None]:
        """Plain form for XCom."""
        return {
            "registered_name": self.registered_name,
            "version": self.version,
            "challenger": self.challenger,
            "challenger_left_out": self.challenger_left_out,
        }


def lake_root(config: ModelConfig) -> str:
    """The lake of a model: MLOPS_LAKE, else the config's scoring.lake, else <data dir>/lake."""
    return config.scoring.lake_root()


def partition(config: ModelConfig, kind: str, day: date | str) -> str:
    """`<lake>/<kind>/<model>/dt=<YYYY-MM-DD>`, kind being incoming or predictions."""
    root = settings.resolve_location(lake_root(config))
    return storage.join(root, kind, config.name, f"dt={day if isinstance(day, str) else day.isoformat()}")


def run_day(given: str | None, logical_date: datetime | None, run_after: datetime) -> date:
    """The partition day of a run: the `date` Param, else its logical date's UTC day, else yesterday.

    A scheduled or backfill run's logical date is the start of its data interval, midnight of the
    day that ended before the run (config.day_interval); a manual run without one scores the day
    before it was triggered. ValueError names a `date` that is not YYYY-MM-DD.
    """
    if given is not None:
        try:  # the pattern first: fromisoformat also takes 20261120 and, from 3.11, week dates
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", given):
                return date.fromisoformat(given)
        except ValueError:
            pass
        raise ValueError(f"date={given!r} is not a day in the form YYYY-MM-DD")
    if logical_date is not None:
        return logical_date.astimezone(UTC).date()
    return (run_after.astimezone(UTC) - timedelta(days=1)).date()


def allowed_roots(config: ModelConfig) -> list[str]:
    """Where a run may read and write, canonical: the lake, then `scoring.allowed_locations`."""
    return config.scoring.allowed_roots()


def checked_location(config: ModelConfig, name: str, value: str) -> str:
    """A user-given input or output (Param, CLI flag) in canonical form, if under an allowed root.

    storage.ForbiddenLocation names `name`, the value and the roots otherwise; Params can be set
    through the REST API and the CLI, so the form's pattern is not enough on its own.
    """
    roots = allowed_roots(config)
    location = storage.check_allowed(name, value, roots)
    # The run stages beside its output, so an output that is a root itself would stage outside it.
    if name.lstrip("-") == "output" and location in roots:  # roots are canonical already
        raise storage.ForbiddenLocation(
            f"{name}={value!r} is an allowed root itself: the output must be a folder under it"
        )
    return location


def checked_targets(config: ModelConfig, input_location: str, output: str) -> tuple[str, str]:
    """A run's input and output, canonical and under the allowed roots, with a foreign output refused
    before any work (publish checks ownership again before it replaces anything)."""
    source, target = (
        checked_location(config, "input", input_location),
        checked_location(config, "output", output),
    )
    storage.owned_entries(target, config.data.aws_conn_id)
    return source, target


def staging_location(output: str, run_id: str) -> str:
    """The run's scratch folder beside the output partition, under `_staging/`."""
    parent, _, name = output.rstrip("/").rpartition("/")
    return storage.join(parent, "_staging", f"{name}.{run_id}")


def checked_threshold(config: ModelConfig, override: float | None) -> float:
    """The decision threshold of a run: the override when given (within 0..1), else the config's."""
    if override is None:
        return config.model.threshold
    if not 0.0 <= override <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {override}")
    return float(override)


def pin_model(config: ModelConfig, version: str | None = None) -> PinnedModel:
    """The version to score with: the given one, else what `production` points at now."""
    name = tracking.registered_name(config.model.registered_name)
    if version is None:
        version = registry.alias_version(name, registry.PRODUCTION)
        if version is None:
            raise ScoringError(
                f"{name}: no version has alias {registry.PRODUCTION!r}; train and promote one first"
            )
    from mlflow.exceptions import MlflowException

    try:
        tracking.configure().get_model_version(name, str(version))
    except MlflowException as exc:
        raise ScoringError(f"{name}: version {version} is not in the registry: {exc.message}") from None
    try:  # fail the run at its first task, not in every mapped chunk
        signing.check_signed(name, str(version))
    except signing.SignatureError as exc:
        raise ScoringError(f"refusing to score with {exc}") from None
    challenger, left_out = _pin_challenger(name, str(version))
    if left_out:
        log.warning("%s: challenger left out of this run: %s", name, left_out)
    return PinnedModel(name, str(version), challenger, left_out)


def _pin_challenger(name: str, champion: str) -> tuple[str | None, str | None]:
    """(version the `challenger` alias names, why it is not scored); never raises.

    The challenger only shadows: whatever goes wrong with it leaves it out, never fails the run.
    """
    try:
        version = registry.challenger_version(name)
    except Exception as exc:  # a registry fault too: the champion was pinned, the run goes on
        return None, f"the {registry.CHALLENGER!r} alias could not be read: {faults.describe(exc)}"
    if version is None:
        return None, None
    if version == champion:
        return version, f"version {version} is this run's champion itself"
    try:
        signing.check_signed(name, version)
    except Exception as exc:
        return version, f"refusing to score it: {faults.describe(exc)}"
    return version, None


def tables_to_read(config: ModelConfig) -> list[str]:
    """The tables a scoring partition must hold: the entity table, plus history for feature rows."""
    entity = config.scoring_entity_table
    if config.features.model_input == "raw":
        return [entity]
    label_table = config.data.label_table
    return [entity] + [t for t in config.data.tables if t not in (entity, label_table)]


def find_file(config: ModelConfig, table: str, files: list[str]) -> str | None:
    """The file of a table among a location's files, if it is there."""
    return _find_file(config.data.tables[table], table, files)


def _find_file(spec: TableSpec, table: str, files: list[str]) -> str | None:
    """The partition file of a table: its CSV name, else `<stem>.parquet` or `<table>.parquet`."""
    for name in (spec.file, f"{Path(spec.file).stem}.parquet", f"{table}.parquet"):
        if name in files:
            return name
    return None


@dataclass
class TableInput:
    """One input table of a run: where it came from and what the row rules made of it."""

    table: str
    file: str
    sha256: str
    outcome: LoadOutcome

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        o = self.outcome
        return {
            "table": self.table,
            "file": self.file,
            "sha256": self.sha256,
            "rows_read": o.rows_read,
            "rows_rejected": o.rows_quarantined,
            "reject_reasons": o.quarantine_reasons,
            "warnings": o.warnings,
        }


def find_tables(config: ModelConfig, location: str, files: list[str], tables: list[str]) -> dict[str, str]:
    """{table: file name} of the tables a partition must hold; ScoringError naming a missing one."""
    found: dict[str, str] = {}
    for table in tables:
        spec = config.data.tables[table]
        name = _find_file(spec, table, files)
        if name is None:
            raise ScoringError(
                f"{location}: table {table} not found (expected {spec.file} or "
                f"{Path(spec.file).stem}.parquet); the partition holds {', '.join(files)}"
            )
        found[table] = name
    return found


def load_tables(
    config: ModelConfig, location: str, found: dict[str, str], work: Path, say: Progress
) -> tuple[list[TableInput], dict[str, Path]]:
    """Row rules over each found table: (their records, typed parquet per table); rejects in work."""
    inputs: list[TableInput] = []
    typed: dict[str, Path] = {}
    rejects: list[tuple[str, Path]] = []
    for table, name in found.items():
        source = storage.join(location, name)
        local = storage.local_path(source, work / "input", config.data.aws_conn_id)
        record, typed[table], rejected = _load_table(table, config.data.tables[table], local, source, work)
        inputs.append(record)
        rejects.append((table, rejected))
        read, rejected_rows = record.outcome.rows_read, record.outcome.rows_quarantined
        say(f"{table}: {read:,} rows read, {rejected_rows:,} rejected")
    _merge_rejects(rejects, work / REJECTS)
    return inputs, typed


def _load_table(
    table: str, spec: TableSpec, local: Path, label: str, work: Path
) -> tuple[TableInput, Path, Path]:
    """Row rules over one downloaded input file; returns its record, typed parquet and rejects CSV."""
    typed, rejects = work / f"{table}.parquet", work / f"{table}.rejects.csv"
    relaxed = acceptance_spec(spec)
    header = parquet_columns(local) if local.suffix == ".parquet" else read_header(local)
    repeated = repeated_columns(header)
    if repeated:
        raise ScoringError(f"{label}: header repeats column(s) {repeated}")
    if local.suffix == ".parquet":
        outcome = load_parquet(local, relaxed, label, typed, rejects, work / "_duckdb")
        digest = storage.fingerprint(local)
    else:
        scan = scan_file(local)
        outcome = load_csv(local, relaxed, header, scan, label, typed, rejects, work / "_duckdb")
        digest = scan.sha256
    return TableInput(table, local.name, digest, outcome), typed, rejects


def _model_sql(config: ModelConfig, pinned: PinnedModel, say: Progress, model: Any) -> dict[str, str]:
    """The feature SQL the pinned version was trained with (older versions: include/sql's)."""
    from tabular_mlops.features import read_sql_folder

    sql = getattr(model.unwrap_python_model(), "sql", None)
    if sql:
        return dict(sql)
    say(f"{pinned.uri} carries no SQL (trained before it did); using {config.sql_path}")
    return read_sql_folder(config.sql_path)


def _build_feature_rows(
    config: ModelConfig, pinned: PinnedModel, typed: dict[str, Path], out: Path, say: Progress, model: Any
) -> int:
    """Run the version's feature SQL over the typed input tables into `out`; return its row count."""
    import duckdb

    from tabular_mlops.features import bind_parquet, run_feature_sql

    sql = _model_sql(config, pinned, say, model)
    tables = dict(typed)
    # The SQL reads the training table's name; the rows to score stand in for it.
    tables[config.data.label_table] = tables.pop(config.scoring_entity_table)
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        bind_parquet(con, tables)
        run_feature_sql(con, sql).write_parquet(str(out))
        return int(con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(out)}).fetchall()[0][0])


def _write_chunks(rows: Path, chunk_rows: int, folder: Path) -> list[tuple[Path, int]]:
    """Split a parquet file into files of at most chunk_rows rows, streaming; [] for no rows."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    chunks: list[tuple[Path, int]] = []
    source = pq.ParquetFile(rows)
    writer: Any = None
    count = 0
    for batch in source.iter_batches(batch_size=min(chunk_rows, 65_536)):
        offset = 0
        while offset < batch.num_rows:
            if writer is None:
                path = folder / f"part-{len(chunks):05d}.parquet"
                writer = pq.ParquetWriter(path, source.schema_arrow)
                chunks.append((path, 0))
            take = min(chunk_rows - count, batch.num_rows - offset)
            writer.write_batch(batch.slice(offset, take))
            offset += take
            count += take
            if count == chunk_rows:
                writer.close()
                chunks[-1] = (chunks[-1][0], count)
                writer, count = None, 0
    if writer is not None:
        writer.close()
        chunks[-1] = (chunks[-1][0], count)
    return chunks


def _merge_rejects(parts: list[tuple[str, Path]], out: Path) -> int:
    """One rejects CSV from the per-table quarantine files, a `table` column first; return the rows."""
    count = 0
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REJECTS_HEADER)
        for table, path in parts:
            if not path.exists():
                continue
            with path.open(newline="") as source:
                reader = csv.reader(source)
                next(reader)
                for row in reader:
                    writer.writerow([table, *row])
                    count += 1
    return count


def _input_tables(config: ModelConfig, input_location: str) -> tuple[str, dict[str, str]]:
    """(folder to read, {table: file name}) of a partition, or of one CSV given for a one-table model."""
    from tabular_mlops.ingest import is_single_file, single_file_source

    tables = tables_to_read(config)
    if is_single_file(input_location):  # `mlops score --input x.csv`: any name, one table only
        files = [config.data.tables[t].file for t in tables]
        folder, name = single_file_source(config.name, input_location, files)
        if not storage.exists(input_location, config.data.aws_conn_id):
            raise PartitionMissing(f"{input_location}: no such file; nothing scored")
        return folder, {tables[0]: name}
    files = storage.list_files(input_location, config.data.aws_conn_id)
    if not files:
        raise PartitionMissing(
            f"{input_location}: no input files (partition missing or empty); nothing scored"
        )
    return input_location, find_tables(config, input_location, files, tables)


def _check_rejected_share(
    config: ModelConfig, input_location: str, staging: str, inputs: list[TableInput]
) -> None:
    """ScoringError when any table lost more than `scoring.max_rejected_share` of its rows to rejects."""
    too_many = [
        f"{r.table}: {r.outcome.rows_quarantined:,} of {r.outcome.rows_read:,} rows rejected"
        for r in inputs
        if r.outcome.rows_read
        and r.outcome.rows_quarantined / r.outcome.rows_read > config.scoring.max_rejected_share
    ]
    if too_many:
        raise ScoringError(
            f"{input_location}: more than {config.scoring.max_rejected_share:.2%} of rows rejected "
            f"({'; '.join(too_many)}); rejects with reasons: {storage.join(staging, REJECTS)}"
        )


def _rows_to_score(
    config: ModelConfig,
    pinned: PinnedModel,
    entity: TableInput,
    typed: dict[str, Path],
    work: Path,
    say: Progress,
    model: Any,
) -> Path:
    """The model's input rows: the entity table's typed rows, or the feature rows the pinned version's
    SQL builds from all tables (ScoringError when those are not one per kept entity row)."""
    rows = typed[config.scoring_entity_table]
    if config.features.model_input != "features":
        return rows
    kept = entity.outcome.rows_written
    rows = work / "feature_rows.parquet"
    model = model if model is not None else load_pinned(pinned)
    built = _build_feature_rows(config, pinned, typed, rows, say, model)
    if built != kept:
        raise ScoringError(
            f"{config.name}: the feature SQL made {built:,} rows from {kept:,} entity rows; "
            f"duplicate {config.features.entity_key} values in {entity.file}?"
        )
    return rows


def _stage_chunks(config: ModelConfig, rows: Path, staging: str, work: Path) -> list[dict[str, Any]]:
    """Split the rows to score into chunk files under `<staging>/input/`; each one's index, URI, rows."""
    chunks = _write_chunks(rows, config.scoring.chunk_rows, work / "chunks")
    staged = []
    for index, (path, count) in enumerate(chunks):
        uri = storage.join(staging, "input", path.name)
        storage.upload(path, uri, config.data.aws_conn_id)
        staged.append({"index": index, "uri": uri, "rows": count})
    return staged


def prepare(
    config: ModelConfig,
    pinned: PinnedModel,
    input_location: str,
    staging: str,
    progress: Progress | None = None,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Validate the partition, build the rows to score, stage them as chunks; return the chunks.

    `model` is the pinned version already loaded (loaded here when a feature-row model needs it).
    """
    say = progress or (lambda _m: None)
    conn = config.data.aws_conn_id
    started = time.perf_counter()
    location, found = _input_tables(config, input_location)
    # Claimed before the first write, so the deletes of a failed or finished run pass the same check.
    storage.claim(staging, STAGING_ENTRIES, conn)
    work = Path(tempfile.mkdtemp(prefix="mlops-prepare-"))
    try:
        inputs, typed = load_tables(config, location, found, work, say)
        storage.upload(work / REJECTS, storage.join(staging, REJECTS), conn)
        _check_rejected_share(config, input_location, staging, inputs)
        entity = next(r for r in inputs if r.table == config.scoring_entity_table)
        kept = entity.outcome.rows_written
        staged: list[dict[str, Any]] = []
        if kept:  # no rows left to score: no chunks, and no feature SQL to run
            rows = _rows_to_score(config, pinned, entity, typed, work, say, model)
            staged = _stage_chunks(config, rows, staging, work)
        prepared = {
            "input": input_location,
            "tables": [r.to_dict() for r in inputs],
            "entity_table": config.scoring_entity_table,
            "rows_to_score": kept,
            "chunks": len(staged),
            "prepare_seconds": round(time.perf_counter() - started, 2),
        }
        (work / PREPARED).write_text(json.dumps(prepared, indent=2))
        storage.upload(work / PREPARED, storage.join(staging, PREPARED), conn)
        say(f"{kept:,} rows to score in {len(staged)} chunk(s) of at most {config.scoring.chunk_rows:,}")
        return staged
    finally:
        shutil.rmtree(work, ignore_errors=True)


def discard_staged_rows(config: ModelConfig, staging: str) -> None:
    """After a failed run: drop the staged rows, keep rejects.csv there for whoever investigates."""
    keep = [REJECTS, PREPARED, storage.OWNER_MARKER]  # the marker keeps the remains claimed
    storage.delete_tree(staging, config.data.aws_conn_id, keep=keep)


def load_pinned(pinned: PinnedModel) -> Any:
    """The pinned version as a pyfunc, once its signature checks out (ScoringError naming it if not)."""
    try:
        return signing.load_verified(pinned.registered_name, pinned.version)
    except signing.SignatureError as exc:
        raise ScoringError(f"refusing to score with {exc}") from None


def load_challenger(config: ModelConfig, pinned: PinnedModel, champion: Any) -> tuple[Any, str | None]:
    """(the pinned challenger as a verified pyfunc, None) or (None, why it is left out); never raises."""
    if not pinned.scores_challenger:
        return None, pinned.challenger_left_out
    version = str(pinned.challenger)
    try:
        model = signing.load_verified(pinned.registered_name, version)
        if config.features.model_input == "features":
            # The chunk holds feature rows built with the champion's SQL; other SQL means other rows.
            ours = getattr(champion.unwrap_python_model(), "sql", None)
            if getattr(model.unwrap_python_model(), "sql", None) != ours:
                return None, (
                    f"version {version} was trained with other feature SQL than champion "
                    f"{pinned.version}, whose SQL built this run's rows"
                )
    except Exception as exc:  # whatever it is, the champion's run goes on without it
        return None, f"version {version} could not be loaded: {faults.describe(exc)}"
    return model, None


def _challenger_probability(challenger: Any, frame: Any) -> Any:
    """The challenger's probabilities for one batch; ValueError when they are not one per row in 0..1."""
    import numpy as np

    from tabular_mlops.training import signature_frame

    probability = challenger.predict(signature_frame(frame))["probability"].to_numpy(dtype="float64")
    if probability.shape != (len(frame),):
        raise ValueError(f"{probability.size} probabilities for {len(frame)} rows")
    if not (np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()):
        raise ValueError("probabilities outside 0..1 or not finite")
    return probability


class _Shadow:
    """The challenger's side of one chunk: its probabilities batch by batch, or why it stopped."""

    def __init__(self, config: ModelConfig, pinned: PinnedModel, challenger: Any, left_out: str | None):
        self.config, self.pinned, self.model, self.left_out = config, pinned, challenger, left_out
        self.parts: list[Any] = []

    def score(self, frame: Any) -> None:
        """Score one batch; a failure leaves the challenger out of the rest of the chunk."""
        if self.model is None:
            return
        try:  # signature_frame copies: each model gets its own copy of the same rows
            self.parts.append(_challenger_probability(self.model, frame))
        except Exception as exc:
            self.model = None
            self.left_out = f"version {self.pinned.challenger} failed to score: {faults.describe(exc)}"

    def finish(self, staging: str, name: str, work: Path, index: int) -> dict[str, Any] | None:
        """Stage the chunk's probabilities as `<staging>/challenger/<name>`; the chunk's challenger counts."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.model is not None:
            try:
                probability = np.concatenate(self.parts) if self.parts else np.empty(0)
                if self.parts:
                    out = work / f"challenger-{name}"
                    pq.write_table(pa.table({"challenger_probability": probability}), out)
                    target = storage.join(staging, "challenger", name)
                    storage.upload(out, target, self.config.data.aws_conn_id)
                total = float(probability.sum())
                return {
                    "version": self.pinned.challenger,
                    "rows": int(probability.size),
                    "probability_sum": total,
                }
            except Exception as exc:
                self.left_out = f"staging its probabilities failed: {faults.describe(exc)}"
        if self.pinned.challenger is None:
            return None
        if self.left_out != self.pinned.challenger_left_out:  # pin_model logged that one already
            log.warning("chunk %s: challenger left out: %s", index, self.left_out)
        return {"version": self.pinned.challenger, "left_out": self.left_out}


def _reason_writer(config: ModelConfig, model: Any) -> Callable[[Any], dict[str, Any]] | None:
    """reason_1..reason_k of a batch (`scoring.explain_top_k`), None when k is 0.

    TreeSHAP through the pinned pyfunc's own classifier: its feature step, encoder and trees.
    """
    k = config.scoring.explain_top_k
    if not k:
        return None
    import pandas as pd

    from tabular_mlops.explain import explainer_for, reason_columns
    from tabular_mlops.modeling import train_threads
    from tabular_mlops.training import signature_frame

    classifier = model.unwrap_python_model()
    # A task's thread budget, as training's (MLOPS_TRAIN_THREADS): serving's one thread is for requests.
    explainer = explainer_for(classifier, config, threads=train_threads())

    def reasons(frame: Any) -> dict[str, Any]:
        columns = reason_columns(classifier, explainer, signature_frame(frame), k)
        # Typed as text: a batch whose reason_k is all empty must not write a null-typed column.
        return {name: pd.array(texts, dtype="string") for name, texts in columns.items()}

    return reasons


class _Predictions:
    """A run's prediction rows for batches of model input rows: scores, decision and run columns."""

    def __init__(
        self,
        config: ModelConfig,
        pinned: PinnedModel,
        model: Any,
        threshold: float,
        run_id: str,
        scored_at: str,
    ) -> None:
        import pandas as pd

        self.key, self.pinned, self.model = config.features.entity_key, pinned, model
        self.threshold, self.run_id, self.stamp = threshold, run_id, pd.Timestamp(scored_at)
        self.explain = _reason_writer(config, model)

    def of(self, frame: Any) -> tuple[Any, Any, Any]:
        """(prediction rows, probabilities, 0/1 decisions) of one batch."""
        import pandas as pd

        from tabular_mlops.training import signature_frame

        probability = self.model.predict(signature_frame(frame))["probability"].to_numpy(dtype="float64")
        prediction = (probability >= self.threshold).astype("int8")
        scored = pd.DataFrame(
            {
                self.key: frame[self.key].to_numpy(),
                "probability": probability,
                "prediction": prediction,
                "threshold": self.threshold,
                "model_name": self.pinned.registered_name,
                "model_version": self.pinned.version,
                "scored_at": self.stamp,
                "run_id": self.run_id,
            }
        )
        if self.explain is not None:
            scored = scored.assign(**self.explain(frame))
        return scored, probability, prediction


class _ScoredPart:
    """One chunk's prediction rows streamed into one parquet file, with the chunk's counts."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.writer: Any = None  # opened by the first batch
        self.rows = self.positives = 0
        self.probability_sum = 0.0

    def write(self, scored: Any, probability: Any, prediction: Any) -> None:
        """Append one batch's rows and count them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(scored, preserve_index=False)
        if self.writer is None:  # the first batch's schema is the file's
            self.writer = pq.ParquetWriter(self.out, table.schema)
        self.writer.write_table(table)
        self.rows += len(scored)
        self.positives += int(prediction.sum())
        self.probability_sum += float(probability.sum())

    def close(self) -> bool:
        """Finish the file; False when no batch came, so there is no file to stage."""
        if self.writer is None:
            return False
        self.writer.close()
        return True


def score_chunk(
    config: ModelConfig,
    pinned: PinnedModel,
    chunk: dict[str, Any],
    staging: str,
    threshold: float,
    run_id: str,
    scored_at: str,
    model: Any = None,
    challenger: Any = None,
) -> dict[str, Any]:
    """Score one staged chunk into `<staging>/scored/part-N.parquet`; return its counts.

    With a pinned challenger (`challenger`: it loaded, else loaded here), its probabilities go to
    `<staging>/challenger/part-N.parquet`; a failure there is reported under `challenger` in the
    counts and leaves the champion's part as it would be without one.
    """
    import pyarrow.parquet as pq

    conn = config.data.aws_conn_id
    model = model if model is not None else load_pinned(pinned)
    shadow = _Shadow(
        config,
        pinned,
        *((challenger, None) if challenger is not None else load_challenger(config, pinned, model)),
    )
    predictions = _Predictions(config, pinned, model, threshold, run_id, scored_at)
    work = Path(tempfile.mkdtemp(prefix="mlops-score-"))
    try:
        local = storage.download(chunk["uri"], work / "chunk.parquet", conn)
        part = _ScoredPart(work / f"part-{int(chunk['index']):05d}.parquet")
        for batch in pq.ParquetFile(local).iter_batches(batch_size=config.scoring.batch_rows):
            frame = batch.to_pandas()
            shadow.score(frame)
            scored, probability, prediction = predictions.of(frame)
            part.write(scored, probability, prediction)
        if part.close():
            storage.upload(part.out, storage.join(staging, "scored", part.out.name), conn)
        return {
            "index": chunk["index"],
            "rows": part.rows,
            "positives": part.positives,
            "probability_sum": part.probability_sum,
            "challenger": shadow.finish(staging, part.out.name, work, int(chunk["index"])),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _empty_predictions(config: ModelConfig) -> Any:
    """The predictions schema, for a partition with no rows to score."""
    import pyarrow as pa

    key = config.features.entity_key
    column = config.data.tables[config.scoring_entity_table].columns[key]
    key_type = pa.int64() if column.type == "int" else pa.float64() if column.type == "float" else pa.string()
    return pa.schema(
        [
            (key, key_type),
            ("probability", pa.float64()),
            ("prediction", pa.int8()),
            ("threshold", pa.float64()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("scored_at", pa.timestamp("ns", tz="UTC")),
            ("run_id", pa.string()),
            *[(f"reason_{i + 1}", pa.string()) for i in range(config.scoring.explain_top_k)],
        ]
    )


def _concat_staged(
    staging: str, kind: str, names: list[str], out: Path, work: Path, conn: str, config: ModelConfig
) -> bool:
    """Stream staged parquet parts, in order, into one file; False when there were none."""
    import pyarrow.parquet as pq

    writer: Any = None
    for name in names:
        local = storage.download(storage.join(staging, kind, name), work / f"{kind}-{name}", conn)
        source = pq.ParquetFile(local)
        for batch in source.iter_batches(batch_size=config.scoring.batch_rows):
            if writer is None:
                writer = pq.ParquetWriter(out, source.schema_arrow)
            writer.write_batch(batch)
        local.unlink()
    if writer is None:
        return False
    writer.close()
    return True


def challenger_outcome(pinned: PinnedModel, parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest's `challenger` section: its version, whether every row got its probability, why not.

    None when the model has no challenger. All or nothing: one chunk left out leaves it out of the
    whole partition, so a reader never meets a partition where only some rows were shadowed.
    """
    if pinned.challenger is None and pinned.challenger_left_out is None:
        return None
    reasons = [pinned.challenger_left_out] if pinned.challenger_left_out else []
    for part in parts if not reasons else []:  # left out when pinned: every chunk says the same
        shadow = part.get("challenger") or {"left_out": "not scored"}
        if shadow.get("left_out"):
            reasons.append(f"chunk {part['index']}: {shadow['left_out']}")
        elif int(shadow["rows"]) != int(part["rows"]):
            reasons.append(f"chunk {part['index']}: {shadow['rows']} challenger rows for {part['rows']}")
    rows = sum(int(part["rows"]) for part in parts)
    if not reasons and not rows:
        reasons.append("no rows to score")
    unique = list(dict.fromkeys(reasons))
    outcome: dict[str, Any] = {"version": pinned.challenger, "scored": not unique}
    if unique:
        outcome["left_out"] = "; ".join(unique[:5]) + (
            f" (and {len(unique) - 5} more)" if len(unique) > 5 else ""
        )
    else:
        total = sum(float(part["challenger"]["probability_sum"]) for part in parts)
        outcome.update(rows=rows, mean_probability=round(total / rows, 6))
    return outcome


def _concat_with_challenger(
    staging: str, names: list[str], out: Path, work: Path, conn: str, version: str
) -> None:
    """The champion's scored parts with the challenger's columns appended, row for row, into one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: Any = None
    for name in names:
        scored = pq.read_table(
            storage.download(storage.join(staging, "scored", name), work / f"s-{name}", conn)
        )
        shadow = pq.read_table(
            storage.download(storage.join(staging, "challenger", name), work / f"c-{name}", conn)
        )
        if shadow.num_rows != scored.num_rows:
            raise ValueError(f"{name}: {shadow.num_rows} challenger rows for {scored.num_rows}")
        table = scored.append_column(
            "challenger_version", pa.array([version] * scored.num_rows, pa.string())
        ).append_column("challenger_probability", shadow.column("challenger_probability"))
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def _write_predictions(
    config: ModelConfig,
    pinned: PinnedModel,
    staging: str,
    names: list[str],
    folder: Path,
    work: Path,
    outcome: dict[str, Any] | None,
) -> None:
    """predictions.parquet from the scored parts, with the challenger's columns when it was scored."""
    import pyarrow.parquet as pq

    conn = config.data.aws_conn_id
    if outcome is not None and outcome["scored"]:
        try:
            _concat_with_challenger(staging, names, folder / PREDICTIONS, work, conn, str(pinned.challenger))
            return
        except Exception as exc:  # the champion's partition is published all the same
            (folder / PREDICTIONS).unlink(missing_ok=True)
            reason = f"its parts could not be combined: {faults.describe(exc)}"
            outcome.update(scored=False, left_out=reason)
            for key in ("rows", "mean_probability"):
                outcome.pop(key, None)
    if outcome is not None and not outcome["scored"]:
        log.warning(
            "%s: challenger %s left out of the partition: %s",
            pinned.registered_name,
            outcome["version"],
            outcome["left_out"],
        )
    if not _concat_staged(staging, "scored", names, folder / PREDICTIONS, work, conn, config):
        pq.write_table(_empty_predictions(config).empty_table(), folder / PREDICTIONS)


def _scored_rows(output: str, prepared: dict[str, Any], parts: list[dict[str, Any]]) -> int:
    """The rows the chunks scored; ScoringError when they are not the rows prepare staged."""
    rows = sum(int(s["rows"]) for s in parts)
    if rows != prepared["rows_to_score"]:
        raise ScoringError(
            f"{output}: {rows:,} rows scored, {prepared['rows_to_score']:,} staged; not publishing"
        )
    return rows


def _write_partition_files(
    config: ModelConfig,
    pinned: PinnedModel,
    staging: str,
    parts: list[dict[str, Any]],
    folder: Path,
    work: Path,
) -> dict[str, Any] | None:
    """predictions.parquet and inputs.parquet from the staged parts; return the challenger section."""
    names = [f"part-{int(part['index']):05d}.parquet" for part in parts]
    challenger = challenger_outcome(pinned, parts)
    _write_predictions(config, pinned, staging, names, folder, work, challenger)
    # The model's input rows travel with the predictions: monitoring measures drift on them.
    _concat_staged(staging, "input", names, folder / INPUTS, work, config.data.aws_conn_id, config)
    return challenger


def _counts(
    output: str,
    prepared: dict[str, Any],
    parts: list[dict[str, Any]],
    rows: int,
    started_at: datetime | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the partition's row counts, the run's timings); ScoringError when rows went missing."""
    entity = next(t for t in prepared["tables"] if t["table"] == prepared["entity_table"])
    positives = sum(int(s["positives"]) for s in parts)
    counts = {
        "input": entity["rows_read"],
        "scored": rows,
        "rejected": entity["rows_rejected"],
        "positives": positives,
        "mean_probability": round(sum(float(s["probability_sum"]) for s in parts) / rows, 6)
        if rows
        else None,
    }
    if counts["scored"] + counts["rejected"] != counts["input"]:
        raise ScoringError(f"{output}: scored + rejected != input rows ({counts}); not publishing")
    timings = {"prepare_seconds": prepared["prepare_seconds"]}
    if started_at is not None:
        duration = round((datetime.now(UTC) - started_at).total_seconds(), 2)
        timings["run_seconds"] = counts["duration_seconds"] = duration
    return counts, timings


def _partition_record(
    prepared: dict[str, Any], output: str, counts: dict[str, Any], timings: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's account of the partition: what went in, what came out, how long it took."""
    return {
        "input": {"location": prepared["input"], "tables": prepared["tables"]},
        "output": {
            "location": output,
            "files": [PREDICTIONS, INPUTS, REJECTS] if counts["scored"] else [PREDICTIONS, REJECTS],
        },
        "counts": counts,
        "rejects_by_table": {t["table"]: t["rows_rejected"] for t in prepared["tables"]},
        "timings": timings,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def publish(
    config: ModelConfig,
    pinned: PinnedModel,
    staging: str,
    output: str,
    scored: list[dict[str, Any]],
    threshold: float,
    run_id: str,
    origin: dict[str, str] | None = None,
    started_at: datetime | None = None,
    day: str | None = None,
) -> dict[str, Any]:
    """Combine the scored chunks and rejects into the output partition, manifest last; return the summary.

    `started_at` (when the run began) gives the run's duration in the manifest and the counts;
    `day` (YYYY-MM-DD) is the partition's day, which monitoring reads as the window's date.
    """
    from tabular_mlops.training import git_commit

    conn = config.data.aws_conn_id
    work = Path(tempfile.mkdtemp(prefix="mlops-publish-"))
    try:
        prepared = json.loads(
            storage.download(storage.join(staging, PREPARED), work / PREPARED, conn).read_text()
        )
        folder = work / "partition"
        folder.mkdir()
        storage.download(storage.join(staging, REJECTS), folder / REJECTS, conn)
        parts = sorted(scored, key=lambda s: int(s["index"]))
        rows = _scored_rows(output, prepared, parts)
        challenger = _write_partition_files(config, pinned, staging, parts, folder, work)
        counts, timings = _counts(output, prepared, parts, rows, started_at)
        manifest = {
            "model": config.name,
            "day": day,
            "registered_name": pinned.registered_name,
            "model_version": pinned.version,
            "challenger": challenger,
            "threshold": threshold,
            "run_id": run_id,
            "airflow": origin or {},
            "code_version": git_commit(),
            **_partition_record(prepared, output, counts, timings),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        storage.replace_partition(folder, output, conn, MANIFEST)
        storage.delete_tree(staging, conn)
        return {
            "output": output,
            **{k: manifest[k] for k in ("model", "model_version", "challenger", "threshold", "run_id")},
            "counts": counts,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def score_partition(
    config: ModelConfig,
    input_location: str,
    output: str,
    threshold: float | None = None,
    version: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    day: str | None = None,
) -> dict[str, Any]:
    """The whole run in one process (what `mlops score` does): pin, prepare, score, publish.

    `day` is recorded in the manifest as the partition's day (monitoring's window date); without
    one, the day the run started (UTC), as `mlops score` without `--date` does.
    """
    from tabular_mlops.ingest import default_run_id, safe_run_id

    say = progress or (lambda _m: None)
    started, started_at = time.perf_counter(), datetime.now(UTC)
    run = safe_run_id(run_id or default_run_id())
    input_location, output = checked_targets(config, input_location, output)
    pinned = pin_model(config, version)
    say(f"scoring with {pinned.uri}")
    cut = checked_threshold(config, threshold)
    staging = staging_location(output, run)
    try:
        # One load serves the feature SQL in prepare and every chunk.
        model = load_pinned(pinned)
        challenger, left_out = load_challenger(config, pinned, model)
        if left_out:
            say(f"challenger left out: {left_out}")
            pinned = replace(pinned, challenger_left_out=left_out)
        elif challenger is not None:
            say(f"shadowing with challenger version {pinned.challenger}")
        chunks = prepare(config, pinned, input_location, staging, say, model)
        scored_at = datetime.now(UTC).isoformat()
        results = []
        for chunk in chunks:
            results.append(
                score_chunk(config, pinned, chunk, staging, cut, run, scored_at, model, challenger)
            )
            say(f"chunk {chunk['index'] + 1}/{len(chunks)}: {chunk['rows']:,} rows scored")
        day = day or started_at.date().isoformat()
        summary = publish(config, pinned, staging, output, results, cut, run, started_at=started_at, day=day)
    except Exception:
        discard_staged_rows(config, staging)
        raise
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary
