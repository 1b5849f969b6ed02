"""Time the credit_risk feature build at a given scale: `make bench-features ROWS=307511`.

Generates Home Credit CSVs (or reuses --raw), turns them into typed parquet tables with DuckDB
(the interim store's layout; the ingest stage itself is timed separately), then times
`build_feature_table` and reports its peak memory. Prints one JSON line and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import duckdb
from tabular_mlops.config import get_model_config
from tabular_mlops.features import build_feature_table
from tabular_mlops.generators.home_credit import generate_home_credit


def to_parquet(raw: Path, interim: Path) -> float:
    """Typed parquet per config table from the raw CSVs; return the seconds it took."""
    config = get_model_config("credit_risk")
    interim.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with duckdb.connect() as con:
        for name, spec in config.data.tables.items():
            relation = con.read_csv(str(raw / spec.file), header=True)
            relation.write_parquet(str(interim / f"{name}.parquet"))
    return time.perf_counter() - started


def main() -> None:
    """Generate (or reuse), convert, time the feature build, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511)
    parser.add_argument("--raw", default=None, help="reuse generated CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    raw = Path(args.raw) if args.raw else work / "raw"
    generated = 0.0
    if not args.raw:
        started = time.perf_counter()
        generate_home_credit(raw, rows=args.rows, seed=0)
        generated = time.perf_counter() - started
    converted = to_parquet(raw, work / "interim")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    built = build_feature_table(get_model_config("credit_risk"), work / "interim", work / "features")
    figures = {
        "rows": args.rows,
        "generate_seconds": round(generated, 1),
        "csv_to_parquet_seconds": round(converted, 1),
        "feature_build_seconds": round(built.seconds, 1),
        "feature_rows": built.rows,
        "feature_columns": len(built.columns),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_before_build_mb": round(rss_before / 1024),
    }
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
