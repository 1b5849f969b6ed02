"""Time validated ingest and the feature build on Home Credit: `make bench-home-credit ROWS=307511`.

Generates the eight Home Credit CSVs (or reuses --raw), then runs two phases, each in its own
process so its peak memory is its own: the data_ingest stage (row rules in DuckDB, Great
Expectations suites in batches, typed parquet published to the interim store) and the feature
build from those interim tables. The ingest's progress lines go to stderr with the seconds
since its start. Prints one JSON line and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabular_mlops.config import get_model_config
from tabular_mlops.features import build_feature_table
from tabular_mlops.generators.home_credit import generate_home_credit
from tabular_mlops.ingest import ingest_raw_tables


def _ingest(raw: str) -> dict[str, Any]:
    started = time.perf_counter()

    def progress(message: str) -> None:
        # Each stage's progress line with the seconds since the start: where the time goes.
        print(f"{time.perf_counter() - started:7.1f} s  {message}", file=sys.stderr, flush=True)

    report = ingest_raw_tables(get_model_config("credit_risk"), source=raw, run_id="bench", progress=progress)
    return {
        "status": report.status,
        "interim_dir": report.interim_dir,
        "rows_read": sum(t.rows_read for t in report.tables.values()),
        "rows_quarantined": sum(t.rows_quarantined for t in report.tables.values()),
        "expectations": len(report.expectations),
    }


def _features(interim: str, out: str) -> dict[str, Any]:
    built = build_feature_table(get_model_config("credit_risk"), Path(interim), Path(out))
    return {"feature_rows": built.rows, "feature_columns": len(built.columns)}


def _child(target: Callable[..., dict[str, Any]], args: tuple[Any, ...], queue: Any) -> None:
    started = time.perf_counter()
    result = target(*args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put(result)


def run_phase(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one phase in a fresh process; return its result with seconds and peak RSS."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__} phase exited with {process.exitcode}")
    return result


def report(figures: dict[str, Any], json_path: str | None, work: Path, keep: bool) -> None:
    """Print the figures as one JSON line, save them to `json_path`, remove the work folder unless kept."""
    print(json.dumps(figures))
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
    if keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work)


def main() -> None:
    """Generate (or reuse), ingest with validation, build features; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511, help="training applicants to generate")
    parser.add_argument("--raw", default=None, help="reuse generated CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (generated data, tables)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-home-credit-"))
    # The ingest stage writes its interim, quarantine and report folders under the data/reports roots.
    os.environ["MLOPS_DATA_DIR"] = str(work / "data")
    os.environ["MLOPS_REPORTS_DIR"] = str(work / "reports")
    raw = Path(args.raw) if args.raw else work / "raw"
    generated = None
    if not args.raw:
        started = time.perf_counter()
        generate_home_credit(raw, rows=args.rows, seed=0)
        generated = round(time.perf_counter() - started, 1)
    csv_bytes = sum(p.stat().st_size for p in raw.glob("*.csv"))
    ingest = run_phase(_ingest, str(raw))
    interim = ingest.pop("interim_dir")
    if interim is None:
        raise RuntimeError(f"ingest did not publish (status {ingest['status']}); see {work / 'reports'}")
    features = run_phase(_features, interim, str(work / "features"))
    figures = {
        "rows": args.rows,
        "csv_gb": round(csv_bytes / 1e9, 2),
        "generate_seconds": generated,
        "ingest": ingest,
        "feature_build": features,
        "cpus": os.cpu_count(),
    }
    report(figures, args.json, work, args.keep)


if __name__ == "__main__":
    main()
