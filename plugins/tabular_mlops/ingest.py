"""The data_ingest stage: read raw CSVs, set bad rows aside, validate, write typed interim tables.

Reads `<source>/<table file>` for every table of a model config (a local folder or s3:// prefix),
streams each file in chunks through the row rules, writes kept rows to
`data/interim/<model>/<run>/<table>.parquet`, rejected rows with their source line and reasons to
`data/quarantine/<model>/<run>/<table>.csv`, then runs the dataset-level GX suites. The report
(`reports/validation/<model>/<run>/validation.json` and `summary.md`) is written in every case;
the interim folder is published only when no `error` expectation failed, so nothing downstream
can read the tables of a stopped run.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tabular_mlops import settings, storage
from tabular_mlops.config import ModelConfig, TableSpec
from tabular_mlops.row_rules import apply_row_rules
from tabular_mlops.validation import (
    LABEL_INDICATOR,
    ExpectationOutcome,
    fk_indicator,
    new_context,
    run_expectations,
)

CHUNK_ROWS = 100_000
FK_EXAMPLES = 5
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "category": pa.string(), "string": pa.string()}
Progress = Callable[[str], None]


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
    sha256: str | None = None
    rows_read: int = 0
    rows_quarantined: int = 0
    rows_written: int = 0
    quarantine_share: float = 0.0
    blank_lines_skipped: int = 0
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


def _read_chunks(
    path: Path, width: int, chunk_rows: int, report: TableReport, quarantine: _QuarantineWriter
) -> Iterator[tuple[list[list[str]], list[int]]]:
    """Yield (rows, first source line of each row); rows with the wrong field count go to quarantine."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader)  # header, checked by the caller
        rows: list[list[str]] = []
        lines: list[int] = []
        previous_end = reader.line_num
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not row:  # an empty line, often the file's last: carries no record
                report.blank_lines_skipped += 1
                continue
            report.rows_read += 1
            if len(row) != width:
                reason = f"expected {width} fields, found {len(row)}"
                quarantine.write(start, f"row: {reason}", row)
                report.quarantine_reasons["row: wrong number of fields"] = (
                    report.quarantine_reasons.get("row: wrong number of fields", 0) + 1
                )
                continue
            rows.append(row)
            lines.append(start)
            if len(rows) >= chunk_rows:
                yield rows, lines
                rows, lines = [], []
        if rows:
            yield rows, lines


class _QuarantineWriter:
    """Appends rejected rows with their source line and reasons; opens the file on first use."""

    def __init__(self, path: Path, source_file: str) -> None:
        self.path = path
        self.source_file = source_file
        self._handle: Any = None
        self._writer: Any = None
        self.count = 0

    def write(self, line: int, reasons: str, row: list[str]) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["source_file", "line", "reasons", "raw_row"])
        raw = _as_csv_line(row)
        self._writer.writerow([self.source_file, line, reasons, raw])
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _as_csv_line(row: list[str]) -> str:
    buffer: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            buffer.append(text)

    csv.writer(_Sink(), lineterminator="").writerow(row)
    return "".join(buffer)


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next(csv.reader(handle), [])


def _arrow_schema(spec: TableSpec, present: list[str]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[spec.columns[name].type]) for name in present])


