"""`materialize`: a model's history features computed in batch and written to the online store.

The history view of the feature SQL (`features.history_view`) runs over typed history tables,
with the SQL of a registry version (the production one by default, so serving reads features
its own SQL computed), and each entity's row goes to Redis (online_store.py). Three callers:

- the training DAG, after `build_features`, over the run's validated interim tables;
- the scoring DAG, after `publish`, over the partition's history tables, as an upsert of the
  partition's entities (everyone else keeps their features);
- `mlops materialize --model M [--data PATH] [--version V] [--upsert]`, over raw CSV or parquet
  tables checked with the same row rules as batch scoring (rejected rows kept with reasons).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tabular_mlops import online_store, settings, storage
from tabular_mlops.config import ModelConfig
from tabular_mlops.online_store import OnlineStoreError

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class Materialized:
    """What one materialisation wrote."""

    model: str
    namespace: str
    generation: str
    mode: str
    entities: int
    removed: int
    columns: int
    model_version: str | None
    sql_sha256: str
    source: str
    as_of: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the CLI and XCom."""
        return asdict(self)


@dataclass(frozen=True)
class HistorySql:
    """The history part of a version's feature SQL, and who it belongs to."""

    sql: dict[str, str]
    view: str
    model_name: str | None
    model_version: str | None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the closure's SQL: the online store's namespace for it."""
        return online_store.sql_fingerprint(self.sql)


def history_sql(
    config: ModelConfig, sql: dict[str, str], name: str | None, version: str | None
) -> HistorySql:
    """The history view and the views it needs, cut from a version's full feature SQL."""
    from tabular_mlops.features import view_closure

    view = config.features.history_view
    if view is None:
        raise OnlineStoreError(f"{config.name} has no features.history_view: nothing to materialise")
    return HistorySql(view_closure(sql, view), view, name, version)


def version_history_sql(config: ModelConfig, version: str | None = None) -> HistorySql:
    """The history SQL of a version (default: production; none yet: include/sql's, unversioned)."""
    from tabular_mlops import registry, signing, tracking
    from tabular_mlops.features import read_sql_folder

    name = tracking.registered_name(config.model.registered_name)
    if version is None:
        version = registry.alias_version(name, registry.PRODUCTION)
    if version is None:
        log.warning("%s: no production version yet; materialising with %s", name, config.sql_path)
        return history_sql(config, read_sql_folder(config.sql_path), None, None)
    model = signing.load_verified(name, str(version))
    sql = getattr(model.unwrap_python_model(), "sql", None) or read_sql_folder(config.sql_path)
    return history_sql(config, dict(sql), name, str(version))


def _history_relation(con: Any, config: ModelConfig, history: HistorySql, tables: dict[str, Path]) -> Any:
    """The history view over the bound tables, checked: the key present, every feature numeric."""
    from tabular_mlops.features import bind_parquet, run_feature_sql

    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    bind_parquet(con, tables)
    relation = run_feature_sql(con, history.sql, final=history.view)
    key = config.features.entity_key
    if key not in relation.columns:
        raise OnlineStoreError(f"{history.view}.sql must select the entity key {key!r}")
    text = [c for c, t in zip(relation.columns, relation.types, strict=True) if c != key and _not_numeric(t)]
    if text:
        raise OnlineStoreError(f"{history.view}.sql: the online store holds numbers only; {text} are not")
    return relation


def _not_numeric(duck_type: Any) -> bool:
    name = str(duck_type).upper()
    return not any(k in name for k in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "BOOLEAN"))


