"""Row-level rules compiled to DuckDB SQL: type raw CSV text and flag what is wrong per row.

A row breaking an `error` rule (a value that does not parse as its type, a missing required field,
a value outside its categorical set, range or pattern) is set aside with every reason found; a
`warn` rule keeps the row and only counts it. Whitespace-only values in nullable columns become
nulls and are counted, because that is how real files say "no value yet" (Telco's TotalCharges).

The rules run inside DuckDB so a 27M-row table is checked in parallel without leaving the engine.
Column names are quoted as identifiers and config values as literals (never pasted raw); the raw
columns are read as VARCHAR so that a bad value is a flag, not a failed cast. The query is staged
(trimmed text, then parsed number and presence, then one boolean flag per rule) so each
expression stays small: a 122-column table plans in a fraction of a second. The readable reasons
are written in Python, and only for the rows that were set aside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tabular_mlops.config import ColumnSpec, TableSpec
from tabular_mlops.contract import Check, allowed_values, column_checks

# What Python's str.strip() removes in practice; DuckDB's trim() alone only removes spaces.
WHITESPACE = " \t\r\n\x0b\x0c"


def ident(name: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | int | float) -> str:
    """A SQL literal: numbers as written, text single-quoted with embedded quotes doubled."""
    if isinstance(value, bool):
        raise TypeError("booleans are not valid rule values")
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Rule:
    """One counted quantity of a column: a rule, or the whitespace-only values turned to null."""

    label: str  # what it is counted under, and the reason text
    kind: str  # error | warn | blank_to_null
    condition: str  # SQL, true where the row breaks the rule (over the staged columns)
    quote_value: bool  # the reason quotes the offending value ("tenure: not an integer ('12.5')")
    flag: str = ""  # name of its boolean column in the checked rows, set by RowRules


@dataclass(frozen=True)
class ColumnRules:
    """One column's staged SQL: trimmed text and number computed once, rules refer to them by name."""

    name: str
    text: str  # SQL computing the trimmed text from the raw column
    number: str | None  # SQL computing the parsed number from the trimmed text (numeric columns)
    typed: str  # SQL of the typed value (NULL for blanks and unparsable values)
    rules: list[Rule]


def _column_rules(i: int, name: str, spec: ColumnSpec) -> ColumnRules:
    """The staged SQL of one column and one rule per check its contract implies."""
    raw, s, n, p = ident(name), ident(f"__s{i}"), ident(f"__n{i}"), ident(f"__p{i}")
    rules: list[Rule] = []
    if spec.nullable:
        whitespace_only = f"({raw} IS NOT NULL AND {raw} <> '' AND NOT {p})"
        rules.append(Rule(name, "blank_to_null", whitespace_only, quote_value=False))
    number, typed, valid, compare, bad = None, f"CASE WHEN {p} THEN {s} END", p, s, "false"
    if spec.is_numeric:
        # Underscores are digit separators to DuckDB (1_000) but not to people or to pandas.
        number = f"CASE WHEN contains({s}, '_') THEN NULL ELSE TRY_CAST({s} AS DOUBLE) END"
        bad = f"{n} IS NULL OR NOT isfinite({n})"
        if spec.type == "int":
            # TRY_CAST('12.5' AS BIGINT) rounds, so integers are parsed as doubles and checked whole.
            bad += f" OR floor({n}) <> {n}"
        valid = f"({p} AND NOT ({bad}))"
        typed = f"CASE WHEN {valid} THEN CAST({n} AS {'BIGINT' if spec.type == 'int' else 'DOUBLE'}) END"
        compare = f"CASE WHEN {valid} THEN {n} END"
    for check in column_checks(spec):
        condition = _check_sql(check, spec, _Staged(p, s, n, valid, compare, bad))
        quote = check.kind != "required"
        rules.append(Rule(f"{name}: {check.problem}", check.severity, condition, quote_value=quote))
    # trim() with a character set is slow (3-4x a plain copy); most values have nothing to trim,
    # so it only runs where the first or last character is a space or a control character.
    edge = f"ascii({raw}) <= 32 OR ascii(reverse({raw})) <= 32"
    text = f"CASE WHEN {edge} THEN trim({raw}, {literal(WHITESPACE)}) ELSE {raw} END"
    return ColumnRules(name, text, number, typed, rules)


class _Staged(NamedTuple):
    """SQL of one column's staged values that its checks refer to."""

    present: str  # the trimmed text is non-empty
    text: str  # the trimmed text
    number: str  # the parsed number (numeric columns)
    valid: str  # present and of its type
    compare: str  # the value the allowed set is compared with
    bad: str  # present text that is not of its type


