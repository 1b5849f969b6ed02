"""Corrupt a few rows of a generated CSV the way copies found in the wild are corrupted.

Real files are dirty in a few rows: a row with one field too many, a garbled categorical value, a
number that does not parse, a blank key. The ingest stage must set exactly these rows aside, so
the injector reports which source line got which defect.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFECTS = ("extra_field", "garbled_category", "unparseable_number", "missing_key")


@dataclass(frozen=True)
class InjectedDefect:
    """One corrupted row: its 1-based line in the file (header is line 1) and what was done to it."""

    line: int
    defect: str
    column: str


def _garble(value: str) -> str:
    """A typo a human would make when re-keying the value, never a member of the real set."""
    return (value[::-1].lower() + "~") if value else "??"


def inject_dirty_rows(
    path: Path, count: int, seed: int, key: str, category: str, number: str
) -> list[InjectedDefect]:
    """Rewrite `path` with `count` data rows corrupted (defects cycle in DEFECTS order)."""
    path = Path(path)
    if count <= 0:
        return []
    with path.open(newline="") as handle:
        data_lines = sum(1 for _ in handle) - 1
    if count > data_lines:
        raise ValueError(f"{path}: cannot corrupt {count} rows, the file has {data_lines}")
    rng = np.random.default_rng([seed, count, 1729])
    chosen = sorted(int(i) + 2 for i in rng.choice(data_lines, size=count, replace=False))
    plan = {line: DEFECTS[i % len(DEFECTS)] for i, line in enumerate(chosen)}

    injected: list[InjectedDefect] = []
    tmp = path.with_name(path.name + ".tmp")
    with path.open(newline="") as src, tmp.open("w", newline="") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        index = {name: i for i, name in enumerate(header)}
        for row in reader:
            defect = plan.get(reader.line_num)
            if defect == "extra_field":
                row.append("EXTRA")
                column = "(row)"
            elif defect == "garbled_category":
                row[index[category]] = _garble(row[index[category]])
                column = category
            elif defect == "unparseable_number":
                row[index[number]] = "1O5.2x"
                column = number
            elif defect == "missing_key":
                row[index[key]] = ""
                column = key
            if defect is not None:
                injected.append(InjectedDefect(reader.line_num, defect, column))
            writer.writerow(row)
    os.replace(tmp, path)
    return injected


def to_crlf(path: Path) -> None:
    """Rewrite a CSV with Windows line endings, as some copies of the Telco file have."""
    text = Path(path).read_text()
    buffer = io.StringIO(newline="")
    buffer.write(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    Path(path).write_text(buffer.getvalue(), newline="")
