"""Row-level rules: turn a chunk of raw CSV text into typed columns and name what is wrong per row.

A row breaking an `error` rule (a value that does not parse as its type, a missing required field,
a value outside its categorical set, range or pattern) is set aside with every reason found; a
`warn` rule keeps the row and only counts it. Whitespace-only values in nullable columns become
nulls and are counted, because that is how real files say "no value yet" (Telco's TotalCharges).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tabular_mlops.config import ColumnSpec, TableSpec


@dataclass
class ChunkOutcome:
    """What the rules made of one chunk: the typed rows that passed and the reasons of the rest."""

    typed: pd.DataFrame
    rejected_reasons: pd.Series  # index: position in the chunk; value: "; "-joined reasons
    blank_to_null: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    reason_counts: Counter[str] = field(default_factory=Counter)


def _add_reason(reasons: np.ndarray, mask: np.ndarray, text: str) -> None:
    """Append `text` to the reason list of every row where mask holds."""
    for i in np.flatnonzero(mask):
        reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"


def _parse_numbers(raw: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """Numbers of a column and the mask of values that are present but not numbers of its type."""
    numbers = pd.to_numeric(raw, errors="coerce")
    present = raw.notna().to_numpy()
    bad = present & ~np.isfinite(numbers.to_numpy(dtype=float, na_value=np.nan))
    if spec.type == "int":
        finite = numbers.to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            fractional = present & ~bad & (np.floor(finite) != finite)
        bad = bad | fractional
        numbers = numbers.where(~bad).astype("Float64").round().astype("Int64")
    else:
        numbers = numbers.where(~bad).astype("float64")
    return numbers, bad


def _check_column(
    name: str, raw: pd.Series, spec: ColumnSpec, reasons: np.ndarray, outcome: ChunkOutcome
) -> pd.Series:
    """Type one column, record its rule violations, and return the typed values."""
    text = raw.astype("string")
    stripped = text.str.strip()
    blank = (stripped == "").fillna(True).to_numpy()
    whitespace_only = blank & (text.str.len() > 0).fillna(False).to_numpy()
    values = stripped.mask(blank)

    if not spec.nullable and blank.any():
        _add_reason(reasons, blank, f"{name}: missing required value")
        outcome.reason_counts[f"{name}: missing required value"] += int(blank.sum())
    elif whitespace_only.any():
        outcome.blank_to_null[name] += int(whitespace_only.sum())

    rule_failed = np.zeros(len(raw), dtype=bool)
    if spec.is_numeric:
        typed, bad = _parse_numbers(values, spec)
        if bad.any():
            kind = "an integer" if spec.type == "int" else "a number"
            _add_reason_each(reasons, bad, values, f"{name}: not {kind}")
            outcome.reason_counts[f"{name}: not {kind}"] += int(bad.sum())
        numbers = typed.astype("float64").to_numpy(na_value=np.nan)
        with np.errstate(invalid="ignore"):
            if spec.min is not None:
                below = numbers < spec.min
                _rule(name, below, values, f"below minimum {spec.min:g}", spec, reasons, outcome)
                rule_failed |= below
            if spec.max is not None:
                above = numbers > spec.max
                _rule(name, above, values, f"above maximum {spec.max:g}", spec, reasons, outcome)
                rule_failed |= above
        compare = typed.astype("string")
    else:
        typed = values
        compare = values
    if spec.values is not None:
        allowed = {str(v) for v in spec.values}
        outside = (~compare.isin(allowed)).fillna(False).to_numpy() & ~blank
        if spec.is_numeric:
            outside &= ~bad
        _rule(name, outside, values, "not in the allowed set", spec, reasons, outcome)
    if spec.pattern is not None:
        unmatched = (~values.str.fullmatch(spec.pattern)).fillna(False).to_numpy()
        _rule(name, unmatched, values, f"does not match {spec.pattern}", spec, reasons, outcome)
    return typed


def _add_reason_each(reasons: np.ndarray, mask: np.ndarray, values: pd.Series, text: str) -> None:
    """Like _add_reason, quoting each row's offending value so the reader sees it."""
    for i in np.flatnonzero(mask):
        item = f"{text} ({values.iloc[i]!r})"
        reasons[i] = item if reasons[i] is None else f"{reasons[i]}; {item}"


def _rule(
    name: str,
    mask: np.ndarray,
    values: pd.Series,
    text: str,
    spec: ColumnSpec,
    reasons: np.ndarray,
    outcome: ChunkOutcome,
) -> None:
    if not mask.any():
        return
    label = f"{name}: {text}"
    if spec.severity == "warn":
        outcome.warnings[label] += int(mask.sum())
        return
    _add_reason_each(reasons, mask, values, label)
    outcome.reason_counts[label] += int(mask.sum())


def apply_row_rules(chunk: pd.DataFrame, table: TableSpec) -> ChunkOutcome:
    """Type every declared column present in the chunk and split rows into kept and rejected."""
    reasons = np.full(len(chunk), None, dtype=object)
    outcome = ChunkOutcome(typed=pd.DataFrame(index=chunk.index), rejected_reasons=pd.Series(dtype=object))
    typed_columns: dict[str, pd.Series] = {}
    for name, spec in table.columns.items():
        if name in chunk.columns:
            typed_columns[name] = _check_column(name, chunk[name], spec, reasons, outcome)
    typed = pd.DataFrame(typed_columns, index=chunk.index)
    rejected = np.array([r is not None for r in reasons], dtype=bool)
    outcome.typed = typed.loc[~rejected]
    outcome.rejected_reasons = pd.Series(reasons[rejected], index=chunk.index[rejected], dtype=object)
    return outcome
