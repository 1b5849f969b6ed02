"""The data_ingest stage: read raw CSVs, set bad rows aside, validate, write typed interim tables.

Reads `<source>/<table file>` for every table of a model config (a local folder or s3:// prefix;
a model with one table also takes that table's CSV itself, a local file or an s3:// key ending in
.csv, whatever its name), loads each file with DuckDB through the row rules (`csv_load`), writes kept rows to
`data/interim/<model>/<run>/<table>.parquet`, rejected rows with their source line and reasons to
`data/quarantine/<model>/<run>/<table>.csv`, then runs the dataset-level GX suites batch by batch
over the typed table, with label and foreign-key indicators computed in DuckDB. The report
(`reports/validation/<model>/<run>/validation.json` and `summary.md`) is written in every case;
the interim folder is published only when no `error` expectation failed, so nothing downstream
can read the tables of a stopped run.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from tabular_mlops import settings, storage
from tabular_mlops.config import ModelConfig, TableSpec
from tabular_mlops.contract import rule_layers
from tabular_mlops.csv_load import connect, load_csv, read_header, repeated_columns, scan_file
from tabular_mlops.row_rules import ident, literal
from tabular_mlops.validation import (
    LABEL_INDICATOR,
    ExpectationOutcome,
    duplicate_keys_outcome,
    expectation_columns,
    fk_indicator,
    new_context,
    run_expectations,
)

BATCH_ROWS = 2_000_000  # rows per GX batch: bounded memory, few enough batches to keep GX overhead low
FK_EXAMPLES = 5
Progress = Callable[[str], None]

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext


class SourceMismatch(storage.StorageError):
    """A data location of the wrong kind for the model (a file for a model of several tables)."""


class IngestFailed(RuntimeError):
    """Validation stopped the run; the message lists each failed expectation, the report has all."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class TableReport:
    """What happened to one raw table."""

    table: str
    file: str
    found: bool = True
    source: str = ""  # the folder, prefix or file it was looked for in
    sha256: str | None = None
    rows_read: int = 0
    rows_quarantined: int = 0
    rows_written: int = 0
    quarantine_share: float = 0.0
    line_numbers: str = "exact"
    blank_to_null: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    quarantine_file: str | None = None