def _ingest_table(
    name: str,
    spec: TableSpec,
    path: Path,
    source_label: str,
    out_path: Path,
    quarantine_path: Path,
    chunk_rows: int,
    progress: Progress,
) -> TableReport:
    """Stream one CSV through the row rules into a parquet file and a quarantine file."""
    report = TableReport(table=name, file=spec.file, sha256=storage.fingerprint(path))
    header = [h.strip() for h in _header(path)]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ValueError(f"{source_label}: header repeats column(s) {duplicated}")
    report.missing_columns = [c for c in spec.columns if c not in header]
    report.extra_columns = [c for c in header if c not in spec.columns]
    present = [c for c in spec.columns if c in header]
    schema = _arrow_schema(spec, present)
    quarantine = _QuarantineWriter(quarantine_path, source_label)
    writer = pq.ParquetWriter(out_path, schema)
    reasons: Counter[str] = Counter()
    blank_to_null: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    try:
        for rows, lines in _read_chunks(path, len(header), chunk_rows, report, quarantine):
            chunk = pd.DataFrame(rows, columns=header, dtype=object)[present]
            outcome = apply_row_rules(chunk, spec)
            for position, text in outcome.rejected_reasons.items():
                quarantine.write(lines[position], text, rows[position])
            reasons.update(outcome.reason_counts)
            blank_to_null.update(outcome.blank_to_null)
            warnings.update(outcome.warnings)
            writer.write_table(pa.Table.from_pandas(outcome.typed, schema=schema, preserve_index=False))
            report.rows_written += len(outcome.typed)
            progress(f"{name}: {report.rows_read:,} rows read, {quarantine.count:,} set aside")
    finally:
        writer.close()
        quarantine.close()
    report.rows_quarantined = quarantine.count
    report.quarantine_share = quarantine.count / report.rows_read if report.rows_read else 0.0
    reasons.update(report.quarantine_reasons)
    report.quarantine_reasons = dict(reasons.most_common())
    report.blank_to_null = dict(blank_to_null)
    report.warnings = dict(warnings)
    report.quarantine_file = str(quarantine_path) if quarantine.count else None
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
                detail=f"file {report.file} not found in the source",
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


def _with_indicators(
    spec: TableSpec, frame: pd.DataFrame, parent_keys: dict[str, pd.Index]
) -> tuple[pd.DataFrame, dict[str, list[Any]]]:
    """Add the derived label and foreign-key columns the suite checks; collect unresolved examples."""
    extra: dict[str, pd.Series] = {}
    examples: dict[str, list[Any]] = {}
    if spec.label is not None and spec.label.column in frame:
        label = frame[spec.label.column].astype("string")
        extra[LABEL_INDICATOR] = (label == str(spec.label.positive)).astype(float).where(label.notna())
    for fk in spec.foreign_keys:
        if fk.column not in frame:
            continue
        parents = [parent_keys[ref] for ref in fk.references if ref in parent_keys]
        known = parents[0].append(parents[1:]) if parents else pd.Index([])
        values = frame[fk.column]
        resolves = values.isin(known) | values.isna()
        extra[fk_indicator(fk.column)] = resolves
        examples[fk.column] = [
            storage_value(v) for v in values[~resolves].drop_duplicates().head(FK_EXAMPLES)
        ]
    return (frame.assign(**extra) if extra else frame), examples


def storage_value(value: Any) -> Any:
    """A JSON-safe scalar for reports."""
    return value.item() if hasattr(value, "item") else value


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
    reasons = [(t.table, r, n) for t in report.tables.values() for r, n in t.quarantine_reasons.items()]
    if reasons:
        lines += ["", "## Rows set aside, by reason", *[f"- {t}: {r}: {n}" for t, r, n in reasons]]
        lines += ["", "Quarantine files (source line, reasons, raw row):"]
        lines += [f"- `{t.quarantine_file}`" for t in report.tables.values() if t.quarantine_file]
    return "\n".join(lines) + "\n"


