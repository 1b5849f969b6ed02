"""Dataset-level expectations, built from a table's config and run with Great Expectations 1.x.

Each table gets a suite: columns present, not-null keys, categorical sets, numeric ranges, patterns,
a row-count floor (`min_rows`, 0 accepts a header-only table), label-rate bounds and foreign keys
resolving above a share (`min_share: 0` switches one off; the report lists it as disabled). Config
severity `error` maps to GX `critical` (stops the run), `warn` to GX `warning` (reported only).

GX validates the typed table in batches (a 27M-row table never sits in pandas whole) and the batch
results are merged into one outcome per expectation: counts add up, `mostly` and the bounds are
judged on the totals. Key uniqueness cannot be split into batches, so DuckDB checks it over the
whole table (`duplicate_keys_outcome`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from tabular_mlops.config import ColumnSpec, TableSpec
from tabular_mlops.contract import allowed_values, expectation_checks

if TYPE_CHECKING:
    import duckdb
    from great_expectations.data_context import AbstractDataContext

LABEL_INDICATOR = "__label_is_positive"
EXAMPLES_SHOWN = 5


def fk_indicator(column: str) -> str:
    """Name of the derived column telling whether a foreign key resolves to a parent row."""
    return f"__{column}_resolves"


@dataclass
class ExpectationOutcome:
    """One checked expectation, shaped for the JSON report and the readable summary."""

    table: str
    expectation: str
    column: str | None
    severity: str  # error | warn
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    detail: str = ""
    disabled: bool = False  # switched off by the config: listed so the report says so, never judged

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the outcome."""
        return asdict(self)

    def describe(self) -> str:
        """One line a person can act on."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        text = f"[{self.severity}] {self.expectation} on {where}"
        if self.detail:
            text += f": {self.detail}"
        if self.unexpected_count:
            text += f"; {self.unexpected_count} unexpected ({self.unexpected_percent:.2f} %)"
        if self.observed is not None and not self.unexpected_count:
            text += f"; observed {self.observed}"
        if self.examples:
            text += f"; e.g. {', '.join(repr(v) for v in self.examples)}"
        return text


def new_context() -> AbstractDataContext:
    """An in-memory GX context with analytics and progress bars off (no files, no network)."""
    # Must be set before GX is imported, or it phones home on every run.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs its (empty) datasource list at INFO on every context: a stray "[]" line per task log.
    logging.getLogger("great_expectations.datasource.fluent.config").setLevel(logging.WARNING)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _severity(level: str) -> Any:
    """GX's FailureSeverity for a config severity: error -> critical, warn -> warning."""
    from great_expectations.expectations.metadata_types import FailureSeverity

    return FailureSeverity.CRITICAL if level == "error" else FailureSeverity.WARNING


def build_expectations(table: TableSpec, present: set[str]) -> list[Any]:
    """The GX expectations of one table: the checks its row rules do not already enforce.

    A type, a required value or an `error` value rule quarantines a breaking row before GX sees
    the table, so an expectation of it could never fail; GX judges the table's shape, the label
    rate, foreign keys and the `warn` rules whose rows stay (`contract.expectation_checks`).
    """
    return schema_expectations(table) + value_expectations(table, present)


def schema_expectations(table: TableSpec) -> list[Any]:
    """Every declared column must exist: judged once, on the table's schema."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnToExist(column=name, severity=_severity("error")) for name in table.columns]


def value_expectations(table: TableSpec, present: set[str]) -> list[Any]:
    """Row count, `warn` value rules, label rate and foreign keys: judged on the rows, batch by batch."""
    import great_expectations.expectations as gxe

    expectations: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=table.min_rows, severity=_severity("error"))
    ]
    for name, spec in table.columns.items():
        if name in present:
            expectations += _column_expectations(name, spec)
    if table.label is not None and table.label.column in present:
        expectations.append(
            gxe.ExpectColumnMeanToBeBetween(
                column=LABEL_INDICATOR,
                min_value=table.label.min_rate,
                max_value=table.label.max_rate,
                severity=_severity(table.label.severity),
            )
        )
    for fk in table.foreign_keys:
        if fk.enabled and fk.column in present:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=fk_indicator(fk.column),
                    value_set=[True],
                    mostly=fk.min_share,
                    severity=_severity(fk.severity),
                )
            )
    return expectations


def _column_expectations(name: str, spec: ColumnSpec) -> list[Any]:
    """One column's `warn` value rules as GX expectations (a range is one expectation)."""
    import great_expectations.expectations as gxe

    checks = {check.kind: check for check in expectation_checks(spec)}
    out: list[Any] = []
    if "values" in checks:
        severity = _severity(checks["values"].severity)
        out.append(
            gxe.ExpectColumnValuesToBeInSet(column=name, value_set=allowed_values(spec), severity=severity)
        )
    if "min" in checks or "max" in checks:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=spec.min if "min" in checks else None,
                max_value=spec.max if "max" in checks else None,
                severity=_severity(spec.severity),
            )
        )
    if "pattern" in checks:
        severity = _severity(checks["pattern"].severity)
        out.append(
            gxe.ExpectColumnValuesToMatchRegex(column=name, regex=spec.pattern or "", severity=severity)
        )
    return out