@dataclass
class IngestReport:
    """The whole validation report of one ingest run."""

    model: str
    run_id: str
    source: str
    started_at: str
    status: str = "running"  # passed | passed_with_warnings | failed
    finished_at: str | None = None
    duration_seconds: float | None = None
    max_quarantine_share: float = 0.0
    interim_dir: str | None = None
    quarantine_dir: str | None = None
    report_dir: str | None = None
    tables: dict[str, TableReport] = field(default_factory=dict)
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)  # every rule and the layer enforcing it

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """Failed error-level expectations: any one of them stops the run."""
        return [e for e in self.expectations if not e.success and e.severity == "error"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed warn-level expectations: reported, not blocking."""
        return [e for e in self.expectations if not e.success and e.severity == "warn"]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the report."""
        data = asdict(self)
        data["failures"] = [e.describe() for e in self.failures]
        data["warning_messages"] = [e.describe() for e in self.warnings]
        return data


def safe_run_id(run_id: str) -> str:
    """A folder-safe form of an Airflow run id or timestamp."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return cleaned


def default_run_id() -> str:
    """A run id for shell runs: the UTC time to the second."""
    return datetime.now(UTC).strftime("cli_%Y%m%dT%H%M%S")


def expected_files(config: ModelConfig) -> str:
    """What a data location must hold for the model, in words an error message can end with."""
    files = [spec.file for spec in config.data.tables.values()]
    if len(files) == 1:
        return f"{config.name} reads one table: a folder holding {files[0]}, or a .csv file of that table"
    return f"{config.name} reads {len(files)} tables from one folder: {', '.join(files)}"


def is_single_file(location: str) -> bool:
    """True when a location names one CSV: an existing local file, or an s3:// key ending in .csv."""
    if storage.is_s3(location):
        return location.lower().endswith(".csv")
    return Path(location).is_file()


def split_file(location: str) -> tuple[str, str]:
    """(folder or s3:// prefix, file name) of a single-file location."""
    if storage.is_s3(location):
        parent, _, name = location.rpartition("/")
        return parent, name
    path = Path(location)
    return str(path.parent), path.name


def single_file_source(model: str, location: str, files: list[str]) -> tuple[str, str]:
    """(folder or prefix, file name) of a CSV given for the one table in `files`.

    SourceMismatch names the files when the model reads several (they must come as one folder).
    """
    if len(files) != 1:
        raise SourceMismatch(
            f"{location} is a single file, but {model} reads {len(files)} tables from one folder: "
            f"{', '.join(files)}; give the folder that holds them"
        )
    return split_file(location)


def stage_source(
    config: ModelConfig, location: str, workdir: Path, progress: Progress | None = None
) -> dict[str, Path | None]:
    """Local paths of every table's file (keyed by its configured name; None when not found).

    A folder or prefix is read by the configured file names; a single CSV stands for the one table
    of a single-table model under any name. StorageError names what was expected and where.
    """
    say = progress or (lambda _message: None)
    files = [spec.file for spec in config.data.tables.values()]
    conn = config.data.aws_conn_id
    if is_single_file(location):
        folder, name = single_file_source(config.name, location, files)
        say(f"reading {location}")
        staged = storage.stage_files(folder, [name], conn, workdir)[name]
        if staged is None:
            raise storage.StorageError(f"{location}: no such file; {expected_files(config)}")
        return {files[0]: staged}
    if not storage.is_s3(location) and not Path(location).is_dir():
        raise storage.StorageError(
            f"{location}: data folder does not exist (no file or folder by that name); "
            f"{expected_files(config)}"
        )
    say(f"reading {len(files)} table(s) from {location}")
    return storage.stage_files(location, files, conn, workdir)


def _missing_files_hint(config: ModelConfig, location: str, report: IngestReport) -> str:
    """A line naming the files that were expected and what the location holds instead ('' if none)."""
    missing = [t.file for t in report.tables.values() if not t.found]
    if not missing:
        return ""
    try:
        present = storage.list_files(location, config.data.aws_conn_id)
    except Exception:  # noqa: BLE001 - a hint only; the failure itself is already reported
        present = []
    shown = ", ".join(present[:8]) + (f" and {len(present) - 8} more" if len(present) > 8 else "")
    hint = f"\n  {location}: {', '.join(missing)} not found there; {expected_files(config)}"
    hint += f"; the location holds: {shown}" if present else "; the location holds no files"
    csvs = [name for name in present if name.lower().endswith(".csv")]
    if len(config.data.tables) == 1 and len(csvs) == 1:
        hint += f" (a single table may also be given as its CSV file: {storage.join(location, csvs[0])})"
    return hint


def _table_order(config: ModelConfig) -> list[str]:
    """Tables with their foreign-key parents first, otherwise in config order."""
    tables = config.data.tables
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"{config.source_file}: data.tables: foreign keys form a cycle through {name!r}")
        visiting.add(name)
        for fk in tables[name].foreign_keys:
            for ref in fk.references:
                parent = ref.split(".")[0]
                if parent != name:
                    visit(parent)
        visiting.discard(name)
        order.append(name)

    for name in tables:
        visit(name)
    return order


