"""Time a monitoring run on the full-size credit_risk feature table: `make bench-monitoring RAW=<csvs>`.

Trains a credit_risk version on small generated data into a throw-away registry, scores a
partition of 307,511 applicants with all history tables (so `inputs.parquet` holds the full
feature rows, 516 columns), then times `mlops monitor`'s code path in its own process against a
reference of the same size: the window's Evidently report (PSI of every feature on every row,
prediction drift, the CBPE performance estimate, the verdict), its HTML and snapshot, the
snapshot filed in the Evidently workspace, and the MLflow logging. Prints one JSON line and
writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_home_credit import run_phase
from bench_scoring import (
    _score,
    _train_and_promote,
    forget_online_keys,
    scratch_environment,
    stage_credit_partition,
)
from tabular_mlops.config import get_model_config
from tabular_mlops.generators.home_credit import generate_home_credit


def _setup(work: str) -> dict[str, Any]:
    root = Path(work)
    generate_home_credit(root / "train", rows=3000, seed=1)
    return {"version": _train_and_promote("credit_risk", str(root / "train"))}


def _monitor(current: str, reference: str) -> dict[str, Any]:
    from tabular_mlops.monitoring import monitor

    summary = monitor(get_model_config("credit_risk"), current, reference=reference, send=False)
    report = Path(summary["report"])
    return {
        "rows": summary["rows"],
        "reference_rows": summary["reference_rows"],
        "features_checked": summary["features"],
        "drifted_features": len(summary["drifted_features"]),
        "estimated_roc_auc": summary["performance"]["estimated_roc_auc"],
        "report_mb": round(report.stat().st_size / 1e6, 1),
        "snapshot_mb": round(Path(summary["snapshot"]).stat().st_size / 1e6, 1),
    }


def main() -> None:
    """Train, score the full partition, time the monitoring run; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511, help="applicants (when generating)")
    parser.add_argument("--raw", default=None, help="reuse generated Home Credit CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (registry, partition)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    scratch_environment(work)
    try:
        run_phase(_setup, str(work))
        raw = Path(args.raw) if args.raw else work / "raw"
        if not args.raw:
            generate_home_credit(raw, rows=args.rows, seed=0)
        # Inside the lake: scoring reads and writes only under its allowed roots.
        lake = work / "data" / "lake"
        incoming = lake / "incoming" / "credit_risk" / "dt=2026-11-20"
        stage_credit_partition(raw, incoming)
        partition = lake / "predictions" / "credit_risk" / "dt=2026-11-20"
        run_phase(_score, "credit_risk", str(incoming), str(partition))
        # The reference: feature rows of the same size (the partition's own model inputs).
        started = time.perf_counter()
        result = run_phase(_monitor, str(partition), str(partition / "inputs.parquet"))
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        result["cpus"] = os.cpu_count()
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        forget_online_keys()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
