"""Request and response schemas generated from the model configs, and the record checks.

A record type is a pydantic model of a table's column contract as batch scoring applies it
(`tabular_mlops.contract.acceptance_spec`): a missing required value or a value that is not its type
rejects the request (422 naming record and field), as it sends a batch row to rejects.csv. The
value rules (allowed set, range, pattern) are checked afterwards by `RecordChecker` from the same
relaxed spec: a breach is a warning in the response, as batch counts it, and the record is scored.
The label is never asked for. A credit_risk request holds the application and, optionally, the
applicant's history records.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from tabular_mlops.config import ColumnSpec, ModelConfig, TableSpec
from tabular_mlops.contract import ValueTest, acceptance_spec, value_tests
from tabular_mlops.scoring import tables_to_read

_TYPES: dict[str, Any] = {"int": int, "float": float, "string": str, "category": str}


def _field(spec: ColumnSpec) -> tuple[Any, Any]:
    """(annotation, default) of one column: its type and whether it is required, nothing more."""
    annotation = _TYPES[spec.type]
    if spec.nullable:
        return annotation | None, Field(default=None)
    return annotation, Field(...)


def record_model(name: str, table: TableSpec) -> type[BaseModel]:
    """A pydantic model of one record of a table as scoring reads it (unknown fields are ignored).

    Text is stripped of surrounding whitespace, as batch scoring trims every CSV value."""
    fields = {column: _field(spec) for column, spec in acceptance_spec(table).columns.items()}
    config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    return create_model(name, __config__=config, **fields)  # type: ignore[call-overload]


def history_tables(config: ModelConfig) -> list[str]:
    """The tables a credit-style request may carry besides the entity record: those batch scoring
    reads after the entity table (none for a raw-record model)."""
    return tables_to_read(config)[1:]


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


MAX_EXPLAIN = 20


def explain_field() -> tuple[Any, Any]:
    """The optional `explain` of a record: how many reasons (top TreeSHAP contributions) to return."""
    return (
        int | None,
        Field(
            default=None,
            ge=0,
            le=MAX_EXPLAIN,
            description="return this record's top-k reasons; overrides the `explain` query parameter",
        ),
    )


def request_model(config: ModelConfig) -> type[BaseModel]:
    """The body of one scoring request of a model: a raw record, or an application with history."""
    camel = _camel(config.name)
    record = record_model(f"{camel}Record", config.data.tables[config.scoring_entity_table])
    history = history_tables(config)
    if not history:
        return create_model(f"{camel}Request", __base__=record, explain=explain_field())
    described = "the applicant's history comes from the online store when no history table is sent"
    fields: dict[str, Any] = {
        "application": (record, Field(..., description=f"the application to score; {described}")),
        "explain": explain_field(),
    }
    for table in history:
        item = record_model(f"{camel}{_camel(table)}Record", config.data.tables[table])
        cap = config.serving.history_cap(table)
        fields[table] = (
            list[item],  # type: ignore[valid-type]
            Field(
                default_factory=list,
                max_length=cap,  # over the cap: 422 naming the table and the limit
                description=f"{table} records of the applicant (at most {cap}, serving.max_history_rows)",
            ),
        )
    return create_model(f"{camel}Request", __config__=ConfigDict(extra="forbid"), **fields)


def request_records(
    config: ModelConfig, parsed: list[BaseModel], explain: int | None
) -> list[dict[str, Any]]:
    """The records the scorer takes: history tables only where the body sent them, and each
    record's number of reasons (its own `explain`, else the query's)."""
    tables = history_tables(config)
    out = []
    for record in parsed:
        dumped = record.model_dump()
        for table in tables:
            if table not in record.model_fields_set:
                del dumped[table]  # sent no history at all: the online store's history is asked for
        if dumped.get("explain") is None:
            dumped["explain"] = explain or 0
        out.append(dumped)
    return out


class RecordChecker:
    """The value rules of a model's request records: what batch scoring counts as warnings.

    Built from the same relaxed spec as batch scoring (`acceptance_spec`), where every value rule
    is a warning: a breaking record is scored, and its warnings name the field and the problem.
    """

    def __init__(self, config: ModelConfig) -> None:
        def table_rules(table: str) -> list[tuple[str, list[ValueTest]]]:
            columns = acceptance_spec(config.data.tables[table]).columns.items()
            return [(name, rules) for name, spec in columns if (rules := value_tests(spec))]

        self.entity = table_rules(config.scoring_entity_table)
        self.history = {table: table_rules(table) for table in history_tables(config)}

    def warnings(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every value-rule breach of the (validated) records: record index, field, kind, problem."""
        found: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            if not self.history:
                _check(found, i, "", record, self.entity)
                continue
            _check(found, i, "application.", record["application"], self.entity)
            for table, rules in self.history.items():
                for j, row in enumerate(record.get(table) or []):
                    _check(found, i, f"{table}.{j}.", row, rules)
        return found


def _check(
    found: list[dict[str, Any]], index: int, prefix: str, row: dict[str, Any], rules: list[Any]
) -> None:
    """Append the breaches of one row (nulls break no value rule, as in batch)."""
    for column, column_rules in rules:
        value = row.get(column)
        if value is None:
            continue
        for kind, problem, breaks in column_rules:
            if breaks(value):
                where = {"record": index, "field": prefix + column}
                found.append({**where, "kind": kind, "problem": problem, "value": value})


class Reason(BaseModel):
    """One of a prediction's top reasons: a source field's exact TreeSHAP contribution."""

    field: str = Field(description="the feature, as the feature SQL names it")
    description: str = Field(description="the feature in plain words")
    value: Any = Field(description="the feature's value for this record (null: missing)")
    contribution: float = Field(description="its contribution to the log-odds of the positive class")
    direction: str = Field(description="'raises risk' or 'lowers risk'")


class Prediction(BaseModel):
    """The score of one record."""

    probability: float
    prediction: int
    threshold: float
    history_source: str | None = Field(
        default=None,
        description="credit-style models: 'request' (history sent), 'online_store' (history from the "
        "store) or 'none' (unknown to the store and no history sent: scored as an applicant without "
        "history, as batch scoring does)",
    )
    features_as_of: str | None = Field(
        default=None, description="with history_source 'online_store': when the store's features were true"
    )
    reasons: list[Reason] | None = Field(default=None, description="the top-k reasons, when asked for")


class RecordWarning(BaseModel):
    """A value a record was scored with although it breaks a value rule (batch counts it too)."""

    record: int = Field(description="index of the record in the request")
    field: str = Field(description="the field, e.g. 'Contract' or 'bureau.2.CREDIT_ACTIVE'")
    kind: str = Field(description="not_allowed, below_minimum, above_maximum or pattern")
    problem: str = Field(description="the rule broken, worded as in batch scoring's warnings")
    value: Any


class PredictResponse(BaseModel):
    """The scores of a request, in the order of its records, and the warnings of its records."""

    model_name: str
    model_version: str
    request_id: str
    predictions: list[Prediction]
    warnings: list[RecordWarning] = Field(default_factory=list)