def _ingest_table(
    name: str, spec: TableSpec, path: Path, source_label: str, staging: Path, quarantine_path: Path
) -> TableReport:
    """Load one CSV through the row rules into a typed parquet file and a quarantine file."""
    scan = scan_file(path)
    report = TableReport(table=name, file=spec.file, sha256=scan.sha256, source=source_label)
    header = read_header(path)
    if not any(header):  # 0 bytes, blank lines or a BOM: there is nothing to read columns by
        raise ValueError(f"{source_label}: the file has no header line")
    duplicated = repeated_columns(header)
    if duplicated:
        raise ValueError(f"{source_label}: header repeats column(s) {duplicated}")
    report.missing_columns = [c for c in spec.columns if c not in header]
    report.extra_columns = [c for c in header if c not in spec.columns]
    try:
        loaded = load_csv(
            path,
            spec,
            header,
            scan,
            source_label,
            staging / f"{name}.parquet",
            quarantine_path,
            staging / "_duckdb_tmp",
        )
    except duckdb.InvalidInputException as exc:  # a compressed or binary file: bad data, not a crash
        raise ValueError(f"{source_label}: not readable as CSV: {str(exc).splitlines()[0]}") from exc
    report.rows_read, report.rows_written = loaded.rows_read, loaded.rows_written
    report.rows_quarantined = loaded.rows_quarantined
    report.quarantine_share = loaded.rows_quarantined / loaded.rows_read if loaded.rows_read else 0.0
    report.quarantine_reasons = dict(sorted(loaded.quarantine_reasons.items(), key=lambda kv: -kv[1]))
    report.blank_to_null, report.warnings = loaded.blank_to_null, loaded.warnings
    report.line_numbers = loaded.line_numbers
    report.quarantine_file = str(quarantine_path) if loaded.rows_quarantined else None
    return report


def _table_level_outcomes(name: str, report: TableReport, max_share: float) -> list[ExpectationOutcome]:
    """Checks that come from reading the file itself: present, and few enough rows set aside."""
    if not report.found:
        return [
            ExpectationOutcome(
                name,
                "expect_table_file_to_exist",
                None,
                "error",
                False,
                detail=f"file {report.file} not found in the source ({report.source})",
            )
        ]
    outcomes = [
        ExpectationOutcome(
            name,
            "expect_quarantined_share_to_be_at_most",
            None,
            "error",
            report.quarantine_share <= max_share,
            observed=round(report.quarantine_share, 6),
            unexpected_count=report.rows_quarantined,
            unexpected_percent=100 * report.quarantine_share,
            examples=list(report.quarantine_reasons)[:FK_EXAMPLES],
            detail=f"{report.rows_quarantined} of {report.rows_read} rows set aside, at most "
            f"{max_share:.2%} allowed",
        )
    ]
    if report.extra_columns:
        outcomes.append(
            ExpectationOutcome(
                name,
                "expect_no_undeclared_columns",
                None,
                "warn",
                False,
                examples=report.extra_columns[:FK_EXAMPLES],
                detail=f"{len(report.extra_columns)} column(s) not in the config were dropped",
            )
        )
    return outcomes


def _empty_table_outcomes(name: str, report: TableReport, spec: TableSpec) -> list[ExpectationOutcome]:
    """A warning for a table with no rows that `min_rows: 0` accepts (below min_rows the suite refuses)."""
    if not report.found or report.rows_written or spec.min_rows:
        return []
    read = "header only" if report.rows_read == 0 else f"none of {report.rows_read:,} rows kept"
    return [
        ExpectationOutcome(
            name,
            "expect_table_not_empty",
            None,
            "warn",
            False,
            detail=f"0 rows ({read}); min_rows: 0 accepts it, so every feature from this table is null",
        )
    ]