def _write_report(report: IngestReport, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (report_dir / "summary.md").write_text(_summary_markdown(report))


def ingest_raw_tables(
    config: ModelConfig,
    source: str | None = None,
    run_id: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> IngestReport:
    """Validate every raw table of a model and publish typed interim tables; raise IngestFailed on stop."""
    say = progress or (lambda _message: None)
    run = safe_run_id(run_id or default_run_id())
    location = settings.resolve_location(source or config.data.source)
    started = time.monotonic()
    report = IngestReport(
        model=config.name,
        run_id=run,
        source=location,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_quarantine_share=config.data.max_quarantine_share,
    )
    interim_final = settings.data_dir() / "interim" / config.name / run
    quarantine_dir = settings.data_dir() / "quarantine" / config.name / run
    report_dir = settings.reports_dir() / "validation" / config.name / run
    report.quarantine_dir, report.report_dir = str(quarantine_dir), str(report_dir)
    interim_final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(quarantine_dir, ignore_errors=True)  # a re-run replaces, never appends

    staging = Path(tempfile.mkdtemp(prefix=f".{run}.", dir=interim_final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published folder is read by other users
    try:
        files = {name: spec.file for name, spec in config.data.tables.items()}
        say(f"reading {len(files)} table(s) from {location}")
        staged = storage.stage_files(
            location, list(files.values()), config.data.aws_conn_id, staging / "_raw"
        )
        context = new_context()
        parent_keys: dict[str, pd.Index] = {}
        referenced = {
            ref for spec in config.data.tables.values() for fk in spec.foreign_keys for ref in fk.references
        }
        for name in _table_order(config):
            spec = config.data.tables[name]
            path = staged[spec.file]
            label = f"{location.rstrip('/')}/{spec.file}"
            if path is None:
                table_report = TableReport(table=name, file=spec.file, found=False)
                report.tables[name] = table_report
                report.expectations += _table_level_outcomes(
                    name, table_report, config.data.max_quarantine_share
                )
                say(f"{name}: {label} not found")
                continue
            table_report = _ingest_table(
                name,
                spec,
                path,
                label,
                staging / f"{name}.parquet",
                quarantine_dir / f"{name}.csv",
                chunk_rows,
                say,
            )
            report.tables[name] = table_report
            report.expectations += _table_level_outcomes(name, table_report, config.data.max_quarantine_share)
            frame = pd.read_parquet(staging / f"{name}.parquet")
            for ref in referenced:
                ref_table, ref_column = ref.split(".")
                if ref_table == name and ref_column in frame:
                    parent_keys[ref] = pd.Index(frame[ref_column].dropna().unique())
            checked, fk_examples = _with_indicators(spec, frame, parent_keys)
            say(f"{name}: running {len(spec.columns)} column suites with Great Expectations")
            report.expectations += run_expectations(context, name, spec, checked, fk_examples)
            del frame, checked
        shutil.rmtree(staging / "_raw", ignore_errors=True)
        report.status = (
            "failed" if report.failures else ("passed_with_warnings" if report.warnings else "passed")
        )
        if not report.failures:
            manifest = {
                "model": config.name,
                "run_id": run,
                "source": location,
                "tables": {
                    n: {"file": f"{n}.parquet", "rows": t.rows_written, "source_sha256": t.sha256}
                    for n, t in report.tables.items()
                },
            }
            (staging / "_manifest.json").write_text(json.dumps(manifest, indent=2))
            storage.publish_folder(staging, interim_final)
            report.interim_dir = str(interim_final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.duration_seconds = round(time.monotonic() - started, 3)
        if report.status == "running":  # an exception escaped: the run did not finish
            report.status = "failed"
        _write_report(report, report_dir)
    if report.failures:
        listed = "\n".join(f"  - {e.describe()}" for e in report.failures)
        raise IngestFailed(
            f"validation of {config.name} stopped the run ({len(report.failures)} failed expectation(s)); "
            f"report: {report_dir / 'summary.md'}\n{listed}",
            report,
        )
    return report


def run_data_ingest(model: str, source: str | None, run_id: str) -> str:
    """Airflow task body of data_ingest: validate one model's raw tables; return the interim folder.

    A validation stop fails the task without retries (the data will not fix itself); storage and
    other errors propagate and get the configured retries.
    """
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from tabular_mlops.config import get_model_config

    log = logging.getLogger(__name__)
    try:
        report = ingest_raw_tables(get_model_config(model), source=source, run_id=run_id, progress=log.info)
    except IngestFailed as exc:
        raise AirflowFailException(str(exc)) from exc
    for warning in report.warnings:
        log.warning("%s", warning.describe())
    log.info("validation %s: %s", report.status, Path(report.report_dir or "") / "summary.md")
    return str(report.interim_dir)
