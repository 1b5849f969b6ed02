"""A table's column contract, generated once for each of its consumers.

The config declares each column once (type, required, allowed set, range, pattern, severity).
Every check it implies is listed here as a `Check`, and each consumer takes its share:

- the ingest row rules (`row_rules`, DuckDB SQL) enforce types, required values and every
  `error` rule: a breaking row is quarantined with its reason;
- Great Expectations judges what the row rules cannot: the table's shape (columns present,
  row count), the label rate, foreign keys, and the `warn` rules that keep their rows;
- DuckDB checks key uniqueness over the whole table;
- batch and REST scoring accept by `acceptance_spec`: a missing required value or a wrong type
  rejects, every value rule only warns (an unseen category is scored);
- REST turns the same checks into Python tests (`value_tests`) whose problem text is the batch
  reason's, so a REST warning and a batch warning of one value read the same.

`rule_layers` lists every rule of a model with the layer that enforces it, for the report.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tabular_mlops.config import ColumnSpec, ModelConfig, TableSpec

CheckKind = Literal["required", "type", "min", "max", "values", "pattern"]
Layer = Literal["row_rules", "great_expectations", "duckdb"]


@dataclass(frozen=True)
class Check:
    """One value check of a column, as the config implies it."""

    kind: CheckKind
    severity: str  # error | warn
    problem: str  # the reason after "<column>: ", shared by the row rules, GX's report and REST

    @property
    def layer(self) -> Layer:
        """Which layer enforces it at ingest: the row rules, unless it keeps its rows."""
        if self.kind in ("required", "type") or self.severity == "error":
            return "row_rules"
        return "great_expectations"


def column_checks(spec: ColumnSpec) -> list[Check]:
    """Every check one column's spec implies, in the order the row rules evaluate them."""
    checks: list[Check] = []
    if not spec.nullable:
        checks.append(Check("required", "error", "missing required value"))
    if spec.is_numeric:
        checks.append(Check("type", "error", "not an integer" if spec.type == "int" else "not a number"))
    if spec.min is not None:
        checks.append(Check("min", spec.severity, f"below minimum {spec.min:g}"))
    if spec.max is not None:
        checks.append(Check("max", spec.severity, f"above maximum {spec.max:g}"))
    if spec.values is not None:
        checks.append(Check("values", spec.severity, "not in the allowed set"))
    if spec.pattern is not None:
        checks.append(Check("pattern", spec.severity, f"does not match {spec.pattern}"))
    return checks


def expectation_checks(spec: ColumnSpec) -> list[Check]:
    """The checks of a column that Great Expectations judges: those the row rules do not enforce."""
    return [check for check in column_checks(spec) if check.layer == "great_expectations"]


def allowed_values(spec: ColumnSpec) -> list[Any]:
    """The allowed set as typed values (ints for int columns, floats for float, else text)."""
    cast: Callable[[Any], Any] = {"int": int, "float": float}.get(spec.type, str)
    return [cast(v) for v in spec.values or []]


def acceptance_spec(spec: TableSpec) -> TableSpec:
    """A table's contract as scoring (batch and REST) applies it.

    A row is rejected only when it cannot be scored: a required value missing or a value that is
    not its type. An unseen category, a value out of the training range or an odd pattern is
    counted as a warning and scored: the model's encoder maps unseen categories to all zeros.
    The label is not expected.
    """
    label = spec.label.column if spec.label is not None else None
    columns = {
        name: column.model_copy(update={"severity": "warn"})
        for name, column in spec.columns.items()
        if name != label
    }
    return spec.model_copy(update={"columns": columns, "label": None, "foreign_keys": []})


# (kind, problem, test) of one value rule as REST applies it to a typed value.
ValueTest = tuple[str, str, Callable[[Any], bool]]
_REST_KINDS = {"min": "below_minimum", "max": "above_maximum", "values": "not_allowed", "pattern": "pattern"}


def value_tests(spec: ColumnSpec) -> list[ValueTest]:
    """The allowed-set, range and pattern checks of one column as Python tests of a typed value.

    Types and required values are the request schema's job (a breach is a 422); these only warn.
    """
    tests: list[ValueTest] = []
    for check in column_checks(spec):
        if check.kind in ("required", "type"):
            continue
        tests.append((_REST_KINDS[check.kind], check.problem, _value_test(check.kind, spec)))
    return tests


def _value_test(kind: CheckKind, spec: ColumnSpec) -> Callable[[Any], bool]:
    """True where a typed value breaks the check of `kind`."""
    if kind == "min":
        low = spec.min
        return lambda v: v < low
    if kind == "max":
        high = spec.max
        return lambda v: v > high
    if kind == "values":
        allowed = frozenset(allowed_values(spec))
        return lambda v: v not in allowed
    compiled = re.compile(spec.pattern or "")
    return lambda v: not compiled.fullmatch(v)


@dataclass(frozen=True)
class RuleLayer:
    """One rule of a table and the layer that enforces it, as the validation report lists it."""

    table: str
    column: str | None
    rule: str
    severity: str
    layer: Layer
    on_breach: str


_ON_BREACH = {
    ("row_rules", "error"): "row quarantined with its reason",
    ("great_expectations", "warn"): "reported as a warning; rows kept",
    ("great_expectations", "error"): "run stopped",
    ("duckdb", "error"): "run stopped",
}


def _rule(table: str, column: str | None, rule: str, severity: str, layer: Layer) -> RuleLayer:
    return RuleLayer(table, column, rule, severity, layer, _ON_BREACH[(layer, severity)])


def table_rule_layers(name: str, table: TableSpec) -> list[RuleLayer]:
    """Every rule of one table with its enforcing layer: column checks, then table-level checks."""
    rules: list[RuleLayer] = []
    for column, spec in table.columns.items():
        rules.append(_rule(name, column, "column present", "error", "great_expectations"))
        rules += [_rule(name, column, c.problem, c.severity, c.layer) for c in column_checks(spec)]
    rules.append(_rule(name, None, f"at least {table.min_rows} rows", "error", "great_expectations"))
    if table.primary_key:
        rules.append(_rule(name, ",".join(table.primary_key), "key unique", "error", "duckdb"))
    if table.label is not None:
        label = table.label
        bounds = f"positive-label share in [{label.min_rate}, {label.max_rate}]"
        rules.append(_rule(name, label.column, bounds, label.severity, "great_expectations"))
    for fk in table.foreign_keys:
        what = f"resolves to {', '.join(fk.references)}"
        what += f" (at least {fk.min_share:.0%})" if fk.enabled else " (disabled: min_share 0)"
        rules.append(_rule(name, fk.column, what, fk.severity, "great_expectations"))
    return rules


def rule_layers(config: ModelConfig) -> list[RuleLayer]:
    """Every rule of a model's tables with the layer that enforces it at ingest."""
    return [rule for name, table in config.data.tables.items() for rule in table_rule_layers(name, table)]