def _checked_view(
    con: duckdb.DuckDBPyConnection, name: str, spec: TableSpec, staging: Path, written: set[str]
) -> dict[str, list[Any]]:
    """Create view `checked`: the typed table plus the label and foreign-key indicators the suite checks.

    Returns a few unresolved values per foreign key, for the report.
    """
    parquet = staging / f"{name}.parquet"
    columns = set(pq.read_schema(parquet).names) if parquet.exists() else set()
    extra: list[str] = []
    fk_conditions: dict[str, str] = {}
    if spec.label is not None and spec.label.column in columns:
        label = ident(spec.label.column)
        extra.append(
            f"CASE WHEN {label} IS NULL THEN NULL ELSE CAST(CAST({label} AS VARCHAR) = "
            f"{literal(str(spec.label.positive))} AS DOUBLE) END AS {ident(LABEL_INDICATOR)}"
        )
    for fk in spec.foreign_keys:
        if not fk.enabled or fk.column not in columns:  # min_share: 0 looks nothing up
            continue
        parents = [
            f"SELECT {ident(ref.split('.')[1])} AS k FROM {ident(ref.split('.')[0])}"  # noqa: S608 - ident()-quoted config names
            for ref in fk.references
            if ref.split(".")[0] in written
        ]
        known = " UNION ALL ".join(parents) if parents else "SELECT NULL AS k WHERE false"
        condition = f"({ident(fk.column)} IS NULL OR {ident(fk.column)} IN ({known}))"
        fk_conditions[fk.column] = condition
        extra.append(f"{condition} AS {ident(fk_indicator(fk.column))}")
    if parquet.exists():
        # Bound through the relation API: the view reads the staged file, no path enters SQL text.
        con.read_parquet(str(parquet)).create_view(name)
        con.execute(
            f"CREATE OR REPLACE VIEW checked AS SELECT *{''.join(', ' + e for e in extra)} FROM {ident(name)}"  # noqa: S608 - ident()/literal() quoted
        )
    examples: dict[str, list[Any]] = {}
    for column, condition in fk_conditions.items():
        rows = con.execute(
            f"SELECT DISTINCT {ident(column)} FROM checked WHERE NOT {condition} LIMIT {FK_EXAMPLES}"  # noqa: S608 - quoted names, int constant
        ).fetchall()
        examples[column] = [row[0] for row in rows]
    return examples