def _batches(
    relation: Any, key: str, columns: list[str], rows: int
) -> Iterable[tuple[list[str], np.ndarray]]:
    """(entity keys as text, float64 matrix with NaN for nulls) per record batch, streamed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    reader = relation.fetch_arrow_reader(rows)
    for batch in reader:
        keys = [str(k) for k in batch.column(key).to_pylist()]
        matrix = np.empty((batch.num_rows, len(columns)), dtype=np.float64)
        for j, column in enumerate(columns):
            values = pc.cast(batch.column(column), pa.float64())
            matrix[:, j] = values.to_numpy(zero_copy_only=False)
        yield keys, matrix


# Swap the live generation and drop the old one in one step: no reader sees a deleted generation.
_SWAP = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then
  redis.call('UNLINK', ARGV[2] .. ':rows:' .. old, ARGV[2] .. ':meta:' .. old)
end
return old
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Writer:
    """One materialisation's hold on a namespace: the lock, the generation and its writes."""

    def __init__(self, client: Any, prefix: str, url: str) -> None:
        self.client, self.prefix, self.url = client, prefix, url
        self.token = online_store.new_generation()
        self.lock = f"{prefix}:lock"

    def __enter__(self) -> _Writer:
        with online_store.wrap_errors("taking the materialisation lock", self.url):
            if not self.client.set(self.lock, self.token, nx=True, ex=online_store.LOCK_SECONDS):
                holder = self.client.get(self.lock)
                raise OnlineStoreError(
                    f"another materialisation holds {self.lock} ({holder!r}); it expires within "
                    f"{online_store.LOCK_SECONDS} s of its start"
                )
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.client.eval(_RELEASE, 1, self.lock, self.token)
        except Exception:  # the lock expires by itself; a failed release must not hide the real error
            log.warning("could not release %s; it expires by itself", self.lock)

    def current(self) -> str | None:
        """The live generation of the namespace, if any."""
        found = self.client.get(f"{self.prefix}:current")
        return None if found is None else found.decode()

    def sweep(self, keep: set[str]) -> int:
        """Delete generations nobody points at (left by a killed writer); return how many keys."""
        stale = [
            k
            for pattern in (f"{self.prefix}:rows:*", f"{self.prefix}:meta:*")
            for k in self.client.scan_iter(match=pattern, count=1000)
            if k.decode().rsplit(":", 1)[1] not in keep
        ]
        if stale:
            self.client.unlink(*stale)
        return len(stale)

    def write_rows(
        self, generation: str, batches: Iterable[tuple[list[str], np.ndarray]], as_of: float
    ) -> set[str]:
        """HSET every entity's packed row into the generation; return the keys written."""
        written: set[str] = set()
        rows_key = f"{self.prefix}:rows:{generation}"
        pack = online_store.pack
        for keys, matrix in batches:
            for start in range(0, len(keys), online_store.WRITE_BATCH):
                part = keys[start : start + online_store.WRITE_BATCH]
                block = matrix[start : start + len(part)]
                self.client.hset(
                    rows_key, mapping={k: pack(as_of, row) for k, row in zip(part, block, strict=True)}
                )
            written.update(keys)
        return written

    def write_meta(self, generation: str, fields: dict[str, Any]) -> None:
        """The generation's metadata hash."""
        self.client.hset(f"{self.prefix}:meta:{generation}", mapping={k: str(v) for k, v in fields.items()})

    def swap(self, generation: str) -> str | None:
        """Make `generation` live and delete the one it replaces, atomically; return the old one."""
        old = self.client.eval(_SWAP, 1, f"{self.prefix}:current", generation, self.prefix)
        return None if old is None else old.decode()

    def begin(self, upsert: bool) -> tuple[str | None, str]:
        """(the live generation, the one to write): the live one for an upsert, else a new one.

        Generations neither of them, left by a killed writer, are swept first.
        """
        current = self.current()
        generation = current if upsert and current is not None else online_store.new_generation()
        self.sweep({g for g in (current, generation) if g})
        return current, generation

    def finish(self, current: str | None, generation: str, fields: dict[str, Any]) -> None:
        """Write the generation's metadata and make it live if it is not already."""
        self.write_meta(generation, fields)
        if generation != current:
            self.swap(generation)


def history_tables(config: ModelConfig, history: HistorySql) -> list[str]:
    """The data tables the history SQL reads."""
    from tabular_mlops.features import mentioned

    found: set[str] = set()
    for text in history.sql.values():
        found |= mentioned(text, config.data.tables)
    return [t for t in config.data.tables if t in found]


