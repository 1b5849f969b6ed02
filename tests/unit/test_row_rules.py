"""Row rules compiled to SQL and run by a real DuckDB over raw text columns."""

from __future__ import annotations

import duckdb
import pytest
from tabular_mlops.config import TableSpec
from tabular_mlops.row_rules import compile_row_rules

TABLE = TableSpec.model_validate(
    {
        "file": "t.csv",
        "columns": {
            "id": {"type": "int", "nullable": False},
            "amount": {"type": "float", "min": 0, "max": 100},
            "kind": {"type": "category", "values": ["a", "it's"]},
            "code": {"type": "string", "pattern": "[A-Z]{2}", "severity": "warn"},
        },
    }
)


def _check(rows: list[tuple[str | None, ...]]) -> tuple[list[tuple], list[str]]:
    """(typed kept rows, reasons of set-aside rows) of raw rows, through the compiled SQL."""
    rules = compile_row_rules(TABLE, list(TABLE.columns))
    with duckdb.connect() as con:
        con.execute("CREATE TABLE raw (id VARCHAR, amount VARCHAR, kind VARCHAR, code VARCHAR)")
        con.executemany("INSERT INTO raw VALUES (?, ?, ?, ?)", rows)
        con.execute(f"CREATE TABLE checked AS {rules.checked_sql('raw')}")
        kept = con.execute(
            f"SELECT {rules.typed_select()} FROM checked WHERE NOT __rejected ORDER BY rowid"
        ).fetchall()
        flags = [rule.flag for rule, _ in rules.error_rules]
        rejected = con.execute(
            f"SELECT {', '.join(flags)}, id, amount, kind, code FROM checked WHERE __rejected ORDER BY rowid"
        ).fetchall()
        names = ["id", "amount", "kind", "code"]
        reasons = [
            rules.reasons(row[: len(flags)], dict(zip(names, row[len(flags) :], strict=True)))
            for row in rejected
        ]
        return kept, reasons


def test_clean_values_are_typed_and_whitespace_only_becomes_null() -> None:
    kept, reasons = _check([(" 7 ", "12.50", "it's", "AB"), ("8", " \t", None, "")])
    assert reasons == []
    assert kept == [(7, 12.5, "it's", "AB"), (8, None, None, None)]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("12.5", "1", "a", "AB"), "id: not an integer ('12.5')"),
        (("1_000", "1", "a", "AB"), "id: not an integer ('1_000')"),
        (("  ", "1", "a", "AB"), "id: missing required value"),
        (("1", "inf", "a", "AB"), "amount: not a number ('inf')"),
        (("1", "NaN", "a", "AB"), "amount: not a number ('NaN')"),
        (("1", "-0.5", "a", "AB"), "amount: below minimum 0 ('-0.5')"),
        (("1", "1e3", "a", "AB"), "amount: above maximum 100 ('1e3')"),
        (("1", "1", "A", "AB"), "kind: not in the allowed set ('A')"),
    ],
)
def test_each_broken_rule_is_named_with_its_value(row: tuple[str, ...], reason: str) -> None:
    kept, reasons = _check([row])
    assert kept == [] and reasons == [reason]


def test_every_reason_of_a_row_is_listed_and_warnings_keep_the_row() -> None:
    kept, reasons = _check([("x", "200", 'say "hi"', "lower"), ("3", "5", "a", "lower")])
    assert reasons == [
        "id: not an integer ('x'); amount: above maximum 100 ('200'); "
        "kind: not in the allowed set ('say \"hi\"')"
    ]
    assert kept == [(3, 5.0, "a", "lower")]


def test_config_columns_may_not_shadow_the_staged_columns() -> None:
    table = TableSpec.model_validate({"file": "t.csv", "columns": {"__s0": {"type": "string"}}})
    with pytest.raises(ValueError, match="may not start with '__'"):
        compile_row_rules(table, ["__s0"])
