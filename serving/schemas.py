"""Request and response schemas generated from the model configs.

Each record type is a pydantic model built from a table's column contract: typed fields, enums
for categories, ranges, patterns, required versus optional. The label is never asked for.
A credit_risk request holds the application and, optionally, the applicant's history records.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from tabular_mlops.config import ColumnSpec, ModelConfig, TableSpec

_TYPES: dict[str, Any] = {"int": int, "float": float, "string": str}


def _field(spec: ColumnSpec) -> tuple[Any, Any]:
    """(annotation, default) of one column."""
    if spec.type == "category":
        annotation: Any = Literal[tuple(str(v) for v in spec.values or [])]
    elif spec.values is not None:
        annotation = Literal[tuple(int(v) if spec.type == "int" else v for v in spec.values)]
    else:
        annotation = _TYPES[spec.type]
    constraints: dict[str, Any] = {}
    if spec.min is not None:
        constraints["ge"] = spec.min
    if spec.max is not None:
        constraints["le"] = spec.max
    if spec.pattern is not None:
        constraints["pattern"] = spec.pattern
    if spec.nullable:
        return annotation | None, Field(default=None, **constraints)
    return annotation, Field(..., **constraints)


def record_model(name: str, table: TableSpec, drop: set[str] = frozenset()) -> type[BaseModel]:  # type: ignore[assignment]
    """A pydantic model of one record of a table (unknown fields are ignored)."""
    fields = {column: _field(spec) for column, spec in table.columns.items() if column not in drop}
    return create_model(name, __config__=ConfigDict(extra="ignore"), **fields)  # type: ignore[call-overload]


def history_tables(config: ModelConfig) -> list[str]:
    """The tables a credit-style request may carry besides the entity record."""
    if config.features.model_input == "raw":
        return []
    skip = {config.scoring_entity_table, config.data.label_table}
    return [t for t in config.data.tables if t not in skip]


def request_model(config: ModelConfig) -> type[BaseModel]:
    """The body of one scoring request of a model: a raw record, or an application with history."""
    entity = config.data.tables[config.scoring_entity_table]
    label = entity.label.column if entity.label is not None else None
    camel = "".join(part.title() for part in config.name.split("_"))
    record = record_model(f"{camel}Record", entity, {label} if label else set())
    history = history_tables(config)
    if not history:
        return record
    fields: dict[str, Any] = {"application": (record, Field(..., description="the application to score"))}
    for table in history:
        spec = config.data.tables[table]
        item = record_model(f"{camel}{''.join(p.title() for p in table.split('_'))}Record", spec)
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


class Prediction(BaseModel):
    """The score of one record."""

    probability: float
    prediction: int
    threshold: float


class PredictResponse(BaseModel):
    """The scores of a request, in the order of its records."""

    model_name: str
    model_version: str
    request_id: str
    predictions: list[Prediction]