def materialize_tables(
    config: ModelConfig,
    tables: dict[str, Path],
    history: HistorySql,
    source: str,
    as_of: datetime | None = None,
    upsert_entities: Iterable[str] | None = None,
    url: str | None = None,
) -> Materialized:
    """Write the history view over typed parquet `tables` to the store.

    Full (default): a new generation replaces the live one, so an entity that left the source
    is gone. Upsert (`upsert_entities`: the keys a partition is about): its entities' rows are
    replaced in the live generation, those without history removed, the rest kept; a row the
    store holds as of a later time than `as_of` is left alone (a backfill of an old day).
    """
    import duckdb

    started = time.perf_counter()
    url = url or online_store.store_url()
    moment = as_of or datetime.now(UTC)
    prefix = online_store.namespace(config.name, history.fingerprint)
    client = online_store.connect(url, timeout=60)
    key = config.features.entity_key
    with (
        duckdb.connect() as con,
        online_store.wrap_errors("materialising", url),
        _Writer(client, prefix, url) as writer,
    ):
        relation = _history_relation(con, config, history, tables)
        columns = [c for c in relation.columns if c != key]
        current, generation = writer.begin(upsert=upsert_entities is not None)
        # An upsert with no live generation yet writes a full one.
        upsert = upsert_entities is not None and current is not None
        batches = _batches(relation, key, columns, 50_000)
        removed = _write_rows(
            writer, generation, batches, moment.timestamp(), upsert_entities if upsert else None
        )
        entities = int(client.hlen(f"{prefix}:rows:{generation}"))
        writer.finish(current, generation, _meta_fields(config, history, columns, source, moment, entities))
    return Materialized(
        model=config.name,
        namespace=prefix,
        generation=generation,
        mode="upsert" if upsert_entities is not None else "full",
        entities=entities,
        removed=removed,
        columns=len(columns),
        model_version=history.model_version,
        sql_sha256=history.fingerprint,
        source=source,
        as_of=moment.isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 2),
    )


def _write_rows(
    writer: _Writer,
    generation: str,
    batches: Iterable[tuple[list[str], np.ndarray]],
    as_of: float,
    upsert_entities: Iterable[str] | None,
) -> int:
    """Write the rows into `generation`; return how many entities were removed.

    An upsert (`upsert_entities`: the partition's keys) skips entities the store holds as of a
    later time and removes the partition's entities that no longer have history.
    """
    if upsert_entities is None:
        writer.write_rows(generation, batches, as_of)
        return 0
    rows_key = f"{writer.prefix}:rows:{generation}"
    written = writer.write_rows(generation, _newer_only(writer.client, rows_key, batches, as_of), as_of)
    return _remove_without_history(writer.client, rows_key, set(upsert_entities) - written, as_of)