def expectation_columns(table: TableSpec, present: set[str]) -> list[str]:
    """The columns the suite reads values of; the others are judged on the table's schema only."""
    columns = [name for name, spec in table.columns.items() if name in present and expectation_checks(spec)]
    if table.label is not None and table.label.column in present:
        columns.append(LABEL_INDICATOR)
    columns += [fk_indicator(fk.column) for fk in table.foreign_keys if fk.enabled and fk.column in present]
    return columns


def _described(config: Any) -> tuple[str, str | None, str]:
    """Expectation name, the column it is about, and a short statement of what it expects."""
    kwargs = config.kwargs
    column = kwargs.get("column")
    name = config.type
    if column == LABEL_INDICATOR:
        return (
            "expect_label_rate_to_be_between",
            None,
            (f"positive-label share expected in [{kwargs['min_value']}, {kwargs['max_value']}]"),
        )
    if isinstance(column, str) and column.startswith("__") and column.endswith("_resolves"):
        key = column[2 : -len("_resolves")]
        return "expect_foreign_key_to_resolve", key, f"at least {kwargs.get('mostly', 1.0):.2%} must resolve"
    if name == "expect_table_row_count_to_be_between":
        return name, None, f"at least {kwargs['min_value']} rows (min_rows)"
    if name == "expect_column_values_to_be_between":
        return name, column, f"range [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    return name, column, ""


def _plain(value: Any) -> Any:
    """A JSON-safe version of a numpy or pandas scalar."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


@dataclass
class _Tally:
    """One expectation's results summed over the batches."""

    success: bool = True
    observed: Any = None
    unexpected: int | None = None
    element: int = 0
    missing: int = 0
    weighted_sum: float = 0.0
    weight: int = 0
    examples: list[Any] = field(default_factory=list)
    exception: str | None = None

    def add(self, kind: str, kwargs: dict[str, Any], item: Any, frame: pd.DataFrame) -> None:
        """Fold one batch's result into the tally."""
        if item.exception_info and item.exception_info.get("raised_exception"):
            self.exception = self.exception or str(item.exception_info.get("exception_message"))
        result = item.result
        observed = result.get("observed_value")
        if kind == "expect_table_row_count_to_be_between":
            self.observed = (self.observed or 0) + int(observed or 0)
        elif kind == "expect_column_mean_to_be_between":
            count = int(frame[kwargs["column"]].notna().sum()) if kwargs["column"] in frame else 0
            if observed is not None and count:
                self.weighted_sum += float(observed) * count
                self.weight += count
        elif "unexpected_count" in result:
            self.unexpected = (self.unexpected or 0) + int(result["unexpected_count"])
            self.element += int(result.get("element_count") or 0)
            self.missing += int(result.get("missing_count") or 0)
            room = EXAMPLES_SHOWN - len(self.examples)
            self.examples += [_plain(v) for v in result.get("partial_unexpected_list", [])][:room]
        else:
            self.success = self.success and bool(item.success)
            self.observed = _plain(observed)

    def verdict(self, kind: str, kwargs: dict[str, Any]) -> tuple[bool, Any, float | None]:
        """(success, observed, unexpected percent) judged on the totals."""
        if self.exception:
            return False, self.observed, None
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if kind in ("expect_table_row_count_to_be_between", "expect_column_mean_to_be_between"):
            value = self.observed if kind.startswith("expect_table") else None
            if kind == "expect_column_mean_to_be_between" and self.weight:
                value = self.weighted_sum / self.weight
            inside = value is not None and (low is None or value >= low) and (high is None or value <= high)
            return inside, value, None
        if self.unexpected is not None:
            checked = self.element - self.missing
            share = self.unexpected / checked if checked else 0.0
            mostly = 1.0 if kwargs.get("mostly") is None else kwargs["mostly"]
            return share <= 1.0 - mostly + 1e-12, None, 100.0 * share
        return self.success, self.observed, None


