"""One column contract, three consumers: each rule is enforced by exactly one layer at ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tabular_mlops.config import TableSpec, get_model_config, load_model_config
from tabular_mlops.contract import acceptance_spec, table_rule_layers, value_tests
from tabular_mlops.row_rules import compile_row_rules
from tabular_mlops.validation import build_expectations

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Every kind of column check, at both severities.
EVERY_KIND = TableSpec.model_validate(
    {
        "file": "t.csv",
        "primary_key": ["id"],
        "columns": {
            "id": {"type": "string", "nullable": False, "pattern": "^[A-Z][0-9]+$"},
            "code": {"type": "string", "pattern": "^[a-z]+$", "severity": "warn"},
            "n": {"type": "int", "min": 0, "max": 9},
            "x": {"type": "float", "min": -1.5, "max": 2.5, "severity": "warn"},
            "low_only": {"type": "float", "min": 0, "severity": "warn"},
            "k": {"type": "int", "values": [1, 2, 3]},
            "kw": {"type": "int", "values": [1, 2], "severity": "warn"},
            "cat": {"type": "category", "values": ["a", "b"]},
            "catw": {"type": "category", "values": ["a", "b"], "severity": "warn", "nullable": False},
        },
    }
)


def _tables() -> list[tuple[str, TableSpec]]:
    configs = [get_model_config("churn"), get_model_config("credit_risk")]
    configs.append(load_model_config(FIXTURES / "claims" / "configs" / "claims.yaml"))
    tables = [(f"{c.name}.{name}", table) for c in configs for name, table in c.data.tables.items()]
    return tables + [("every_kind", EVERY_KIND)]


def _problems(expectation: Any) -> list[str]:
    """The row-rule reasons (after "<column>: ") that a GX column expectation judges."""
    kind, kwargs = expectation.configuration.type, expectation.configuration.kwargs
    if kind == "expect_column_values_to_not_be_null":
        return ["missing required value"]
    if kind == "expect_column_values_to_be_in_set":
        return ["not in the allowed set"]
    if kind == "expect_column_values_to_match_regex":
        return [f"does not match {kwargs['regex']}"]
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return ([f"below minimum {low:g}"] if low is not None else []) + (
            [f"above maximum {high:g}"] if high is not None else []
        )
    return []


@pytest.mark.parametrize(("name", "table"), _tables(), ids=[n for n, _ in _tables()])
def test_no_expectation_duplicates_a_row_rule(name: str, table: TableSpec) -> None:
    """A GX expectation never re-checks what the row rules quarantine: it could not fail."""
    present = list(table.columns)
    row_rules = compile_row_rules(table, present)
    quarantining = {rule.label for rule, _ in row_rules.error_rules}
    kept = {rule.label for rule, _ in row_rules.rules if rule.kind == "warn"}
    judged: set[str] = set()
    for expectation in build_expectations(table, set(present)):
        column = expectation.configuration.kwargs.get("column")
        if column not in table.columns:
            continue  # a table-level check or a label / foreign-key indicator
        labels = {f"{column}: {problem}" for problem in _problems(expectation)}
        assert not labels & quarantining, f"{name}: {expectation.configuration.type} on {column}"
        judged |= labels
    assert judged == kept, f"{name}: every rule that keeps its rows is judged by GX, nothing else"


@pytest.mark.parametrize(("name", "table"), _tables(), ids=[n for n, _ in _tables()])
def test_every_row_rule_is_listed_with_its_layer(name: str, table: TableSpec) -> None:
    layers = {(r.column, r.rule): r.layer for r in table_rule_layers(name, table)}
    for rule, column in compile_row_rules(table, list(table.columns)).rules:
        if rule.kind == "blank_to_null":
            continue
        problem = rule.label.removeprefix(f"{column}: ")
        expected = "row_rules" if rule.kind == "error" else "great_expectations"
        assert layers[(column, problem)] == expected, rule.label


def test_rest_and_batch_name_a_breach_the_same_way() -> None:
    """REST warnings use the batch row rules' reasons, for every value rule of the acceptance spec."""
    relaxed = acceptance_spec(EVERY_KIND)
    batch = {
        rule.label
        for rule, _ in compile_row_rules(relaxed, list(relaxed.columns)).rules
        if rule.kind == "warn"
    }
    rest = {
        f"{column}: {problem}"
        for column, spec in relaxed.columns.items()
        for _, problem, _ in value_tests(spec)
    }
    assert rest == batch
    tests = {problem: breaks for _, problem, breaks in value_tests(relaxed.columns["x"])}
    assert tests["below minimum -1.5"](-2.0) and not tests["below minimum -1.5"](0.0)
    assert tests["above maximum 2.5"](3.0) and not tests["above maximum 2.5"](2.5)
    [(_, _, not_allowed)] = value_tests(relaxed.columns["kw"])
    assert not_allowed(3) and not not_allowed(2)