def _batches(con: duckdb.DuckDBPyConnection, has_table: bool, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The `checked` view's `columns` in batches of BATCH_ROWS rows; one empty frame for no rows.

    With no column to read, the first one is read so that the batches still count the rows.
    """
    if not has_table:
        yield pd.DataFrame(columns=columns)
        return
    selected = ", ".join(ident(c) for c in columns) or "*"
    relation = con.sql(f"SELECT {selected} FROM checked")  # noqa: S608 - ident()-quoted column names
    if not columns:
        relation = relation.select(ident(relation.columns[0]))
    reader = relation.to_arrow_reader(BATCH_ROWS)
    empty = True
    for batch in reader:
        empty = False
        yield batch.to_pandas()
    if empty:
        yield reader.schema.empty_table().to_pandas()


def _summary_markdown(report: IngestReport) -> str:
    lines = [
        f"# Validation of {report.model}, run {report.run_id}: {report.status.upper()}",
        "",
        f"Source: `{report.source}`  ",
        f"Quarantine allowed per table: {report.max_quarantine_share:.2%}",
        "",
        "| table | rows read | set aside | share | written | blanks to null |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in report.tables.values():
        if not t.found:
            lines.append(f"| {t.table} | file {t.file} not found | | | | |")
            continue
        blanks = ", ".join(f"{c}: {n}" for c, n in t.blank_to_null.items()) or "-"
        lines.append(
            f"| {t.table} | {t.rows_read:,} | {t.rows_quarantined:,} | {t.quarantine_share:.3%} | "
            f"{t.rows_written:,} | {blanks} |"
        )
    if report.failures:
        lines += ["", "## Failed (run stopped)", *[f"- {e.describe()}" for e in report.failures]]
    if report.warnings:
        lines += ["", "## Warnings", *[f"- {e.describe()}" for e in report.warnings]]
    disabled = [e for e in report.expectations if e.disabled]
    if disabled:
        lines += ["", "## Disabled by the config", *[f"- {e.describe()}" for e in disabled]]
    lines += _layers_markdown(report)
    reasons = [(t.table, r, n) for t in report.tables.values() for r, n in t.quarantine_reasons.items()]
    if reasons:
        lines += ["", "## Rows set aside, by reason", *[f"- {t}: {r}: {n}" for t, r, n in reasons]]
        lines += ["", "Quarantine files (source line, reasons, raw row):"]
        lines += [f"- `{t.quarantine_file}`" for t in report.tables.values() if t.quarantine_file]
    return "\n".join(lines) + "\n"


def _layers_markdown(report: IngestReport) -> list[str]:
    """How many rules each layer enforces per table; validation.json lists every rule."""
    layers = ("row_rules", "great_expectations", "duckdb")
    counts: dict[str, dict[str, int]] = {}
    for rule in report.rules:
        per_table = counts.setdefault(rule["table"], dict.fromkeys(layers, 0))
        per_table[rule["layer"]] += 1
    lines = [
        "",
        "## Rules by the layer that enforces them",
        "",
        "Row rules quarantine a breaking row; Great Expectations judges the table's shape, label rate, "
        "foreign keys and the `warn` rules that keep their rows; DuckDB checks key uniqueness. "
        "Each rule is listed with its layer under `rules` in validation.json.",
        "",
        "| table | row rules | Great Expectations | DuckDB |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {t} | {c['row_rules']} | {c['great_expectations']} | {c['duckdb']} |" for t, c in counts.items()
    ]
    return lines


def _write_report(report: IngestReport, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (report_dir / "summary.md").write_text(_summary_markdown(report))


@dataclass(frozen=True)
class _RunPaths:
    """Where one ingest run stages, publishes, quarantines and reports."""

    location: str
    staging: Path
    interim: Path
    quarantine: Path
    reports: Path


def ingest_raw_tables(
    config: ModelConfig,
    source: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Validate every raw table of a model and publish typed interim tables; raise IngestFailed on stop."""
    say = progress or (lambda _message: None)
    started = time.monotonic()
    report, paths = _start_run(config, source, run_id)
    try:
        _validate_tables(config, report, paths, say)
        report.status = (
            "failed" if report.failures else ("passed_with_warnings" if report.warnings else "passed")
        )
        if not report.failures:
            _publish(config, report, paths)
    finally:
        if paths.staging.exists():
            shutil.rmtree(paths.staging, ignore_errors=True)
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.duration_seconds = round(time.monotonic() - started, 3)
        if report.status == "running":  # an exception escaped: the run did not finish
            report.status = "failed"
        _write_report(report, paths.reports)
    if report.failures:
        listed = "\n".join(f"  - {e.describe()}" for e in report.failures)
        raise IngestFailed(
            f"validation of {config.name} stopped the run ({len(report.failures)} failed expectation(s)); "
            f"report: {paths.reports / 'summary.md'}\n{listed}"
            f"{_missing_files_hint(config, paths.location, report)}",
            report,
        )
    return report


def _start_run(config: ModelConfig, source: str | None, run_id: str | None) -> tuple[IngestReport, _RunPaths]:
    """The empty report of a new run and its folders; a private staging folder is created."""
    run = safe_run_id(run_id or default_run_id())
    location = settings.resolve_location(source or config.data.source)
    interim = settings.data_dir() / "interim" / config.name / run
    interim.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run}.", dir=interim.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published folder is read by other users
    paths = _RunPaths(
        location=location,
        staging=staging,
        interim=interim,
        quarantine=settings.data_dir() / "quarantine" / config.name / run,
        reports=settings.reports_dir() / "validation" / config.name / run,
    )
    shutil.rmtree(paths.quarantine, ignore_errors=True)  # a re-run replaces, never appends
    report = IngestReport(
        model=config.name,
        run_id=run,
        source=location,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_quarantine_share=config.data.max_quarantine_share,
        quarantine_dir=str(paths.quarantine),
        report_dir=str(paths.reports),
        rules=[asdict(rule) for rule in rule_layers(config)],
    )
    return report, paths