def run_expectations(
    context: AbstractDataContext,
    table_name: str,
    table: TableSpec,
    present: set[str],
    batches: Iterable[pd.DataFrame],
    fk_examples: dict[str, list[Any]] | None = None,
) -> list[ExpectationOutcome]:
    """Validate one typed table with its GX suites; one merged outcome per expectation.

    The schema suite runs once on a frame with the present columns and no rows; the value suite
    runs on `batches`, which need only `expectation_columns` and must yield at least one frame
    (an empty one for no rows).
    """
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(f"{table_name}_source")
    batch_definition = source.add_dataframe_asset(table_name).add_batch_definition_whole_dataframe("whole")
    tallies: dict[str, _Tally] = {}
    configs: dict[str, Any] = {}
    suites = [
        (f"{table_name}_schema", schema_expectations(table), [pd.DataFrame(columns=sorted(present))]),
        (f"{table_name}_values", value_expectations(table, present), batches),
    ]
    for suite_name, expectations, frames in suites:
        suite = context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        validated = 0
        for frame in frames:
            batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(
                suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES_SHOWN}
            )
            _fold(result, frame, tallies, configs)
            validated += 1
        if not validated:
            raise ValueError(f"{table_name}: no batch to validate (expected at least an empty frame)")
    outcomes = [_outcome(table_name, configs[key], tally, fk_examples) for key, tally in tallies.items()]
    return outcomes + disabled_foreign_keys(table_name, table)


def _fold(result: Any, frame: pd.DataFrame, tallies: dict[str, _Tally], configs: dict[str, Any]) -> None:
    """Add one batch's results to the per-expectation tallies."""
    for item in result.results:
        config = item.expectation_config
        assert config is not None  # noqa: S101 - type narrowing: GX fills it for every result
        key = str(config.id)
        configs.setdefault(key, config)
        tallies.setdefault(key, _Tally()).add(config.type, config.kwargs, item, frame)


def disabled_foreign_keys(table_name: str, table: TableSpec) -> list[ExpectationOutcome]:
    """One passing outcome marked `disabled` per foreign key that `min_share: 0` switches off."""
    return [
        ExpectationOutcome(
            table=table_name,
            expectation="expect_foreign_key_to_resolve",
            column=fk.column,
            severity=fk.severity,
            success=True,
            detail=f"disabled (min_share: 0), not checked against {', '.join(fk.references)}",
            disabled=True,
        )
        for fk in table.foreign_keys
        if not fk.enabled
    ]


def _outcome(
    table_name: str, config: Any, tally: _Tally, fk_examples: dict[str, list[Any]] | None
) -> ExpectationOutcome:
    name, column, detail = _described(config)
    success, observed, percent = tally.verdict(config.type, config.kwargs)
    severity = "error" if str(config.severity.value) == "critical" else "warn"
    examples = tally.examples
    if name == "expect_foreign_key_to_resolve" and fk_examples is not None:
        examples = fk_examples.get(column or "", [])
    if tally.exception:
        detail = f"{detail} (could not be checked: {tally.exception})".strip()
    if name == "expect_column_to_exist" and not success:
        detail = "required column is missing from the file"
    return ExpectationOutcome(
        table=table_name,
        expectation=name,
        column=column,
        severity=severity,
        success=success,
        observed=_plain(observed),
        unexpected_count=tally.unexpected,
        unexpected_percent=percent,
        examples=examples,
        detail=detail,
    )


def duplicate_keys_outcome(
    con: duckdb.DuckDBPyConnection, relation: str, table_name: str, keys: list[str]
) -> ExpectationOutcome:
    """Primary-key uniqueness over a whole DuckDB relation (rows where every key is null are skipped)."""
    from tabular_mlops.row_rules import ident

    columns = ", ".join(ident(k) for k in keys)
    not_all_null = " OR ".join(f"{ident(k)} IS NOT NULL" for k in keys)
    checked = con.execute(f"SELECT count(*) FROM {relation} WHERE {not_all_null}").fetchall()[0][0]  # noqa: S608 - internal view; keys ident()-quoted
    duplicated = con.execute(
        f"SELECT {columns}, count(*) AS n FROM {relation} WHERE {not_all_null} "  # noqa: S608 - internal view; keys ident()-quoted
        f"GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC, {columns}"
    ).fetchall()
    unexpected = int(sum(row[-1] for row in duplicated))
    if len(keys) == 1:
        name, column = "expect_column_values_to_be_unique", keys[0]
        examples = [_plain(row[0]) for row in duplicated[:EXAMPLES_SHOWN]]
    else:
        name, column = "expect_compound_columns_to_be_unique", ",".join(keys)
        examples = [
            dict(zip(keys, map(_plain, row[:-1]), strict=True)) for row in duplicated[:EXAMPLES_SHOWN]
        ]
    return ExpectationOutcome(
        table=table_name,
        expectation=name,
        column=column,
        severity="error",
        success=unexpected == 0,
        unexpected_count=unexpected,
        unexpected_percent=100.0 * unexpected / checked if checked else 0.0,
        examples=examples,
        detail="key must be unique" if len(keys) > 1 else "",
    )
