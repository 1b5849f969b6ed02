"""Load one raw CSV with DuckDB: apply the row rules, write kept rows as parquet, set the rest aside.

DuckDB reads the file in parallel as text (`all_varchar`), so a malformed value is a reason and not a
failed cast; rows with the wrong number of fields land in DuckDB's rejects table. The row rules run
as SQL (`row_rules`), kept rows are written typed, in file order, and every rejected row goes to the
quarantine CSV with its physical source line, its reasons and its raw text.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from tabular_mlops.config import TableSpec
from tabular_mlops.row_rules import RowRules, compile_row_rules, ident

QUARANTINE_HEADER = ["source_file", "line", "reasons", "raw_row"]
FETCH_ROWS = 100_000
WRONG_WIDTH = "row: wrong number of fields"
# Every field as text (a bad value becomes a reason, not a failed cast); rows of the wrong width
# land in the rejects table. The path and the positional column names are bound parameters.
READ_CSV = (
    "read_csv($path, header = true, auto_detect = false, columns = $columns, delim = ',', quote = '\"',"
    " escape = '\"', store_rejects = true, rejects_table = 'rejected_rows', rejects_scan = 'rejected_scans')"
)


@dataclass
class FileScan:
    """What one pass over the bytes tells: fingerprint and physical line count."""

    sha256: str
    lines: int


@dataclass
class LoadOutcome:
    """Counts of one loaded table, in the shape of the validation report."""

    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    blank_to_null: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    # exact | approximate (the two CSV parsers disagreed on the records) | row (parquet row numbers)
    line_numbers: str = "exact"


def scan_file(path: Path) -> FileScan:
    """sha256 and physical line count in one read, in constant memory."""
    digest = hashlib.sha256()
    newlines = 0
    last = b""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            newlines += block.count(b"\n")
            last = block[-1:]
    lines = newlines + (1 if last not in (b"", b"\n") else 0)
    return FileScan(digest.hexdigest(), lines)


def read_header(path: Path) -> list[str]:
    """The header fields of a CSV file, stripped of surrounding whitespace and a BOM."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [h.strip() for h in next(csv.reader(handle), [])]


def repeated_columns(header: list[str]) -> list[str]:
    """Column names a header holds more than once, sorted (such a file cannot be read by name)."""
    return sorted({h for h in header if header.count(h) > 1})


def csv_line(values: Iterable[Any]) -> str:
    """Values as one CSV line (no terminator), quoted where needed; None becomes empty."""
    buffer = io.StringIO()
    # With an empty terminator the writer would not quote a field holding a newline.
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()[:-1]