def _validate_tables(config: ModelConfig, report: IngestReport, paths: _RunPaths, say: Progress) -> None:
    """Read every table through the row rules and its suites, parents before children."""
    staged = stage_source(config, paths.location, paths.staging / "_raw", say)
    single = is_single_file(paths.location)
    context = new_context()
    written: set[str] = set()
    con = connect(paths.staging / "_duckdb_tmp")
    try:
        for name in _table_order(config):
            spec = config.data.tables[name]
            label = paths.location if single else f"{paths.location.rstrip('/')}/{spec.file}"
            path = staged[spec.file]
            if path is None:
                report.tables[name] = TableReport(
                    table=name, file=spec.file, found=False, source=paths.location
                )
                report.expectations += _table_level_outcomes(
                    name, report.tables[name], config.data.max_quarantine_share
                )
                say(f"{name}: {label} not found")
                continue
            table_report = _read_table(name, spec, path, label, paths, say)
            report.tables[name] = table_report
            report.expectations += _table_level_outcomes(name, table_report, config.data.max_quarantine_share)
            for empty in _empty_table_outcomes(name, table_report, spec):
                report.expectations.append(empty)
                say(f"{name}: {empty.describe()}")
            report.expectations += _run_suites(
                con, context, name, spec, table_report, paths.staging, written, say
            )
    finally:
        con.close()
    shutil.rmtree(paths.staging / "_raw", ignore_errors=True)
    shutil.rmtree(paths.staging / "_duckdb_tmp", ignore_errors=True)


def _read_table(
    name: str, spec: TableSpec, path: Path, label: str, paths: _RunPaths, say: Progress
) -> TableReport:
    """One table through the row rules, with a progress line before and after."""
    say(f"{name}: reading {label} with the row rules")
    table_report = _ingest_table(name, spec, path, label, paths.staging, paths.quarantine / f"{name}.csv")
    say(f"{name}: {table_report.rows_read:,} rows read, {table_report.rows_quarantined:,} set aside")
    return table_report


def _run_suites(
    con: duckdb.DuckDBPyConnection,
    context: AbstractDataContext,
    name: str,
    spec: TableSpec,
    table_report: TableReport,
    staging: Path,
    written: set[str],
    say: Progress,
) -> list[ExpectationOutcome]:
    """The GX suites of one typed table and its key-uniqueness check; `written` gains the table."""
    has_table = (staging / f"{name}.parquet").exists()
    fk_examples = _checked_view(con, name, spec, staging, written)
    if has_table:
        written.add(name)
    present = {c for c in spec.columns if c not in table_report.missing_columns}
    columns = expectation_columns(spec, present)
    say(
        f"{name}: Great Expectations on the presence of {len(spec.columns)} columns, values of {len(columns)}"
    )
    outcomes = run_expectations(context, name, spec, present, _batches(con, has_table, columns), fk_examples)
    keys = spec.primary_key
    if keys and has_table and not set(keys) & set(table_report.missing_columns):
        outcomes.append(duplicate_keys_outcome(con, "checked", name, keys))
    return outcomes


def _publish(config: ModelConfig, report: IngestReport, paths: _RunPaths) -> None:
    """Write the manifest and move the staged tables to the run's interim folder in one step."""
    manifest = {
        "model": config.name,
        "run_id": report.run_id,
        "source": paths.location,
        "tables": {
            n: {"file": f"{n}.parquet", "rows": t.rows_written, "source_sha256": t.sha256}
            for n, t in report.tables.items()
        },
    }
    (paths.staging / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    storage.publish_folder(paths.staging, paths.interim)
    report.interim_dir = str(paths.interim)


def run_data_ingest(model: str, source: str | None, run_id: str) -> str:
    """Airflow task body of data_ingest: validate one model's raw tables; return the interim folder.

    A validation stop, or a file given for a model of several tables, fails the task without
    retries (neither fixes itself); storage and other errors propagate and get the configured retries.
    """
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from tabular_mlops.config import get_model_config

    log = logging.getLogger(__name__)
    try:
        report = ingest_raw_tables(get_model_config(model), source=source, run_id=run_id, progress=log.info)
    except (IngestFailed, SourceMismatch) as exc:
        raise AirflowFailException(str(exc)) from exc
    for warning in report.warnings:
        log.warning("%s", warning.describe())
    log.info("validation %s: %s", report.status, Path(report.report_dir or "") / "summary.md")
    return str(report.interim_dir)