def _meta_fields(
    config: ModelConfig, history: HistorySql, columns: list[str], source: str, moment: datetime, rows: int
) -> dict[str, Any]:
    """What the metadata hash of a generation says."""
    return {
        "entity_key": config.features.entity_key,
        "columns": json.dumps(columns),
        "model_name": history.model_name or "",
        "model_version": history.model_version or "",
        "sql_sha256": history.fingerprint,
        "sql": json.dumps(history.sql),
        "history_view": history.view,
        "source": source,
        "as_of": moment.isoformat(timespec="seconds"),
        "materialized_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }


def _stored_as_of(client: Any, rows_key: str, keys: list[str]) -> dict[str, float]:
    """The as-of time of the rows the store holds for these keys."""
    found = client.hmget(rows_key, keys) if keys else []
    return {k: online_store.as_of(v) for k, v in zip(keys, found, strict=True) if v is not None}


def _newer_only(
    client: Any, rows_key: str, batches: Iterable[tuple[list[str], np.ndarray]], as_of: float
) -> Iterable[tuple[list[str], np.ndarray]]:
    """Drop the rows of entities the store already holds as of a later time."""
    for keys, matrix in batches:
        stored = _stored_as_of(client, rows_key, keys)
        keep = [i for i, k in enumerate(keys) if stored.get(k, -np.inf) <= as_of]
        yield [keys[i] for i in keep], matrix[keep]


def _remove_without_history(client: Any, rows_key: str, keys: set[str], as_of: float) -> int:
    """HDEL the partition's entities that now have no history (unless held as of a later time)."""
    ordered = sorted(keys)
    stored = _stored_as_of(client, rows_key, ordered)
    gone = [k for k in ordered if k in stored and stored[k] <= as_of]
    return int(client.hdel(rows_key, *gone)) if gone else 0


def materialize_interim(config: ModelConfig, interim_dir: Path, version: str | None) -> Materialized:
    """After a feature build: the run's validated interim tables, with `version`'s SQL."""
    history = version_history_sql(config, version)
    tables = {t: Path(interim_dir) / f"{t}.parquet" for t in history_tables(config, history)}
    missing = [str(p) for p in tables.values() if not p.is_file()]
    if missing:
        raise OnlineStoreError(f"interim tables missing (run data_ingest first): {', '.join(missing)}")
    return materialize_tables(config, tables, history, source=str(interim_dir))


def materialize_location(
    config: ModelConfig,
    location: str,
    version: str | None = None,
    upsert: bool = False,
    as_of: datetime | None = None,
    progress: Progress | None = None,
) -> Materialized:
    """Raw CSV or parquet history tables (a folder, s3:// prefix or a scoring partition).

    Every table goes through batch scoring's row rules; rejected rows are kept with their
    reasons in reports/materialize/<model>/<time>/rejects.csv. With `upsert`, the entities are
    those of the entity table when the location holds it, else those with history rows.
    """
    from tabular_mlops import scoring

    say = progress or (lambda _m: None)
    history = version_history_sql(config, version)
    files = storage.list_files(location, config.data.aws_conn_id)
    if not files:
        raise OnlineStoreError(f"{location}: no table files (folder missing or empty)")
    wanted = history_tables(config, history)
    entity = config.scoring_entity_table
    with_entity = wanted + [entity] if upsert and scoring.find_file(config, entity, files) else wanted
    found = scoring.find_tables(config, location, files, with_entity)
    work = Path(tempfile.mkdtemp(prefix="mlops-materialize-"))
    try:
        inputs, typed = scoring.load_tables(config, location, found, work, say)
        rejected = sum(r.outcome.rows_quarantined for r in inputs)
        if rejected:
            kept = settings.reports_dir() / "materialize" / config.name / time.strftime("%Y%m%dT%H%M%S")
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / scoring.REJECTS, kept / scoring.REJECTS)
            say(f"{rejected:,} rows rejected, with reasons: {kept / scoring.REJECTS}")
        entities = _entity_keys(config, typed.pop(entity)) if entity in typed else None
        if upsert and entities is None:
            entities = []
        say(f"materialising {config.name} history features ({'upsert' if upsert else 'full'})")
        return materialize_tables(
            config, typed, history, source=location, as_of=as_of, upsert_entities=entities
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _entity_keys(config: ModelConfig, table: Path) -> list[str]:
    """The entity keys of a typed entity table, as the store's field names."""
    import pyarrow.parquet as pq

    column = pq.read_table(table, columns=[config.features.entity_key]).column(0)
    return [str(k) for k in column.to_pylist() if k is not None]


def skip_without_store(config: ModelConfig, reason: Exception) -> dict[str, Any]:
    """A pipeline task's answer when no store was configured and the default one is not running."""
    log.warning(
        "%s: no online store at %s (%s) and %s is not set: history features not materialised; "
        "id-only requests will get 503 until `mlops materialize` runs",
        config.name,
        online_store.redacted(online_store.store_url()),
        reason,
        online_store.URL_ENV,
    )
    return {"model": config.name, "skipped": f"online store unreachable and {online_store.URL_ENV} unset"}


def or_skip(config: ModelConfig, action: Callable[[], Materialized]) -> dict[str, Any]:
    """Run a pipeline's materialisation; a model without a history view, or no store where none
    was configured (a laptop without Redis), is a logged skip, never a failed run."""
    if not config.features.online:
        return {"model": config.name, "skipped": "no features.history_view: no online store"}
    try:
        return action().to_dict()
    except online_store.StoreUnavailable as exc:
        if online_store.url_configured():
            raise  # the deployment named a store and it is down: fail, Airflow retries
        return skip_without_store(config, exc)


def after_training(model: str, interim_dir: str, version: str | None) -> dict[str, Any]:
    """Task body: materialise over the run's interim tables with the candidate version's SQL."""
    from tabular_mlops.config import get_model_config

    config = get_model_config(model)
    if version is None:
        return {"model": model, "skipped": "dry run: no version, the online store is left alone"}
    return or_skip(config, lambda: materialize_interim(config, Path(interim_dir), version))


def after_scoring(model: str, input_location: str, version: str, day: str) -> dict[str, Any]:
    """Task body: upsert the partition's entities with the pinned version's SQL, as of the day's end."""
    from datetime import date, timedelta

    from tabular_mlops.config import get_model_config

    config = get_model_config(model)
    end = datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), UTC)
    return or_skip(
        config,
        lambda: materialize_location(
            config, input_location, version, upsert=True, as_of=end, progress=log.info
        ),
    )