def _record_lines(path: Path, width: int) -> Iterator[tuple[bool, int]]:
    """(has the right width, physical start line) of every record, as Python's csv module sees it."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        previous_end = reader.line_num
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if row:  # an empty line carries no record
                yield len(row) == width, start


class _LineMap:
    """Physical source lines of kept-record ordinals and of width-rejected records.

    When every record is one physical line (no blank lines, no quoted newlines) DuckDB's reject
    lines are exact and a record's line follows from its ordinal. Otherwise Python's csv module, the
    parser the line numbers are defined by, walks the file once for the lines of the wanted records.
    """

    def __init__(
        self, path: Path, width: int, scan: FileScan, records: int, width_lines: list[int], wanted: Any
    ):
        self.simple = scan.lines == 1 + records + len(width_lines)
        self.exact = True
        self.width_lines = width_lines
        self._shift = 0
        self._lines: dict[int, int] = {}
        if self.simple or (len(wanted) == 0 and not width_lines):
            return
        wanted_set = set(wanted.tolist())
        walked_rejects: list[int] = []
        ordinal = -1
        for right_width, line in _record_lines(path, width):
            if not right_width:
                walked_rejects.append(line)
                continue
            ordinal += 1
            if ordinal in wanted_set:
                self._lines[ordinal] = line
        if ordinal + 1 == records and len(walked_rejects) == len(width_lines):
            self.width_lines = walked_rejects
        else:
            self.exact = False

    def kept_line(self, ordinal: int) -> int:
        """Physical line of the record with this 0-based ordinal; ordinals must come in order."""
        if not self.simple:
            return self._lines.get(ordinal, ordinal + 2)
        while (
            self._shift < len(self.width_lines) and self.width_lines[self._shift] <= ordinal + 2 + self._shift
        ):
            self._shift += 1
        return ordinal + 2 + self._shift


def connect(tmp: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to `tmp` and prints no progress bar (it floods task logs)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    tmp.mkdir(parents=True, exist_ok=True)
    con.execute("SET temp_directory = $dir", {"dir": str(tmp)})
    return con


def _carried(header: list[str], rules: RowRules) -> dict[str, str]:
    """{alias: header name} of the undeclared columns a rejected row keeps (aliases are positional)."""
    declared = {c.name for c in rules.columns}
    return {f"__x{i}": name for i, name in enumerate(header) if name not in declared}


def _check(
    con: duckdb.DuckDBPyConnection,
    rules: RowRules,
    source: str,
    params: dict[str, Any],
    out_path: Path,
    outcome: LoadOutcome,
    carry: list[str],
) -> tuple[int, int]:
    """Create table `checked` from a source relation, count every rule, write the kept rows typed.

    One pass from the file to the checked table; insertion order is kept (DuckDB's default), so a
    row's rowid is its record ordinal in the file. Returns (kept, rejected) row counts.
    """
    con.execute(f"CREATE TABLE checked AS {rules.checked_sql(source, carry)}", params)
    # count(*) FILTER, not count_if: count_if over a header-only file is NULL, not 0.
    kept, rejected = con.execute(
        "SELECT count(*) FILTER (NOT __rejected), count(*) FILTER (__rejected) FROM checked"
    ).fetchall()[0]
    _count_rules(con, rules, outcome)
    if rules.columns:
        con.sql(f"SELECT {rules.typed_select()} FROM checked WHERE NOT __rejected").write_parquet(  # noqa: S608 - select list of ident()-quoted names
            str(out_path)
        )
    return int(kept), int(rejected)


def _rejected_rows(
    con: duckdb.DuckDBPyConnection, rules: RowRules, carry: list[str]
) -> duckdb.DuckDBPyConnection:
    """Cursor over (rowid, error flags..., raw values...) of the rows that broke a rule, in file order."""
    flags = [rule.flag for rule, _ in rules.error_rules]
    columns = flags + [ident(c.name) for c in rules.columns] + [ident(c) for c in carry]
    return con.execute(
        f"SELECT rowid, {', '.join(columns) or 'NULL'} FROM checked WHERE __rejected ORDER BY rowid"  # noqa: S608 - flags and ident()-quoted names
    )


def load_csv(
    path: Path,
    spec: TableSpec,
    header: list[str],
    scan: FileScan,
    source_label: str,
    out_path: Path,
    quarantine_path: Path,
    tmp: Path,
) -> LoadOutcome:
    """Check one CSV's rows, write the kept ones typed to out_path and the rest to quarantine_path."""
    present = [c for c in spec.columns if c in header]
    rules = compile_row_rules(spec, present)
    outcome = LoadOutcome()
    raw_names = [f"c{i}" for i in range(len(header))]  # positional, so any header text is safe
    by_name = dict(zip(header, raw_names, strict=True))
    with connect(tmp) as con:
        # The rules address columns by their header names; map them onto the positional ones.
        carried = _carried(header, rules)
        renamed = [f"{ident(by_name[c])} AS {ident(c)}" for c in present]
        renamed += [f"c{alias[3:]} AS {alias}" for alias in carried]
        params = {"path": str(path), "columns": dict.fromkeys(raw_names, "VARCHAR")}
        source = f"(SELECT {', '.join(renamed) or 'NULL AS __none'} FROM {READ_CSV})"  # noqa: S608 - ident()-quoted names; path, columns bound
        kept_total, rejected_total = _check(con, rules, source, params, out_path, outcome, list(carried))
        width_rejects = con.execute(
            "SELECT line, any_value(error_type), any_value(csv_line), any_value(error_message) "
            "FROM rejected_rows GROUP BY line ORDER BY line"
        ).fetchall()
        wanted = con.execute("SELECT rowid FROM checked WHERE __rejected ORDER BY rowid").fetchnumpy()
        line_map = _LineMap(
            path,
            len(header),
            scan,
            kept_total + rejected_total,
            [int(r[0]) for r in width_rejects],
            wanted["rowid"],
        )
        outcome.rows_quarantined = _write_quarantine(
            quarantine_path,
            source_label,
            _rule_rejects(
                _rejected_rows(con, rules, list(carried)), line_map.kept_line, header, rules, carried
            ),
            _width_rejects(width_rejects, line_map, len(header), outcome),
        )
    outcome.rows_read = kept_total + rejected_total + len(width_rejects)
    outcome.rows_written = kept_total
    outcome.line_numbers = "exact" if line_map.exact else "approximate"
    return outcome


def parquet_columns(path: Path) -> list[str]:
    """Column names of a parquet file."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def load_parquet(
    path: Path, spec: TableSpec, source_label: str, out_path: Path, quarantine_path: Path, tmp: Path
) -> LoadOutcome:
    """The row rules over a parquet file, read as text like a CSV; `line` in quarantine is the row number."""
    header = parquet_columns(path)
    present = [c for c in spec.columns if c in header]
    rules = compile_row_rules(spec, present)
    outcome = LoadOutcome(line_numbers="row")
    with connect(tmp) as con:
        # Typed parquet values become text so the same rules judge them (a float in an int column).
        carried = _carried(header, rules)
        as_text = [f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in present]
        as_text += [f"CAST({ident(name)} AS VARCHAR) AS {alias}" for alias, name in carried.items()]
        source = f"(SELECT {', '.join(as_text) or 'NULL AS __none'} FROM read_parquet($path))"  # noqa: S608 - quoted names; $path bound
        kept, rejected = _check(con, rules, source, {"path": str(path)}, out_path, outcome, list(carried))
        outcome.rows_quarantined = _write_quarantine(
            quarantine_path,
            source_label,
            _rule_rejects(
                _rejected_rows(con, rules, list(carried)), lambda ordinal: ordinal + 1, header, rules, carried
            ),
        )
    outcome.rows_read, outcome.rows_written = kept + rejected, kept
    return outcome


def _count_rules(con: duckdb.DuckDBPyConnection, rules: RowRules, outcome: LoadOutcome) -> None:
    """One aggregate pass counting every rule violation, warning and blank-to-null."""
    counted = rules.rules
    if not counted:
        return
    row = con.execute(
        f"SELECT {', '.join(f'count(*) FILTER ({r.flag})' for r, _ in counted)} FROM checked"  # noqa: S608 - flags are generated __f<i>_<j> names
    ).fetchall()[0]
    targets = {
        "error": outcome.quarantine_reasons,
        "warn": outcome.warnings,
        "blank_to_null": outcome.blank_to_null,
    }
    for (rule, _), count in zip(counted, row, strict=True):
        if count:
            targets[rule.kind][rule.label] = int(count)


def _rule_rejects(
    cursor: duckdb.DuckDBPyConnection,
    line_of: Callable[[int], int],
    header: list[str],
    rules: RowRules,
    carried: dict[str, str],
) -> Iterator[tuple[int, str, str]]:
    """(line, reasons, raw row) of rows that broke a row rule, in file order."""
    width = len(rules.error_rules)
    names = [c.name for c in rules.columns] + list(carried.values())
    while rows := cursor.fetchmany(FETCH_ROWS):
        for ordinal, *values in rows:
            raw = dict(zip(names, values[width:], strict=True))
            line = [raw.get(h) for h in header]  # the whole raw row, in header order
            yield line_of(int(ordinal)), rules.reasons(values[:width], raw), csv_line(line)


def _width_rejects(
    rows: list[tuple[Any, ...]], line_map: _LineMap, width: int, outcome: LoadOutcome
) -> Iterator[tuple[int, str, str]]:
    """(line, reason, raw line) of records DuckDB could not split into the header's fields."""
    lines = line_map.width_lines
    for line, (_, error_type, text, message) in zip(lines, rows, strict=True):
        raw = (text or "").strip("\r\n")
        if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
            found = len(next(csv.reader([raw]), []))
            reason, counted = f"row: expected {width} fields, found {found}", WRONG_WIDTH
        else:
            reason = counted = f"row: {str(error_type).lower()}: {message}"
        outcome.quarantine_reasons[counted] = outcome.quarantine_reasons.get(counted, 0) + 1
        yield line, reason, raw


def _write_quarantine(path: Path, source_label: str, *streams: Iterator[tuple[int, str, str]]) -> int:
    """Merge the line-ordered reject streams into one quarantine CSV; return the row count."""
    count = 0
    handle = None
    try:
        for line, reasons, raw in heapq.merge(*streams):
            if handle is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = path.open("w", newline="")
                writer = csv.writer(handle)
                writer.writerow(QUARANTINE_HEADER)
            writer.writerow([source_label, line, reasons, raw])
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count
