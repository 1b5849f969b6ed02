"""Dataset-level expectations, built from a table's config and run with Great Expectations 1.x.

Each table gets a suite: columns present, not-null and unique keys, categorical sets, numeric ranges,
patterns, a row-count floor, label-rate bounds and foreign keys resolving above a share. Config
severity `error` maps to GX `critical` (stops the run), `warn` to GX `warning` (reported only).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from tabular_mlops.config import TableSpec

if TYPE_CHECKING:
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

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _severity(level: str) -> Any:
    """GX's FailureSeverity for a config severity: error -> critical, warn -> warning."""
    from great_expectations.expectations.metadata_types import FailureSeverity

    return FailureSeverity.CRITICAL if level == "error" else FailureSeverity.WARNING


def build_expectations(table: TableSpec, present: set[str]) -> list[Any]:
    """The GX expectations for one table, limited to checks whose columns are present."""
    import great_expectations.expectations as gxe

    expectations: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=table.min_rows, severity=_severity("error"))
    ]
    for name, spec in table.columns.items():
        expectations.append(gxe.ExpectColumnToExist(column=name, severity=_severity("error")))
        if name not in present:
            continue
        if not spec.nullable:
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=name, severity=_severity("error")))
        if spec.values is not None:
            value_set = [int(v) for v in spec.values] if spec.type == "int" else [str(v) for v in spec.values]
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name, value_set=value_set, severity=_severity(spec.severity)
                )
            )
        if spec.min is not None or spec.max is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name, min_value=spec.min, max_value=spec.max, severity=_severity(spec.severity)
                )
            )
        if spec.pattern is not None:
            expectations.append(
                gxe.ExpectColumnValuesToMatchRegex(
                    column=name, regex=spec.pattern, severity=_severity(spec.severity)
                )
            )
    keys = [k for k in table.primary_key if k in present]
    if keys and len(keys) == len(table.primary_key):
        if len(keys) == 1:
            expectations.append(gxe.ExpectColumnValuesToBeUnique(column=keys[0], severity=_severity("error")))
        else:
            expectations.append(
                gxe.ExpectCompoundColumnsToBeUnique(column_list=keys, severity=_severity("error"))
            )
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
        if fk.column in present:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=fk_indicator(fk.column),
                    value_set=[True],
                    mostly=fk.min_share,
                    severity=_severity(fk.severity),
                )
            )
    return expectations


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
        return name, None, f"at least {kwargs['min_value']} rows"
    if name == "expect_compound_columns_to_be_unique":
        return name, ",".join(kwargs["column_list"]), "key must be unique"
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


def run_expectations(
    context: AbstractDataContext,
    table_name: str,
    table: TableSpec,
    frame: pd.DataFrame,
    fk_examples: dict[str, list[Any]] | None = None,
) -> list[ExpectationOutcome]:
    """Validate one typed table with its GX suite and return one outcome per expectation."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(f"{table_name}_source")
    asset = source.add_dataframe_asset(table_name)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(
        name=f"{table_name}_suite", expectations=build_expectations(table, set(frame.columns))
    )
    suite = context.suites.add_or_update(suite)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES_SHOWN}
    )
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        assert config is not None  # GX fills it for every result of a suite run
        name, column, detail = _described(config)
        severity = "error" if str(config.severity.value) == "critical" else "warn"
        observed = item.result.get("observed_value")
        examples = [_plain(v) for v in item.result.get("partial_unexpected_list", [])][:EXAMPLES_SHOWN]
        if name == "expect_foreign_key_to_resolve" and fk_examples is not None:
            examples = fk_examples.get(column or "", [])
        if item.exception_info and item.exception_info.get("raised_exception"):
            detail = (
                f"{detail} (could not be checked: {item.exception_info.get('exception_message')})".strip()
            )
        if name == "expect_column_to_exist" and not item.success:
            detail = "required column is missing from the file"
        outcomes.append(
            ExpectationOutcome(
                table=table_name,
                expectation=name,
                column=column,
                severity=severity,
                success=bool(item.success),
                observed=_plain(observed),
                unexpected_count=_plain(item.result.get("unexpected_count")),
                unexpected_percent=_plain(item.result.get("unexpected_percent")),
                examples=examples,
                detail=detail,
            )
        )
    return outcomes