def _check_sql(check: Check, spec: ColumnSpec, staged: _Staged) -> str:
    """SQL true where a row breaks one check (over the staged columns).

    Range and set checks judge only values that parsed; a non-number already has its reason.
    """
    p, s, n, valid = staged.present, staged.text, staged.number, staged.valid
    if check.kind == "required":
        return f"NOT {p}"
    if check.kind == "type":
        return f"({p} AND ({staged.bad}))"
    if check.kind == "min":
        return f"coalesce({valid} AND {n} < {literal(spec.min)}, false)"  # type: ignore[arg-type]
    if check.kind == "max":
        return f"coalesce({valid} AND {n} > {literal(spec.max)}, false)"  # type: ignore[arg-type]
    if check.kind == "values":
        allowed = ", ".join(literal(v) for v in allowed_values(spec)) or "NULL"
        return f"coalesce({p} AND ({staged.compare}) NOT IN ({allowed}), false)"
    return f"coalesce({p} AND NOT regexp_full_match({s}, {literal(spec.pattern or '')}), false)"


def quote_value(text: str | None) -> str:
    """How a reason shows the offending value: trimmed, then as Python's repr."""
    return repr((text or "").strip(WHITESPACE))


@dataclass(frozen=True)
class RowRules:
    """Every rule of a table's present columns, and the staged SQL the ingest stage runs.

    `checked_sql` selects per row the raw columns under their names, the typed columns
    (`typed_select` renames them back), one boolean flag column per rule and `__rejected`, in the
    order of its source, so a table created from it has the source ordinal as its rowid.
    """

    table: TableSpec
    columns: list[ColumnRules]

    @property
    def rules(self) -> list[tuple[Rule, str]]:
        """(rule, column name) of every counted quantity, flags named, in config order."""
        return [(rule, c.name) for c in self.columns for rule in c.rules]

    @property
    def error_rules(self) -> list[tuple[Rule, str]]:
        """The rules whose breach sets a row aside."""
        return [(rule, column) for rule, column in self.rules if rule.kind == "error"]

    def checked_sql(self, source: str, carry: Sequence[str] = ()) -> str:
        """SELECT over `source` (a relation with the raw columns by name): the checked rows.

        `carry` names further source columns (undeclared ones) passed through untouched, so a
        rejected row can be written back whole.
        """
        # A file with none of the declared columns still has rows to count: keep one placeholder.
        kept = [ident(c.name) for c in self.columns] + [ident(c) for c in carry]
        stage1 = list(kept) or ["NULL AS __none"]
        stage1 += [f"{c.text} AS __s{i}" for i, c in enumerate(self.columns)]
        stage2 = ["*"] + [
            f"(__s{i} IS NOT NULL AND __s{i} <> '') AS __p{i}" for i in range(len(self.columns))
        ]
        stage2 += [f"{c.number} AS __n{i}" for i, c in enumerate(self.columns) if c.number is not None]
        stage3 = list(kept) or ["__none"]
        stage3 += [f"{c.typed} AS __t{i}" for i, c in enumerate(self.columns)]
        stage3 += [f"{rule.condition} AS {rule.flag}" for rule, _ in self.rules]
        errors = [rule.flag for rule, _ in self.error_rules]
        rejected = " OR ".join(errors) if errors else "false"
        return (
            f"SELECT *, ({rejected}) AS __rejected FROM (SELECT {', '.join(stage3)} FROM "  # noqa: S608 - names via ident(), values via literal()
            f"(SELECT {', '.join(stage2)} FROM (SELECT {', '.join(stage1)} FROM {source})))"
        )

    def typed_select(self) -> str:
        """SQL select list of the typed columns of `checked_sql`, in config order, under their names."""
        return ", ".join(f"__t{i} AS {ident(c.name)}" for i, c in enumerate(self.columns))

    def reasons(self, flags: Sequence[bool], raw: dict[str, str | None]) -> str:
        """The '; '-joined reasons of one set-aside row from its error flags (in `error_rules` order)."""
        parts = []
        for (rule, column), broken in zip(self.error_rules, flags, strict=True):
            if broken:
                parts.append(f"{rule.label} ({quote_value(raw[column])})" if rule.quote_value else rule.label)
        return "; ".join(parts)


def compile_row_rules(table: TableSpec, present: list[str]) -> RowRules:
    """The row rules of the declared columns present in a file, in config order."""
    clashing = [name for name in present if name.startswith("__")]
    if clashing:
        # Staged and internal columns are named __<letter><n>; a config column must not shadow them.
        raise ValueError(f"column names may not start with '__': {clashing}")
    columns = []
    for i, name in enumerate(present):
        column = _column_rules(i, name, table.columns[name])
        named = [
            Rule(r.label, r.kind, r.condition, r.quote_value, f"__f{i}_{j}")
            for j, r in enumerate(column.rules)
        ]
        columns.append(ColumnRules(column.name, column.text, column.number, column.typed, named))
    return RowRules(table, columns)
