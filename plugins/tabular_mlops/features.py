"""The feature_build stage: a model's SQL files in include/sql/<model>/ run by DuckDB over its tables.

Tables are bound as DuckDB views by name through the relation API (no path or user value is ever
pasted into SQL). Every `.sql` file holds one select and becomes a view named after the file; the
files run in dependency order (a file runs after every file whose name it mentions), and the view
`features` is the result: one row per entity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_mlops.config import ModelConfig

FINAL_VIEW = "features"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FeatureBuildError(RuntimeError):
    """The feature SQL could not run; the message names the file and DuckDB's reason."""


def read_sql_folder(folder: Path) -> dict[str, str]:
    """The SQL files of a folder as {view name: select text}, in the order they must run."""
    files = sorted(Path(folder).glob("*.sql"))
    if not files:
        raise FeatureBuildError(f"{folder}: no .sql files")
    texts: dict[str, str] = {}
    for path in files:
        if not _IDENTIFIER.match(path.stem):
            raise FeatureBuildError(f"{path}: the file name must be a plain identifier (it becomes a view)")
        texts[path.stem] = path.read_text().strip().rstrip(";")
    if FINAL_VIEW not in texts:
        raise FeatureBuildError(f"{folder}: {FINAL_VIEW}.sql (the final feature query) is missing")
    return _dependency_order(texts)


def mentioned(sql: str, names: Iterable[str]) -> set[str]:
    """The names a SQL text reads: comments do not count (a file may say "feeds features")."""
    code = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)
    return {name for name in names if re.search(rf"\b{name}\b", code)}


def _dependency_order(texts: dict[str, str]) -> dict[str, str]:
    """Order views so each runs after the views it mentions; stable by name otherwise."""
    mentions = {name: mentioned(sql, set(texts) - {name}) for name, sql in texts.items()}
    ordered: dict[str, str] = {}
    while len(ordered) < len(texts):
        ready = sorted(n for n in texts if n not in ordered and mentions[n] <= set(ordered))
        if not ready:
            stuck = sorted(set(texts) - set(ordered))
            raise FeatureBuildError(f"feature SQL files refer to each other in a cycle: {stuck}")
        for name in ready:
            ordered[name] = texts[name]
    return ordered


def view_closure(sql: dict[str, str], view: str) -> dict[str, str]:
    """The views `view` needs (itself last), in run order: one part of the feature SQL on its own.

    The online store runs the history part over the history tables alone, and serving runs the
    application part over the request's record alone, with the very text of the full SQL."""
    if view not in sql:
        raise FeatureBuildError(f"{view}.sql is missing from the feature SQL ({', '.join(sql)})")
    needed, todo = {view}, [view]
    while todo:
        found = mentioned(sql[todo.pop()], set(sql) - needed)
        needed |= found
        todo.extend(found)
    return {name: text for name, text in sql.items() if name in needed}


def run_feature_sql(con: Any, sql: dict[str, str], final: str = FINAL_VIEW) -> Any:
    """Create every view in order on an open DuckDB connection; return the `final` view's relation."""
    import duckdb

    for name, text in sql.items():
        try:
            con.execute(f"create or replace view {name} as {text}")  # name: checked identifier
        except duckdb.Error as exc:
            raise FeatureBuildError(f"{name}.sql: {exc}") from exc
    try:
        return con.sql(f"select * from {final}")  # noqa: S608 - a view name of the checked SQL
    except duckdb.Error as exc:
        raise FeatureBuildError(f"{final}.sql: {exc}") from exc


def bind_frames(con: Any, frames: dict[str, Any]) -> None:
    """Register in-memory pandas frames as views under their table names."""
    for name, frame in frames.items():
        con.register(name, frame)


def bind_parquet(con: Any, tables: dict[str, Path]) -> None:
    """Bind typed parquet tables as views under their table names."""
    for name, path in tables.items():
        con.read_parquet(str(path)).create_view(name, replace=True)


def features_from_frames(sql: dict[str, str], frames: dict[str, Any]) -> Any:
    """Run the feature SQL over in-memory frames (used inside the logged model); return pandas."""
    import duckdb

    with duckdb.connect() as con:
        bind_frames(con, frames)
        return run_feature_sql(con, sql).df()


class FeatureSession:
    """One DuckDB connection with the feature views created once, for many small requests.

    Opening a connection and planning the views costs about 25 ms; re-registering the request's
    frames on a prepared session and selecting from `features` costs about 5 ms. Not thread-safe:
    keep one per thread.
    """

    def __init__(self, sql: dict[str, str], frames: dict[str, Any], final: str = FINAL_VIEW) -> None:
        import duckdb

        self.final = final
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        bind_frames(self.con, frames)  # the views bind to these names; later frames replace them
        run_feature_sql(self.con, sql, final)

    def run(self, frames: dict[str, Any]) -> Any:
        """The final view over these frames, as pandas."""
        bind_frames(self.con, frames)
        return self.con.sql(f"select * from {self.final}").df()  # noqa: S608 - a checked view name


@dataclass
class FeatureBuild:
    """Where the feature table landed and what it holds."""

    path: Path
    columns_path: Path
    rows: int
    columns: list[str]
    seconds: float


def build_feature_table(config: ModelConfig, interim_dir: Path, out_dir: Path) -> FeatureBuild:
    """Run the model's SQL over its interim parquet tables; write features.parquet and the column list."""
    import time

    import duckdb
    import pyarrow.parquet as pq

    started = time.perf_counter()
    interim_dir = Path(interim_dir)
    tables = {name: interim_dir / f"{name}.parquet" for name in config.data.tables}
    missing = [str(p) for p in tables.values() if not p.is_file()]
    if missing:
        raise FeatureBuildError(f"interim tables missing (run data_ingest first): {', '.join(missing)}")
    sql = read_sql_folder(config.sql_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "features.parquet"
    tmp = target.with_name(".features.parquet.tmp")
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # it floods task logs
        con.execute("set preserve_insertion_order = false")
        bind_parquet(con, tables)
        relation = run_feature_sql(con, sql)
        columns = list(relation.columns)
        key = config.features.entity_key
        if key not in columns:
            raise FeatureBuildError(f"{FINAL_VIEW}.sql must select the entity key {key!r}")
        arrow = relation.to_arrow_table()
    duplicated = arrow.column(key).to_pandas().duplicated()
    if duplicated.any():
        raise FeatureBuildError(f"{FINAL_VIEW}.sql returns {int(duplicated.sum())} duplicate {key} value(s)")
    pq.write_table(arrow, tmp)
    tmp.replace(target)
    columns_path = out_dir / "feature_columns.json"
    feature_columns = [c for c in columns if c != key]
    columns_path.write_text(json.dumps(feature_columns, indent=1))
    return FeatureBuild(target, columns_path, arrow.num_rows, feature_columns, time.perf_counter() - started)
